"""Study files: what a study runs, read from YAML, checked, and resolved into runs.

A study file names its data, the settings shared by every run, and the runs themselves as
an explicit table, as grids whose lists are crossed, or as search spaces for Optuna's TPE:

    name: offline                       # the study directory is runs/<name>/
    data: ../shared/data/kermany-224
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
model fails at once with one line naming the key and its line in the file.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cxrlab.core.errors import CxrlabError
from cxrlab.models.registry import model_entry
from cxrlab.training.config import TrainConfig
from cxrlab.training.rundir import safe_run_id

# Set by the sweep itself: the data (study-wide, or --data), the seed (repeats) and where
# the run directory goes.
RESERVED = {
    "data": "the data is set once for the study (its data: key, or --data)",
    "seed": "seeds come from repeats (seeds 0 .. repeats-1)",
    "out": "runs go into the study directory",
    "name": "run names are made from the settings",
}
# Names people reach for that are not the field's name.
ALIASES = {
    "learning_rate": "lr",
    "learningrate": "lr",
    "wd": "weight_decay",
    "batch": "batch_size",
    "bs": "batch_size",
    "epoch": "epochs",
    "size": "image_size",
    "img_size": "image_size",
    "optim": "optimizer",
    "arch": "model",
    "network": "model",
}
MAX_SETTING_ID = 96  # run ids (setting + "-seed=N") stay within safe_run_id's 120 characters
# How a setting reads in a run id; others appear as key=value.
SHORT_NAMES = {"lr": "lr", "epochs": "ep", "weight_decay": "wd", "batch_size": "bs", "image_size": "px"}


class SpaceEntry(BaseModel):
    """One dimension of a search space: a float or int range, or a list of choices."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["float", "int", "categorical"] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SpaceEntry:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs low and high (or give choices)")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("a log range takes no step")
        return self


class SearchEntry(BaseModel):
    """A TPE search: a model and mode, a trial budget, a space; other keys are fixed settings."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    trials: int = Field(ge=1)
    space: dict[str, SpaceEntry] = Field(min_length=1)


class StudyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    data: str | None = None
    repeats: int = Field(1, ge=1)
    defaults: dict[str, Any] = Field(default_factory=dict)
    runs: list[dict[str, Any]] = Field(default_factory=list)
    grids: list[dict[str, Any]] = Field(default_factory=list)
    search: list[SearchEntry] = Field(default_factory=list)


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


@dataclass(frozen=True)
class StudyPlan:
    """A study file resolved: every run it makes, validated."""

    name: str
    source: str  # the study file
    description: str | None
    data: str
    repeats: int
    overrides: dict[str, Any]
    runs: list[PlannedRun] = field(default_factory=list)
    searches: list[SearchPlan] = field(default_factory=list)

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
            "repeats": self.repeats,
            "overrides": self.overrides,
            "runs": [
                {
                    "run_id": r.run_id,
                    "setting_id": r.setting_id,
                    "seed": r.seed,
                    "origin": r.origin,
                    "settings": {k: v for k, v in r.settings.items() if k not in ("data", "seed")},
                }
                for r in self.runs
            ],
            "search": [
                {
                    "label": s.label,
                    "trials": s.trials,
                    "origin": s.origin,
                    "fixed": {k: v for k, v in s.fixed.items() if k != "data"},
                    "space": {
                        k: {f: v for f, v in d.__dict__.items() if v not in (None, (), False)}
                        for k, d in s.space.items()
                    },
                }
                for s in self.searches
            ],
        }


def load_plan(
    study_file: str | Path, *, data: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> StudyPlan:
    """Read, check and resolve a study file; ``data`` and ``overrides`` (``KEY=VALUE``) come
    from the command line. Raises ``CxrlabError`` naming the key and line of any mistake."""
    path = Path(study_file)
    if not path.is_file():
        raise CxrlabError(f"study file {study_file} does not exist: pass a study YAML file (see studies/)")
    text = path.read_text(encoding="utf-8")
    raw, lines = _parse(text, str(study_file))
    where = _Locator(str(study_file), lines)
    try:
        study = StudyFile(**raw)
    except ValidationError as exc:
        raise CxrlabError(where.pydantic(exc)) from exc
    if not study.runs and not study.grids and not study.search:
        raise CxrlabError(f"{study_file}: the study has no runs: add runs:, grids: or search:")

    name = study.name if study.name is not None else path.stem
    if safe_run_id(name) != name:
        raise CxrlabError(where.at(("name",), f"name {name!r} must be a plain folder name (letters, digits, . _ - =)"))
    chosen_data = data if data is not None else study.data
    if not chosen_data:
        raise CxrlabError(f"{study_file}: no data: set data: in the study file or pass --data")
    fixed_overrides = parse_overrides(overrides)

    base: dict[str, tuple[Any, tuple]] = {"data": (chosen_data, ("data",) if data is None else ("--data",))}
    base.update(where.settings(study.defaults, ("defaults",)))
    overridden = {key: (value, ("--set", f"{key}={value}")) for key, value in fixed_overrides.items()}

    # (entry path, the entry's settings with where each came from, the keys that name the run)
    entries: list[tuple[tuple, dict, list[str]]] = []
    for index, entry in enumerate(study.runs):
        given = where.settings(entry, ("runs", index))
        entries.append((("runs", index), given, list(given)))
    for index, entry in enumerate(study.grids):
        given = where.settings(entry, ("grids", index))
        crossed = {k: v for k, v in given.items() if isinstance(v[0], list)}
        for _key, (values, origin) in crossed.items():
            if not values:
                raise CxrlabError(where.at(origin, "an empty list crosses to no runs"))
        for combination in itertools.product(*[[(k, v) for v in crossed[k][0]] for k in crossed]):
            values = dict(given)
            values.update({k: (v, crossed[k][1]) for k, v in combination})
            entries.append((("grids", index), values, list(given)))

    runs: list[PlannedRun] = []
    seen: dict[str, str] = {}
    for path, given, id_keys in entries:
        origin = _dotted(path)
        # The run id and the duplicate check come from the file alone: --set epochs=1 makes
        # a big study small without renaming its runs or merging settings it made equal.
        as_written = _validated(where, {**base, **given}, path)
        config = _validated(where, {**base, **given, **overridden}, path) if overridden else as_written
        setting_id = _setting_id(as_written, id_keys)
        written = repr(sorted(as_written.model_dump().items()))
        same = seen.get(setting_id) or seen.get(written)
        if same:
            raise CxrlabError(where.at(path, f"repeats the setting of {same} ({setting_id}): remove one"))
        seen[setting_id] = seen[written] = origin
        values = config.model_dump(exclude={"out", "name", "seed"})
        for seed in range(study.repeats):
            runs.append(
                PlannedRun(
                    run_id=f"{setting_id}-seed={seed}",
                    setting_id=setting_id,
                    seed=seed,
                    settings={**values, "seed": seed},
                    origin=origin,
                )
            )
    # Seed-major order: a killed or half-done study has a full table at seed 0 first.
    runs.sort(key=lambda r: r.seed)

    searches: list[SearchPlan] = []
    for index, entry in enumerate(study.search):
        searches.append(_search_plan(where, entry, index, base, overridden, [s.label for s in searches]))
    return StudyPlan(
        name=name,
        source=str(study_file),
        description=study.description,
        data=chosen_data,
        repeats=study.repeats,
        overrides=fixed_overrides,
        runs=runs,
        searches=searches,
    )


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["epochs=1", "lr=1e-3"]`` as settings; values are read as YAML scalars."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CxrlabError(f"--set {item}: write KEY=VALUE, e.g. --set epochs=1")
        problem = _setting_problem(key)
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


def search_settings(plan: SearchPlan, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """The TrainConfig fields of one search trial at one seed (validated)."""
    values = {**plan.fixed, **params, "seed": seed}
    try:
        return TrainConfig(**values).model_dump(exclude={"out", "name"})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise CxrlabError(f"search {plan.label}: {'.'.join(map(str, error['loc']))}: {error['msg']}") from exc


def search_run_id(plan: SearchPlan, trial_number: int, params: dict[str, Any], seed: int) -> str:
    """``<label>-t003-lr=2.5e-4-bs=16-seed=0``: the trial number keeps ids unique, the values readable."""
    parts = [plan.label, f"t{trial_number:03d}"] + [_id_part(k, v) for k, v in params.items()]
    return f"{_bounded_id('-'.join(parts))}-seed={seed}"


def format_value(value: Any) -> str:
    """A setting's value as it reads in a run id: 1e-4, 0.3, 32, adam."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) < 1e-2 or abs(value) >= 1e5:
            mantissa, exponent = f"{value:.3e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:.4g}"
    return str(value)


# --- reading the file --------------------------------------------------------------------


def _parse(text: str, source: str) -> tuple[dict, dict[tuple, int]]:
    """The file's data (safe loader) and the line of every key and list item in it."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise CxrlabError(f"{source} is empty: a study file is a YAML mapping (see studies/)")
        lines: dict[tuple, int] = {}
        _index_lines(node, (), lines, source)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CxrlabError(f"{source}{line}: not valid YAML: {problem}") from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise CxrlabError(
            f"{source}: a study file is a YAML mapping (name:, data:, runs: ...), not a {type(data).__name__}"
        )
    return data, lines


def _index_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int], source: str) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise CxrlabError(
                    f"{source}, line {key_node.start_mark.line + 1}: {_dotted(path + (key,))} is given twice: keep one"
                )
            seen.add(key)
            _index_lines(value_node, path + (key,), lines, source)
            lines[path + (key,)] = key_node.start_mark.line + 1  # a key's own line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, path + (index,), lines, source)


class _Locator:
    """Turns a path in the file into ``file, line N: path``."""

    def __init__(self, source: str, lines: dict[tuple, int]):
        self.source, self.lines = source, lines

    def at(self, path: tuple, message: str) -> str:
        if path and path[0] in ("--set", "--data"):
            return f"{' '.join(map(str, path))}: {message}" if path[0] == "--set" else f"--data: {message}"
        probe = tuple(path)
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        return (
            f"{self.source}, line {line}: {_dotted(path)}: {message}"
            if line
            else f"{self.source}: {_dotted(path)}: {message}"
        )

    def pydantic(self, exc: ValidationError) -> str:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            known = list(StudyFile.model_fields) if len(loc) == 1 else list(SpaceEntry.model_fields)
            return self.at(loc, f"unknown key{_suggestion(str(loc[-1]), known)} (known: {', '.join(known)})")
        if error["type"] == "missing":
            return self.at(loc, "missing: add it")
        message = error["msg"].removeprefix("Value error, ")
        return self.at(loc, f"{message} (got {error.get('input')!r})")

    def settings(self, values: dict, path: tuple) -> dict[str, tuple[Any, tuple]]:
        """Check that every key is a TrainConfig field the study may set; keep where each came from."""
        if not isinstance(values, dict):
            raise CxrlabError(self.at(path, "expected a mapping of settings (key: value)"))
        checked = {}
        for key, value in values.items():
            problem = _setting_problem(str(key))
            if problem:
                raise CxrlabError(self.at(path + (key,), problem))
            checked[str(key)] = (value, path + (key,))
        return checked


def _setting_problem(key: str) -> str | None:
    if key in RESERVED:
        return f"{key} cannot be set per run: {RESERVED[key]}"
    if key not in TrainConfig.model_fields:
        known = [k for k in TrainConfig.model_fields if k not in RESERVED]
        close = difflib.get_close_matches(key, known + list(ALIASES), n=1, cutoff=0.6)
        hint = f" (did you mean {ALIASES.get(close[0], close[0])}?)" if close else ""
        return (
            f"unknown setting {key!r}{hint}: a setting is a train option such as lr, epochs, weight_decay, batch_size"
        )
    return None


def _suggestion(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "file"


# --- resolving ---------------------------------------------------------------------------


def _validated(where: _Locator, merged: dict[str, tuple[Any, tuple]], entry: tuple) -> TrainConfig:
    """``merged`` as a TrainConfig; an error names the key and the line the bad value came from."""
    values = {key: value for key, (value, _) in merged.items()}
    if "model" not in values:
        raise CxrlabError(where.at(entry, "no model: add model: (see cxrlab models)"))
    try:
        config = TrainConfig(**values, seed=0)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else None
        origin = merged[key][1] if key in merged else entry
        message = error["msg"].removeprefix("Value error, ")
        raise CxrlabError(where.at(origin, f"{message} (got {error.get('input')!r})")) from exc
    try:
        model_entry(config.model)
    except CxrlabError as exc:
        raise CxrlabError(where.at(merged["model"][1], str(exc))) from exc
    return config


def _setting_id(config: TrainConfig, keys: list[str]) -> str:
    """``<model>-<mode>-lr=1e-3-ep=30-wd=1e-4-bs=32``: the model, the mode and the values the
    file set for this run, in the file's order (defaults and overrides are the same for all)."""
    values = config.model_dump()
    parts = [config.model.replace(":", "_"), config.mode]
    parts += [_id_part(k, values[k]) for k in keys if k not in ("model", "mode")]
    return _bounded_id("-".join(parts))


def _bounded_id(joined: str) -> str:
    if len(joined) > MAX_SETTING_ID:
        # Cut long ids but keep them unique (and room for "-seed=N"): a hash of the whole.
        joined = f"{joined[: MAX_SETTING_ID - 9].rstrip('-=')}-{hashlib.sha1(joined.encode()).hexdigest()[:8]}"
    return safe_run_id(joined)


def _id_part(key: str, value: Any) -> str:
    return f"{SHORT_NAMES.get(key, key)}={format_value(value)}"


def _search_plan(
    where: _Locator, entry: SearchEntry, index: int, base: dict, overridden: dict, labels: list[str]
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
    space: dict[str, Dimension] = {}
    for key, dimension in entry.space.items():
        origin = path + ("space", key)
        problem = _setting_problem(key)
        if problem:
            raise CxrlabError(where.at(origin, problem))
        if key in given:
            raise CxrlabError(
                where.at(origin, f"{key} is both fixed ({_dotted(given[key][1])}) and searched: keep one")
            )
        if key in overridden:
            continue  # --set fixes it for every run, the search included
        space[key] = _dimension(key, dimension, where, origin)
        # Both ends of a range and every choice must make a valid run: a negative lower
        # bound on lr fails here, not after half the trials.
        for probe in space[key].choices or (space[key].low, space[key].high):
            _validated(where, {**merged, key: (probe, origin)}, path)
    fixed = config.model_dump(exclude={"out", "name", "seed"})
    return SearchPlan(label=label, trials=entry.trials, fixed=fixed, space=space, origin=_dotted(path))


def _dimension(key: str, entry: SpaceEntry, where: _Locator, origin: tuple) -> Dimension:
    """A range over an integer setting (epochs, batch_size) is an int range, else a float one."""
    if entry.choices is not None or entry.type == "categorical":
        return Dimension("categorical", choices=tuple(entry.choices or ()))
    annotation = TrainConfig.model_fields[key].annotation
    kinds = set(typing.get_args(annotation)) or {annotation}
    kind = entry.type or ("int" if int in kinds and float not in kinds else "float")
    if kind == "int":
        bounds = [entry.low, entry.high] + ([entry.step] if entry.step is not None else [])
        if not all(float(v).is_integer() for v in bounds):
            raise CxrlabError(where.at(origin, f"{key} takes whole numbers: give whole low, high and step"))
        return Dimension(
            "int",
            low=int(entry.low),
            high=int(entry.high),
            log=entry.log,
            step=int(entry.step) if entry.step is not None else None,
        )
    return Dimension("float", low=float(entry.low), high=float(entry.high), log=entry.log, step=entry.step)
