"""Optuna's messages during a sweep: the sweep says what happens in its own lines, so Optuna's
per-trial INFO lines and its experimental-feature warnings are held back, only while the
sweep runs (importing cxrlab changes no logging of Optuna's)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    # Heartbeats and stale-trial retries are marked experimental, and ask() warns that a
    # heartbeat expects Study.optimize, which a queue of runs does not use.
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


@contextlib.contextmanager
def optuna_warnings_only() -> Iterator[None]:
    """Optuna at WARNING for the block, then back to what the caller had."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)
