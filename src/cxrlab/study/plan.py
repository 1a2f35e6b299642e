"""A study resolved: every run it makes, as plain values, and what makes two plans the same.

``spec.load_plan`` builds a ``StudyPlan`` from a study file; the sweep runs it. The study
directory records the plan the first time it is swept (``study.yaml``, and the Optuna
study's user attributes, so that workers on other machines see it too); a worker whose
plan differs is refused with the keys that differ (``differences``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cxrlab.core.errors import CxrlabError, setting_error
from cxrlab.training.config import EXECUTION_SETTINGS, TrainConfig

# Not part of what a run learns from, or recorded at the top of the plan instead.
_NOT_COMPARED = EXECUTION_SETTINGS | {"data", "seed", "external"}


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: a setting at one seed."""

    run_id: str  # the run directory's name
    setting_id: str  # the run id without the seed: runs that differ only in seed share it
    seed: int
    settings: dict[str, Any]  # TrainConfig fields, data and seed included (not out and name)
    origin: str  # where in the file it comes from, e.g. "runs[2]" or "grids[0]"


@dataclass(frozen=True)
class Dimension:
    """One dimension of a search space, in plain values (the sweep makes Optuna distributions)."""

    kind: str  # "float", "int" or "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()


@dataclass(frozen=True)
class SearchPlan:
    """A TPE search: each trial runs ``fixed`` plus the sampled values, once per seed."""

    label: str  # names its Optuna study and prefixes its run ids
    trials: int
    fixed: dict[str, Any]  # TrainConfig fields, data included (not seed, out, name)
    space: dict[str, Dimension]
    origin: str

    def settings(self, params: dict[str, Any], seed: int) -> dict[str, Any]:
        """The TrainConfig fields of one trial at one seed (validated)."""
        try:
            return TrainConfig(**{**self.fixed, **params, "seed": seed}).model_dump(exclude={"out", "name"})
        except ValidationError as exc:
            raise CxrlabError(setting_error(exc, f"search {self.label}: ")) from exc


@dataclass(frozen=True)
class StudyPlan:
    """A study file resolved: every run it makes, validated."""

    name: str
    source: str  # the study file
    description: str | None
    data: str
    repeats: int
    overrides: dict[str, Any]
    external: dict[str, str] = field(default_factory=dict)
    runs: list[PlannedRun] = field(default_factory=list)
    searches: list[SearchPlan] = field(default_factory=list)
    # Settings of the file that became one under --set: one line each, said to the user.
    merged: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return list(range(self.repeats))

    def record(self) -> dict:
        """The resolved study as plain data, for ``study.yaml``."""
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "data": self.data,
            "external": self.external,
            "repeats": self.repeats,
            "overrides": self.overrides,
            "merged": self.merged,
            "runs": [
                {
                    "run_id": r.run_id,
                    "setting_id": r.setting_id,
                    "seed": r.seed,
                    "origin": r.origin,
                    "settings": {k: v for k, v in r.settings.items() if k not in ("data", "seed", "external")},
                }
                for r in self.runs
            ],
            "search": [
                {
                    "label": s.label,
                    "trials": s.trials,
                    "origin": s.origin,
                    "fixed": {k: v for k, v in s.fixed.items() if k not in ("data", "external")},
                    "space": {
                        k: {f: v for f, v in d.__dict__.items() if v not in (None, (), False)}
                        for k, d in s.space.items()
                    },
                }
                for s in self.searches
            ],
        }

    def identity(self, sources: dict[str, str] | None = None) -> dict:
        """What two workers must agree on, as plain data: the data and external sets (by the
        fingerprint of what they hold, given in ``sources``, so the same images at another
        path on another machine agree), the seeds, and every run's settings except where
        and how it runs (device, cache folder and the like may differ between machines)."""
        sources = sources or {}
        return {
            "data": sources.get("data", self.data),
            "external": {name: sources.get(f"external.{name}", path) for name, path in self.external.items()},
            "repeats": self.repeats,
            "runs": {r.run_id: _compared(r.settings) for r in self.runs},
            "search": {
                s.label: {
                    "trials": s.trials,
                    "fixed": _compared(s.fixed),
                    "space": {k: repr(d) for k, d in s.space.items()},
                }
                for s in self.searches
            },
        }


def differences(recorded: dict, current: dict) -> list[str]:
    """The keys in which two plan identities differ, each as ``key (here X, recorded Y)``."""
    found = []
    for key in ("data", "external", "repeats"):
        if recorded.get(key) != current.get(key):
            found.append(f"{key} (here {_short(current.get(key))}, recorded {_short(recorded.get(key))})")
    found += _setting_differences(recorded.get("runs", {}), current.get("runs", {}), "runs")
    found += _setting_differences(recorded.get("search", {}), current.get("search", {}), "searches")
    return found


def _setting_differences(recorded: dict, current: dict, what: str) -> list[str]:
    """Setting keys whose values differ between two sets of runs (or searches) by id; runs
    that only one side has when no setting explains them."""
    found = []
    keys = sorted({k for side in (recorded, current) for entry in side.values() for k in _flat(entry)})
    for key in keys:
        here = {_short(_flat(entry).get(key)) for entry in current.values()}
        there = {_short(_flat(entry).get(key)) for entry in recorded.values()}
        if here != there:
            found.append(f"{key} (here {', '.join(sorted(here))}; recorded {', '.join(sorted(there))})")
    if not found and set(recorded) != set(current):
        only_here, only_there = sorted(set(current) - set(recorded)), sorted(set(recorded) - set(current))
        found.append(
            f"{what} ({len(only_here)} only here{', e.g. ' + only_here[0] if only_here else ''}; "
            f"{len(only_there)} only recorded{', e.g. ' + only_there[0] if only_there else ''})"
        )
    elif not found:
        for run_id in sorted(current):
            if current[run_id] != recorded.get(run_id):
                found.append(f"{what} (the settings of {run_id})")
                break
    return found


def _flat(entry: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _compared(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(settings.items()) if k not in _NOT_COMPARED}


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
