"""Study files: what a study runs, read from YAML, checked, and resolved into runs.

A study file names its data, the settings shared by every run, and the runs themselves as
an explicit table, as grids whose lists are crossed, or as search spaces for Optuna's TPE:

    name: offline                       # the study directory is runs/<name>/
    data: ../shared/data/kermany-224
    external: {official: ../shared/data/kermany-224-shifted}   # scored once, never chooses
    repeats: 1                          # seeds per setting: 0 .. repeats-1
    defaults: {image_size: 160, optimizer: adam}
    runs:
      - {model: efficientnet_lite0, mode: finetune, lr: 1.0e-3, epochs: 4, weight_decay: 1.0e-4, batch_size: 32}
    grids:
      - {model: scratch_cnn, mode: scratch, lr: [1.0e-3, 3.0e-4], epochs: 10}
    search:
      - model: efficientnet_lite0
        mode: finetune
        trials: 8
        epochs: 3
        space:
          lr: {low: 1.0e-5, high: 1.0e-2, log: true}
          batch_size: {choices: [16, 32]}

Every setting is a ``TrainConfig`` field. Every run is resolved and validated as a
``TrainConfig`` before any run starts, so a typo, a negative learning rate or an unknown
model fails at once with one line naming the key and its line in the file. Run ids come
from the values that run: ``--set epochs=1`` renames ``...-ep=4-...`` to ``...-ep=1-...``,
and two settings that ``--set`` makes equal are run once (``StudyPlan.merged`` says so).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cxrlab.core.errors import CxrlabError, setting_error
from cxrlab.models.registry import model_entry
from cxrlab.study.names import distinct_id, setting_id
from cxrlab.study.plan import PlannedRun, SearchPlan, StudyPlan
from cxrlab.study.studyfile import (
    Locator,
    SearchEntry,
    StudyFile,
    dimension,
    dotted,
    parse,
    setting_problem,
)
from cxrlab.training.config import TrainConfig
from cxrlab.training.rundir import safe_run_id

# Where a value came from: a path in the study file, or ("--set", "k=v") / ("--data",).
Origin = tuple
Sourced = dict[str, tuple[Any, Origin]]


def load_plan(
    study_file: str | Path,
    *,
    data: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    name: str | None = None,
    external: list[str] | tuple[str, ...] = (),
) -> StudyPlan:
    """Read, check and resolve a study file; ``data``, ``overrides`` (``KEY=VALUE``),
    ``name`` (the study directory's) and ``external`` (``NAME=PATH`` sets that replace or add
    to the file's; ``NAME=`` drops one) come from the command line. Raises ``CxrlabError``
    naming the key and line of any mistake."""
    study, where = parse(study_file)
    study_name = name if name is not None else (study.name if study.name is not None else Path(study_file).stem)
    if safe_run_id(study_name) != study_name:
        origin = ("--name",) if name is not None else ("name",)
        raise CxrlabError(
            where.at(origin, f"name {study_name!r} must be a plain folder name (letters, digits, . _ - =)")
        )
    chosen_data = data if data is not None else study.data
    if not chosen_data:
        raise CxrlabError(f"{study_file}: no data: set data: in the study file or pass --data")
    fixed_overrides = parse_overrides(overrides)

    base: Sourced = {"data": (chosen_data, ("data",) if data is None else ("--data",))}
    external_sets = _external_sets(study.external, external)
    if external_sets:
        base["external"] = (external_sets, ("external",) if not external else ("--external",))
    base.update(where.settings(study.defaults, ("defaults",)))
    if external and "external_validation" in base:
        # A set that --external NAME= drops is no longer there to be named a validation set.
        names, origin = base["external_validation"]
        base["external_validation"] = ([n for n in names if n in external_sets], origin)
    overridden: Sourced = {key: (value, ("--set", f"{key}={value}")) for key, value in fixed_overrides.items()}

    runs, merged = _table_runs(where, _entries(where, study), base, overridden, study.repeats)
    searches: list[SearchPlan] = []
    for index, entry in enumerate(study.search):
        searches.append(_search_plan(where, entry, index, base, overridden, [s.label for s in searches]))
    return StudyPlan(
        name=study_name,
        source=str(study_file),
        description=study.description,
        data=chosen_data,
        repeats=study.repeats,
        overrides=fixed_overrides,
        external=external_sets,
        runs=runs,
        searches=searches,
        merged=merged,
    )


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["epochs=1", "lr=1e-3"]`` as settings; values are read as YAML scalars."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CxrlabError(f"--set {item}: write KEY=VALUE, e.g. --set epochs=1")
        problem = setting_problem(key)
        if problem:
            raise CxrlabError(f"--set {item}: {problem}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise CxrlabError(f"--set {item}: the value is not a plain YAML scalar ({exc.__class__.__name__})") from exc
        if isinstance(value, (list, dict)):
            raise CxrlabError(f"--set {item}: give one value (lists belong in a grid in the study file)")
        parsed[key] = value
    return parsed


def _external_sets(written: dict[str, str], given: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The file's external sets with ``--external NAME=PATH`` applied (``NAME=`` drops one)."""
    sets = dict(written)
    for item in given:
        key, sep, path = item.partition("=")
        if not sep or not key.strip():
            raise CxrlabError(
                f"--external {item}: write NAME=PATH, e.g. --external official=data/test (NAME= drops one)"
            )
        if path.strip():
            sets[key.strip()] = path.strip()
        else:
            sets.pop(key.strip(), None)
    return sets


# --- resolving ---------------------------------------------------------------------------


def _entries(where: Locator, study: StudyFile) -> list[tuple[Origin, Sourced, list[str]]]:
    """Every table row and grid point: (entry path, its settings with where each came from,
    the keys that name the run)."""
    entries: list[tuple[Origin, Sourced, list[str]]] = []
    for index, entry in enumerate(study.runs):
        given = where.settings(entry, ("runs", index))
        entries.append((("runs", index), given, list(given)))
    for index, entry in enumerate(study.grids):
        given = where.settings(entry, ("grids", index))
        crossed = {k: v for k, v in given.items() if isinstance(v[0], list)}
        for values, origin in crossed.values():
            if not values:
                raise CxrlabError(where.at(origin, "an empty list crosses to no runs"))
        for combination in itertools.product(*[[(k, v) for v in crossed[k][0]] for k in crossed]):
            point = dict(given)
            point.update({k: (v, crossed[k][1]) for k, v in combination})
            entries.append((("grids", index), point, list(given)))
    return entries


def _table_runs(
    where: Locator, entries: list, base: Sourced, overridden: Sourced, repeats: int
) -> tuple[list[PlannedRun], list[str]]:
    """The runs of the table and grids at every seed, and a line for each setting that
    --set made equal to an earlier one (run once, under the earlier one's id)."""
    runs: list[PlannedRun] = []
    merged: list[str] = []
    as_written: dict[str, str] = {}  # the file's own settings -> the entry that set them
    effective: dict[str, tuple[str, str]] = {}  # the settings that run -> (as written, setting id)
    ids: set[str] = set()
    for path, given, id_keys in entries:
        origin = dotted(path)
        written_config = _validated(where, {**base, **given}, path)
        written = _key(written_config)
        if written in as_written:
            raise CxrlabError(where.at(path, f"repeats the setting of {as_written[written]}: remove one"))
        as_written[written] = origin
        config = _validated(where, {**base, **given, **overridden}, path) if overridden else written_config
        key = _key(config)
        named = f"{setting_id(written_config.model_dump(), id_keys)} ({origin})"
        if key in effective:
            first, first_id = effective[key]
            merged.append(f"{named} and {first} are one setting after --set: run once as {first_id}")
            continue
        values = config.model_dump(exclude={"out", "name", "seed"})
        setting = setting_id(values, id_keys)
        if setting in ids:  # values that read alike (1e-3 and 1.00001e-3) in different settings
            setting = distinct_id(setting, key)
        ids.add(setting)
        effective[key] = (named, setting)
        for seed in range(repeats):
            runs.append(PlannedRun(f"{setting}-seed={seed}", setting, seed, {**values, "seed": seed}, origin))
    # Seed-major order: a killed or half-done study has a full table at seed 0 first.
    runs.sort(key=lambda r: r.seed)
    return runs, merged


def _key(config: TrainConfig) -> str:
    return repr(sorted(config.model_dump(exclude={"out", "name", "seed"}).items()))


def _validated(where: Locator, merged: Sourced, entry: Origin) -> TrainConfig:
    """``merged`` as a TrainConfig; an error names the key and the line the bad value came from."""
    values = {key: value for key, (value, _) in merged.items()}
    if "model" not in values:
        raise CxrlabError(where.at(entry, "no model: add model: (see cxrlab models)"))
    try:
        config = TrainConfig(**values, seed=0)
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        key = str(loc[0]) if loc else None
        origin = merged[key][1] if key in merged else entry + (key,)
        raise CxrlabError(setting_error(exc, where.prefix(origin))) from exc
    try:
        model_entry(config.model)
    except CxrlabError as exc:
        raise CxrlabError(where.at(merged["model"][1], str(exc))) from exc
    return config


def _search_plan(
    where: Locator, entry: SearchEntry, index: int, base: Sourced, overridden: Sourced, labels: list[str]
) -> SearchPlan:
    path = ("search", index)
    given = where.settings(dict(entry.model_extra or {}), path)
    merged = {**base, **given, **overridden}
    config = _validated(where, merged, path)
    label = entry.name or f"{config.model.replace(':', '_')}-{config.mode}-search"
    if safe_run_id(label) != label:
        raise CxrlabError(where.at(path + ("name",), f"name {label!r} must be a plain folder name"))
    if label in labels:
        raise CxrlabError(where.at(path, f"two searches are both named {label!r}: give one a name:"))
    space = {}
    for key, entry_dimension in entry.space.items():
        origin = path + ("space", key)
        problem = setting_problem(key)
        if problem:
            raise CxrlabError(where.at(origin, problem))
        if key in given:
            raise CxrlabError(where.at(origin, f"{key} is both fixed ({dotted(given[key][1])}) and searched: keep one"))
        if key in overridden:
            continue  # --set fixes it for every run, the search included
        space[key] = dimension(key, entry_dimension, where, origin)
        # Both ends of a range and every choice must make a valid run: a negative lower
        # bound on lr fails here, not after half the trials.
        for probe in space[key].choices or (space[key].low, space[key].high):
            _validated(where, {**merged, key: (probe, origin)}, path)
    fixed = config.model_dump(exclude={"out", "name", "seed"})
    return SearchPlan(label=label, trials=entry.trials, fixed=fixed, space=space, origin=dotted(path))
