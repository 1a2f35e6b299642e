"""The ways a pretrained network is used: one table, read by the config, the report and the figures.

Each ``Mode`` holds everything that varies by mode: how it reads in a table and in a
sentence, its colour in figures, its place in the report's order, and the training
defaults of the default recipe (docs/recipe.md gives the evidence for them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ModeName = Literal["finetune", "frozen", "scratch", "gradual"]


@dataclass(frozen=True)
class Mode:
    name: str  # as written in configs and on the command line
    title: str  # as a table or legend names it
    phrase: str  # as the subject of a sentence
    colour: str  # in every figure (Okabe-Ito: readable by colour-blind readers)
    defaults: dict[str, Any] = field(default_factory=dict)  # TrainConfig values left as None
    help: str = ""


# The defaults serve a GPU user; a study file sets smaller sizes where a 2-core budget calls for them.
_COMMON = dict(lr=1e-3, optimizer="adamw", weight_decay=1e-4, scheduler="cosine")

# In report order: the pretrained modes first, the from-scratch baseline last.
MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode(
            "finetune",
            "fine-tune",
            "fine-tuning",
            "#0072B2",
            dict(_COMMON, epochs=10, warmup=1.0, augment="light"),
            "every parameter trains, from the chosen weights",
        ),
        Mode(
            "gradual",
            "gradual unfreezing",
            "gradual unfreezing",
            "#CC79A7",
            dict(_COMMON, epochs=10, warmup=1.0, augment="light", head_epochs=10, head_lr=1e-3),
            "the head first on cached features, then everything with a lower backbone learning rate",
        ),
        Mode(
            "frozen",
            "fixed feature extractor",
            "the fixed feature extractor",
            "#009E73",
            dict(_COMMON, epochs=30, warmup=0.0, augment="none"),
            "the backbone is frozen; its features are computed once and only a new head trains",
        ),
        Mode(
            "scratch",
            "from scratch",
            "training from scratch",
            "#D55E00",
            dict(_COMMON, epochs=30, warmup=1.0, augment="light"),
            "random initialisation, everything trains (the baseline)",
        ),
    )
}
MODE_NAMES: tuple[str, ...] = tuple(MODES)


def mode_title(name: str) -> str:
    return MODES[name].title if name in MODES else name


def mode_phrase(name: str) -> str:
    return MODES[name].phrase if name in MODES else name


def mode_rank(name: str) -> int:
    """The place of ``name`` in the report's order; unknown modes go last."""
    return MODE_NAMES.index(name) if name in MODES else len(MODE_NAMES)


def mode_colour(name: str) -> str:
    return MODES[name].colour if name in MODES else "#999999"
