"""Run ids of a study: the settings a run differs by, readable, bounded and unique.

A table or grid run is ``<model>-<mode>-<key=value ...>-seed=N``, from the values that
actually run (after ``--set``), for the keys its entry in the study file sets; a search
trial is ``<label>-t<number>-<sampled values>-seed=N``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cxrlab.core import text
from cxrlab.training.rundir import safe_run_id

MAX_SETTING_ID = 96  # run ids (setting + "-seed=N") stay within safe_run_id's 120 characters
# How a setting reads in a run id; others appear as key=value.
SHORT_NAMES = {"lr": "lr", "epochs": "ep", "weight_decay": "wd", "batch_size": "bs", "image_size": "px"}


def format_value(value: Any) -> str:
    """A setting's value as it reads in a run id: 1e-4, 0.3, 32, adam (and None as None, not
    the tables' dash, so that run ids stay as they were)."""
    return "None" if value is None else text.format_value(value)


def setting_id(values: dict[str, Any], keys: list[str]) -> str:
    """``<model>-<mode>-lr=1e-3-ep=30-wd=1e-4-bs=32``: the model, the mode and the values of
    ``keys`` (those the study file set for the run, in its order) as the run has them."""
    parts = [str(values["model"]).replace(":", "_"), str(values["mode"])]
    parts += [id_part(k, values[k]) for k in keys if k not in ("model", "mode")]
    return bounded_id("-".join(parts))


def search_run_id(label: str, trial_number: int, params: dict[str, Any], seed: int) -> str:
    """``<label>-t003-lr=2.5e-4-bs=16-seed=0``: the trial number keeps ids unique, the values readable."""
    parts = [label, f"t{trial_number:03d}"] + [id_part(k, v) for k, v in params.items()]
    return f"{bounded_id('-'.join(parts))}-seed={seed}"


def distinct_id(base: str, content: str) -> str:
    """``base`` made distinct by a hash of ``content``, for two settings whose values read
    alike (1e-3 and 1.00001e-3)."""
    return bounded_id(f"{base}-{hashlib.sha1(content.encode()).hexdigest()[:6]}")


def bounded_id(joined: str) -> str:
    if len(joined) > MAX_SETTING_ID:
        # Cut long ids but keep them unique (and room for "-seed=N"): a hash of the whole.
        joined = f"{joined[: MAX_SETTING_ID - 9].rstrip('-=')}-{hashlib.sha1(joined.encode()).hexdigest()[:8]}"
    return safe_run_id(joined)


def id_part(key: str, value: Any) -> str:
    return f"{SHORT_NAMES.get(key, key)}={format_value(value)}"
