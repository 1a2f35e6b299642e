"""Command-line options made from ``TrainConfig``'s fields, so the command line, the API and
study files read one definition of every setting.

Each field becomes ``--field-name``: its type, its default (shown in ``--help``), its choices
(a ``Literal`` field), its bounds (``ge``/``gt``/``le``/``lt``, shown as a range) and its help
(the field's ``description``). A ``bool`` field is a ``--x/--no-x`` switch; a ``dict`` field
such as ``external`` takes repeatable ``--external NAME=PATH``, a list field a repeated option. A field someone adds later is
an option without any edit here. Every option defaults to None, meaning "not given", so the
config's own defaults (and the mode's) fill what is left out.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import annotated_types
import typer

from cxrlab.core.errors import CxrlabError

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

# Fields shown first in --help, in this order; the rest follow in the config's order.
FIRST = ("data", "model", "mode", "weights", "epochs", "lr", "image_size", "batch_size")
# Fields a run cannot start without (unless it resumes).
REQUIRED = ("data", "model")


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _plain_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``; a Literal or dict is returned as it is."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return options[0] if len(options) == 1 else str
    return annotation


def bounds_text(info: FieldInfo) -> str:
    """The field's bounds as --help shows them, e.g. "1 <= x <= 100000" or "x > 0"."""
    low = high = ""
    for rule in info.metadata:
        if isinstance(rule, annotated_types.Ge):
            low = f"{rule.ge} <= "
        elif isinstance(rule, annotated_types.Gt):
            low = f"{rule.gt} < "
        elif isinstance(rule, annotated_types.Le):
            high = f" <= {rule.le}"
        elif isinstance(rule, annotated_types.Lt):
            high = f" < {rule.lt}"
    return f"{low}x{high}" if low or high else ""


def _shown_default(name: str, info: FieldInfo) -> str | bool:
    if info.default_factory is not None:
        return False
    if info.default is None or info.is_required():
        return False  # the description says what None means ("default: the mode's"); required has none
    return str(info.default).lower() if isinstance(info.default, bool) else str(info.default)


def field_parameter(name: str, info: FieldInfo) -> inspect.Parameter:
    """The typer parameter of one config field. Values are checked by the config itself
    (one-line errors); the option only converts the text and shows the rules."""
    kind = _plain_type(info.annotation)
    bounds = bounds_text(info)
    help_text = (info.description or "") + (f" [{bounds}]" if bounds else "")
    if name in REQUIRED:
        help_text += "  [required unless --resume]"
    common: dict[str, Any] = dict(help=help_text, show_default=_shown_default(name, info))
    flag = option_name(name)
    if typing.get_origin(kind) is Literal:
        option = typer.Option(None, flag, **common)
        annotation: Any = kind | None
    elif kind is bool:
        option = typer.Option(None, f"{flag}/--no-{flag[2:]}", **common)
        annotation = bool | None
    elif typing.get_origin(kind) is dict:
        option = typer.Option(None, flag, metavar="NAME=PATH", **common)
        annotation = list[str] | None
    elif typing.get_origin(kind) in (list, tuple):
        option = typer.Option(None, flag, **common)  # repeatable: --x A --x B
        annotation = list[str] | None
    elif kind in (int, float):
        option = typer.Option(None, flag, **common)
        annotation = kind | None
    else:
        option = typer.Option(None, flag, **common)
        annotation = str | None
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def config_fields(config: type[BaseModel]) -> list[str]:
    names = list(config.model_fields)
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def parse_pairs(option: str, items: list[str]) -> dict[str, str]:
    """``["NAME=PATH", ...]`` as a dict; anything else is a one-line error."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise CxrlabError(f"{option} takes NAME=PATH (got {item!r})")
        if key.strip() in pairs:
            raise CxrlabError(f"{option}: {key.strip()!r} given twice")
        pairs[key.strip()] = value.strip()
    return pairs


def given_settings(values: dict[str, Any], config: type[BaseModel]) -> dict[str, Any]:
    """The config fields given on the command line (None: left out), dict fields parsed."""
    settings = {}
    for name, value in values.items():
        if value is None:
            continue
        if typing.get_origin(_plain_type(config.model_fields[name].annotation)) is dict:
            value = parse_pairs(option_name(name), value)
        settings[name] = value
    return settings


class ConfigCommand:
    """``command`` with one option per field of ``config``; it is called with the given ones
    as ``settings`` (a dict) beside its own parameters. The options are made when typer first
    reads the signature, so importing the command line loads no config (nor pydantic)."""

    def __init__(self, command: Callable[..., Any], config: type[BaseModel] | None = None):
        self.command, self._config = command, config
        self.__name__, self.__qualname__ = command.__name__, command.__qualname__
        self.__doc__, self.__module__ = command.__doc__, command.__module__

    @functools.cached_property
    def config(self) -> type[BaseModel]:
        if self._config is None:
            from cxrlab.training.config import TrainConfig

            self._config = TrainConfig
        return self._config

    @functools.cached_property
    def fields(self) -> list[str]:
        return config_fields(self.config)

    @functools.cached_property
    def __signature__(self) -> inspect.Signature:
        own = [p for p in inspect.signature(self.command, eval_str=True).parameters.values() if p.name != "settings"]
        generated = [field_parameter(name, self.config.model_fields[name]) for name in self.fields]
        return inspect.Signature(generated + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own])

    @property
    def __annotations__(self) -> dict[str, Any]:  # type: ignore[override]
        return {p.name: p.annotation for p in self.__signature__.parameters.values()}

    def __call__(self, **values: Any) -> Any:
        settings = given_settings({name: values.pop(name) for name in self.fields}, self.config)
        return self.command(settings=settings, **values)


def with_config_options(command: Callable[..., Any], config: type[BaseModel] | None = None) -> ConfigCommand:
    """Give ``command`` one option per field of ``config`` (default: ``TrainConfig``)."""
    return ConfigCommand(command, config)
