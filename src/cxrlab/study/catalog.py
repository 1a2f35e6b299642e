"""The studies shipped with cxrlab, found by name from any folder.

``cxrlab study offline`` and ``cxrlab study studies/offline.yaml`` both mean the shipped
``offline.yaml`` when no such file is in the current folder: the repository's ``studies/``
is the package's, and outside the repository the package's copy is used. A file that
exists always wins over a shipped name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import write_text

DEFAULT_STUDY = "offline"
SUFFIXES = (".yaml", ".yml")


def shipped_dir() -> Path:
    return Path(str(resources.files("cxrlab") / "studies"))


def shipped_names() -> list[str]:
    """The shipped studies by name (``offline``, ``pneumonia``, ``recipe``)."""
    return sorted(p.stem for p in shipped_dir().glob("*.yaml"))


def shipped_study(name: str = DEFAULT_STUDY) -> Path:
    """A study file shipped with cxrlab, by name (``offline`` or ``offline.yaml``)."""
    stem = _stem(name)
    path = shipped_dir() / f"{stem}.yaml"
    if not path.is_file():
        raise CxrlabError(f"no shipped study {name!r}: choose one of {', '.join(shipped_names())} (cxrlab studies)")
    return path


def find_study(spec: str | Path | None) -> Path:
    """The study file ``spec`` names: a file that exists, else a shipped study by name or as
    ``studies/NAME.yaml``; None is the default study."""
    if spec is None:
        return shipped_study()
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        raise CxrlabError(f"{spec} is a folder: pass a study YAML file or a shipped study's name (cxrlab studies)")
    bare = len(path.parts) == 1 or path.parent.name == "studies"
    if bare and _stem(path.name) in shipped_names():
        return shipped_study(path.name)
    raise CxrlabError(
        f"study file {spec} does not exist: pass a study YAML file or a shipped study's name "
        f"({', '.join(shipped_names())}; cxrlab studies lists them)"
    )


def copy_study(name: str, destination: str | Path | None = None) -> Path:
    """An editable copy of a shipped study (default ``./NAME.yaml``); never overwrites a file."""
    source = shipped_study(name)
    target = Path(destination) if destination is not None else Path(source.name)
    if target.is_dir():
        target = target / source.name
    if target.exists():
        raise CxrlabError(f"{target} already exists: give another destination or remove it first")
    write_text(target, source.read_text(encoding="utf-8"))
    return target


def _stem(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
