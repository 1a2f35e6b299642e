"""cxrlab: how much does an ImageNet-pretrained ConvNet help on a small medical image data set,
used how, at what cost.

The Python API (``cxrlab.api``) is reachable from here: ``cxrlab.train``, ``cxrlab.load_run``,
``cxrlab.list_runs``, ``cxrlab.compare``, ``cxrlab.sweep``, ``cxrlab.model_cards`` and
``cxrlab.Run``. They load lazily, so ``import cxrlab`` stays fast and pulls in no torch.
"""

from types import ModuleType as _ModuleType

__version__ = "0.1.0"

_API = ("Run", "compare", "list_runs", "load_run", "model_cards", "sweep")
__all__ = ["__version__", "train", *_API]


def __getattr__(name: str):
    if name in _API:
        from cxrlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'cxrlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(name for name in set(globals()) | set(_API) if not name.startswith("_") or name == "__version__")


class _TrainPackage(_ModuleType):
    """The ``cxrlab.train`` subpackage, callable as the API's ``train`` function.

    ``cxrlab.train`` names both the training layer (``import cxrlab.train.loop``) and the
    API call ``cxrlab.train(data=..., model=...)``. Python binds the subpackage to the
    attribute whenever any of its modules is imported, so a plain function here would be
    replaced by the module at the first such import; a module that is also callable is the
    one object that can answer to both.
    """

    def __call__(self, data=None, model=None, mode="finetune", **settings):
        """Train one run and return it: see ``cxrlab.api.train``."""
        from cxrlab.api import train

        return train(data, model, mode, **settings)


# The subpackage's __init__ imports nothing, so this costs no torch import.
import cxrlab.train as _train_package  # noqa: E402

_train_package.__class__ = _TrainPackage
train = _train_package
del _train_package
