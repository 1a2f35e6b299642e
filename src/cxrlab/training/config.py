"""Every setting of a training run, validated, with the defaults resolved per mode.

A ``TrainConfig`` is what ``cxrlab train`` builds from its flags, what a study builds from
its file, and what ``config.yaml`` records; ``resolved()`` fills the settings left as
``None`` with the defaults of the chosen mode, so a run directory records what ran.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cxrlab.core.modes import MODES, ModeName

# Settings that say where a run is written, on what it ran and how it is logged or sped up,
# not what it learned: two runs that differ only in these are the same setting, and a
# recorded run whose values differ in them still counts as the run a study planned.
EXECUTION_SETTINGS = frozenset(
    {
        "out",
        "name",
        "cache_dir",
        "device",
        "tensorboard",
        "compile",
        "eval_batch_size",
        "distributed",
        "deterministic",
        "channels_last",
    }
)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # What to train on and with
    data: str
    model: str
    mode: ModeName = "finetune"
    weights: str | None = None  # imagenet | none | FILE; None: imagenet, or none for scratch
    labels: Literal["folders", "kermany3"] = "folders"

    # Optimisation
    lr: float | None = Field(None, gt=0)
    epochs: int | None = Field(None, ge=1)
    weight_decay: float | None = Field(None, ge=0)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] | None = None
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["none", "cosine", "step"] | None = None
    warmup: float | None = Field(None, ge=0)  # epochs of linear warmup
    augment: Literal["none", "light", "strong"] | None = None
    class_weights: Literal["none", "balanced"] = "balanced"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    select: Literal["val_loss", "val_accuracy"] = "val_loss"

    # Frozen and gradual modes
    feature_views: int = Field(1, ge=1)  # augmented views of the train features (when augmenting)
    feature_cache: bool = True  # False: run the frozen backbone every step (for checks only)
    head_epochs: int | None = Field(None, ge=0)
    head_lr: float | None = Field(None, gt=0)
    backbone_lr_scale: float = Field(0.25, gt=0, le=1)

    # Decision and evaluation
    threshold: Literal["0.5", "val-youden", "val-balanced"] = "val-youden"
    tta: int = Field(0, ge=0)

    # Data
    image_size: int = Field(224, ge=16)
    split_seed: int = 0
    val_fraction: float = Field(0.1, ge=0, lt=0.5)
    test_fraction: float = Field(0.15, ge=0, lt=0.5)
    on_bad_image: Literal["error", "skip"] = "error"
    cache_dir: str | None = None

    # Execution
    seed: int = 0
    device: str = "auto"
    deterministic: bool | None = None  # None: on for CPU
    compile: bool = False
    channels_last: bool | None = None  # None: on (faster on CPU and GPU alike, bench/fast_paths.py)
    eval_batch_size: int | None = Field(None, ge=1)  # None: 32 on CPU, 256 on CUDA (train.predict)
    tensorboard: bool = False
    distributed: bool = False
    out: str = "runs"
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value or value in {".", ".."} or "/" in value or "\\" in value or "\x00" in value:
            raise ValueError("a run name is a single folder name (no '/', '\\' or '..')")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in {"auto", "cpu", "cuda"} and not value.startswith("cuda:"):
            raise ValueError("device is auto, cpu, cuda or cuda:N")
        return value

    def resolved(self) -> TrainConfig:
        """A copy with every mode-dependent default filled in."""
        from cxrlab.models.registry import model_entry

        defaults = MODES[self.mode].defaults
        values = self.model_dump()
        for key, value in defaults.items():
            if values.get(key) is None:
                values[key] = value
        if values["weights"] is None:
            values["weights"] = (
                "none" if self.mode == "scratch" or not model_entry(self.model).pretrained else "imagenet"
            )
        if values["head_epochs"] is None:
            values["head_epochs"] = 0
        if values["head_lr"] is None:
            values["head_lr"] = values["lr"]
        return TrainConfig(**values)
