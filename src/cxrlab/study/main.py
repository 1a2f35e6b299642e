"""``cxrlab study``: the main job. Sweep a study, then write its report.

With no study file it runs the shipped default study (``studies/offline.yaml``: pretrained
EfficientNet-Lite0, whose weights install offline, against a small CNN from scratch), and
with no ``--data`` the study's own data. Like the sweep, it resumes where it was stopped.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cxrlab.study.sweep import run_sweep

DEFAULT_STUDY = "offline.yaml"


def shipped_study(name: str = DEFAULT_STUDY) -> Path:
    """A study file shipped with cxrlab (``pneumonia.yaml``, ``offline.yaml``)."""
    return Path(str(resources.files("cxrlab") / "studies" / name))


def run_study(
    study_file: str | Path | None = None,
    *,
    data: str | None = None,
    workers: int = 1,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
) -> list[Path]:
    """Sweep ``study_file`` (default: the shipped offline study), then write the report;
    returns the report's files (report.md, report.html)."""
    from cxrlab.report.render import write_report

    study_dir = run_sweep(
        study_file if study_file is not None else shipped_study(),
        data=data,
        workers=workers,
        overrides=overrides,
        out=out,
    )
    return list(write_report(study_dir))
