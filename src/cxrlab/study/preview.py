"""What a study would run, and for how long, without running it: ``--dry-run`` and
``cxrlab studies``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrlab.study.catalog import find_study, shipped_names, shipped_study
from cxrlab.study.estimate import Estimator, ImageCounts, duration
from cxrlab.study.names import format_value
from cxrlab.study.sources import image_counts
from cxrlab.study.spec import load_plan
from cxrlab.training.config import TrainConfig

# Estimates for a study whose data is not on this machine are given per this many images.
REFERENCE_COUNTS = ImageCounts(train=1000, val=110, test=170)
# Settings shown for each run in a dry run, when they are set.
SHOWN = ["model", "mode", "lr", "epochs", "weight_decay", "batch_size", "image_size", "optimizer"]


def preview(
    study_file: str | Path | None,
    *,
    data: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    name: str | None = None,
    out: str | Path | None = None,
    external: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The runs a sweep of ``study_file`` would make (after ``--set``), each with its
    estimated time, and where the estimate comes from."""
    plan = load_plan(find_study(study_file), data=data, overrides=overrides, name=name, external=external)
    study_dir = Path(out if out is not None else "runs") / plan.name
    counts = image_counts(plan)
    estimator = Estimator.for_study(study_dir if study_dir.is_dir() else None, counts or REFERENCE_COUNTS)
    runs: list[dict[str, Any]] = []
    for run in plan.runs:
        seconds = estimator.run_seconds(run.settings)
        resolved = TrainConfig(**run.settings).resolved()  # the mode's defaults filled in: what will run
        runs.append({"run_id": run.run_id, "seconds": seconds, **{k: getattr(resolved, k) for k in SHOWN}})
    searches: list[dict[str, Any]] = []
    for search in plan.searches:
        each = estimator.run_seconds(search.fixed) or 0.0
        searches.append(
            {
                "label": search.label,
                "trials": search.trials,
                "space": sorted(search.space),
                "seconds": each * search.trials * plan.repeats,
            }
        )
    total = sum(float(r["seconds"] or 0.0) for r in runs) + sum(float(s["seconds"]) for s in searches)
    source = estimator.source + ("" if counts is not None else f" ({plan.data} is not here)")
    return {
        "study": plan.name,
        "study_dir": str(study_dir),
        "source": plan.source,
        "description": plan.description,
        "data": plan.data,
        "data_found": counts is not None,
        "external": plan.external,
        "repeats": plan.repeats,
        "overrides": plan.overrides,
        "merged": plan.merged,
        "runs": runs,
        "searches": searches,
        "seconds": total,
        "estimate_source": source,
    }


def preview_text(summary: dict[str, Any]) -> str:
    """A dry run as the command line prints it: one line per run, then the estimate."""
    lines = [
        f"study {summary['study']} ({summary['source']}) -> {summary['study_dir']}: "
        f"{len(summary['runs'])} runs" + (f" and {len(summary['searches'])} searches" if summary["searches"] else "")
    ]
    if not summary["data_found"]:
        lines.append(f"data {summary['data']} is not here: the sweep would stop until it is (or pass --data)")
    for line in summary["merged"]:
        lines.append(f"note: {line}")
    for run in summary["runs"]:
        shown = ", ".join(f"{k}={format_value(run[k])}" for k in SHOWN[2:] if run.get(k) is not None)
        lines.append(f"  {run['run_id']}  ({shown}; about {duration(run['seconds'])})")
    for search in summary["searches"]:
        lines.append(
            f"  search {search['label']}: {search['trials']} trials over {', '.join(search['space'])} "
            f"(about {duration(search['seconds'])})"
        )
    lines.append(f"about {duration(summary['seconds'])} in all, one worker; estimate from {summary['estimate_source']}")
    return "\n".join(lines)


def shipped_summaries() -> list[dict[str, Any]]:
    """Every shipped study: name, description, runs and estimated time (``cxrlab studies``)."""
    found = []
    for name in shipped_names():
        summary = preview(shipped_study(name))
        found.append(
            {
                "name": name,
                "description": summary["description"],
                "runs": len(summary["runs"]) + sum(s["trials"] for s in summary["searches"]) * summary["repeats"],
                "seconds": summary["seconds"],
                "estimate_source": summary["estimate_source"],
                "data": summary["data"],
                "path": str(shipped_study(name)),
            }
        )
    return found
