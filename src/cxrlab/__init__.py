"""cxrlab: how much does an ImageNet-pretrained ConvNet help on a small medical image data set,
used how, at what cost.

The Python API (``cxrlab.api``) is reachable from here: ``cxrlab.train``, ``cxrlab.load_run``,
``cxrlab.list_runs``, ``cxrlab.compare``, ``cxrlab.sweep``, ``cxrlab.lr_find``, ``cxrlab.show_data``,
``cxrlab.model_cards`` and ``cxrlab.Run``. They load lazily, so ``import cxrlab`` stays fast and pulls in no torch.
The layers live in subpackages: ``cxrlab.core`` (ground), ``data``, ``models``,
``training``, ``evaluate``, ``report`` and ``study``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cxrlab.api import Run, compare, list_runs, load_run, lr_find, model_cards, show_data, sweep

_API = ("Run", "compare", "list_runs", "load_run", "lr_find", "model_cards", "show_data", "sweep")
__all__ = [
    "Run",
    "__version__",
    "compare",
    "list_runs",
    "load_run",
    "lr_find",
    "model_cards",
    "show_data",
    "sweep",
    "train",
]


def train(data: Any = None, model: str | None = None, mode: str | None = None, **settings: Any) -> Run:
    """Train one run and return it: see ``cxrlab.api.train``."""
    from cxrlab.api import train as api_train

    return api_train(data, model, mode, **settings)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("cxrlab")
    except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    # Read on first use: importlib.metadata costs 60 ms, a fifth of `cxrlab --help`.
    if name == "__version__":
        return _version()
    if name in _API:
        from cxrlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'cxrlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
