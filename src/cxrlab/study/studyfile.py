"""The study file as written: its keys (pydantic models), its YAML read safely with the line
of every key, and one-line messages that point at a line.

``spec`` resolves what this reads into runs.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cxrlab.core.errors import CxrlabError, setting_error
from cxrlab.core.yamlload import compose, construct, describe, read_text
from cxrlab.study.plan import Dimension
from cxrlab.training.config import TrainConfig

# Set by the sweep itself, or once for the whole study.
RESERVED = {
    "data": "the data is set once for the study (its data: key, or --data)",
    "external": "external sets are named once for the study (its external: key)",
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
    external: dict[str, str] = Field(default_factory=dict)
    repeats: int = Field(1, ge=1, le=1000)
    defaults: dict[str, Any] = Field(default_factory=dict)
    runs: list[dict[str, Any]] = Field(default_factory=list)
    grids: list[dict[str, Any]] = Field(default_factory=list)
    search: list[SearchEntry] = Field(default_factory=list)


def parse(study_file: str | Path) -> tuple[StudyFile, Locator]:
    """The study file's keys, checked, and a locator for messages about its lines."""
    path = Path(study_file)
    if not path.is_file():
        raise CxrlabError(
            f"study file {study_file} does not exist: pass a study YAML file or a shipped study's name (cxrlab studies)"
        )
    source = str(study_file)
    try:
        node = compose(read_text(path, "study file"), source)
        if node is None:
            raise CxrlabError(f"{source} is empty: a study file is a YAML mapping (see cxrlab studies)")
        lines: dict[tuple, int] = {}
        _index_lines(node, (), lines, source)
        raw = construct(node)
    except yaml.YAMLError as exc:
        line, problem = describe(exc)
        raise CxrlabError(f"{source}{f', line {line}' if line else ''}: not valid YAML: {problem}") from exc
    if not isinstance(raw, dict):
        raise CxrlabError(
            f"{source}: a study file is a YAML mapping (name:, data:, runs: ...), not a {type(raw).__name__}"
        )
    where = Locator(source, lines)
    try:
        study = StudyFile(**{str(k): v for k, v in raw.items()})
    except ValidationError as exc:
        raise CxrlabError(where.pydantic(exc)) from exc
    if not study.runs and not study.grids and not study.search:
        raise CxrlabError(f"{source}: the study has no runs: add runs:, grids: or search:")
    return study, where


def _index_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int], source: str) -> None:
    """The line of every key and list item under ``node`` (the node is bounded: see yamlload)."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise CxrlabError(
                    f"{source}, line {key_node.start_mark.line + 1}: {dotted(path + (key,))} is given twice: keep one"
                )
            seen.add(key)
            _index_lines(value_node, path + (key,), lines, source)
            lines[path + (key,)] = key_node.start_mark.line + 1  # a key's own line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, path + (index,), lines, source)


class Locator:
    """Turns a path in the file into ``file, line N: path``."""

    def __init__(self, source: str, lines: dict[tuple, int]):
        self.source, self.lines = source, lines

    def at(self, path: tuple, message: str) -> str:
        return f"{self._where(path)}{dotted(path)}: {message}" if not _flag(path) else f"{self._where(path)}{message}"

    def prefix(self, path: tuple) -> str:
        """The start of a message about the key at ``path``, up to where the key is named."""
        parent = dotted(path[:-1]) if len(path) > 1 else ""
        return self._where(path) + (f"{parent}." if parent and not _flag(path) else "")

    def pydantic(self, exc: ValidationError) -> str:
        loc = tuple(exc.errors()[0]["loc"])
        known = list(StudyFile.model_fields) if len(loc) == 1 else list(SpaceEntry.model_fields)
        return setting_error(exc, self._where(loc), known)

    def settings(self, values: Any, path: tuple) -> dict[str, tuple[Any, tuple]]:
        """Check that every key is a TrainConfig field the study may set; keep where each came from."""
        if not isinstance(values, dict):
            raise CxrlabError(self.at(path, "expected a mapping of settings (key: value)"))
        checked = {}
        for key, value in values.items():
            problem = setting_problem(str(key))
            if problem:
                raise CxrlabError(self.at(path + (key,), problem))
            checked[str(key)] = (value, path + (key,))
        return checked

    def _where(self, path: tuple) -> str:
        if _flag(path):
            return f"{' '.join(map(str, path))}: "
        probe = tuple(path)
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        return f"{self.source}, line {line}: " if line else f"{self.source}: "


def _flag(path: tuple) -> bool:
    return bool(path) and str(path[0]).startswith("--")


def setting_problem(key: str) -> str | None:
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


def dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "file"


def dimension(key: str, entry: SpaceEntry, where: Locator, origin: tuple) -> Dimension:
    """A range over an integer setting (epochs, batch_size) is an int range, else a float one."""
    if entry.choices is not None or entry.type == "categorical":
        return Dimension("categorical", choices=tuple(entry.choices or ()))
    assert entry.low is not None and entry.high is not None  # SpaceEntry checked both
    annotation = TrainConfig.model_fields[key].annotation
    kinds = set(typing.get_args(annotation)) or {annotation}
    kind = entry.type or ("int" if int in kinds and float not in kinds else "float")
    if kind == "int":
        bounds = [entry.low, entry.high] + ([entry.step] if entry.step is not None else [])
        if not all(float(v).is_integer() for v in bounds):
            raise CxrlabError(where.at(origin, f"{key} takes whole numbers: give whole low, high and step"))
        step = int(entry.step) if entry.step is not None else None
        return Dimension("int", low=int(entry.low), high=int(entry.high), log=entry.log, step=step)
    return Dimension("float", low=float(entry.low), high=float(entry.high), log=entry.log, step=entry.step)
