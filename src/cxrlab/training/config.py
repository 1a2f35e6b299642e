"""Every setting of a training run, validated, with the defaults resolved per mode.

A ``TrainConfig`` is what ``cxrlab train`` builds from its flags, what a study builds from
its file, and what ``config.yaml`` records; ``resolved()`` fills the settings left as
``None`` with the defaults of the chosen mode, so a run directory records what ran.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

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
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)

    # What to train on and with
    data: str = Field(description="Dataset root, folder of class folders, .npz file or pneumoniamnist[:SIZE].")
    model: str = Field(description="A registry name (see cxrlab models) or timm:<name>.")
    mode: ModeName = Field("finetune", description="How the pretrained network is used.")
    weights: str | None = Field(
        None,
        description="imagenet, none or a .pt/.pth/.safetensors file (default: imagenet; none for scratch); "
        "imagenet-stats or FILE-stats: each tensor drawn from a normal with the pretrained tensor's mean and std.",
    )
    labels: Literal["folders", "kermany3"] = Field(
        "folders", description="Class labels from the folders, or NORMAL/BACTERIA/VIRUS from Kermany file names."
    )

    # Optimisation
    lr: float | None = Field(None, gt=0, allow_inf_nan=False, description="Learning rate (default: the mode's).")
    epochs: int | None = Field(
        None, ge=1, le=100_000, description="Epochs (of the network phase in gradual mode; default: the mode's)."
    )
    weight_decay: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="Weight decay on weights, not biases."
    )
    batch_size: int = Field(32, ge=1, le=65_536, description="Training batch size.")
    optimizer: Literal["adam", "adamw", "sgd"] | None = Field(None, description="Optimiser (default: adamw).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD's (Nesterov) momentum.")
    scheduler: Literal["none", "cosine", "step"] | None = Field(
        None, description="Learning-rate schedule after warmup (default: cosine)."
    )
    warmup: float | None = Field(
        None, ge=0, le=1000, allow_inf_nan=False, description="Epochs of linear learning-rate warmup."
    )
    augment: Literal["none", "light", "strong"] | None = Field(
        None, description="Batch augmentation of the training images (default: the mode's)."
    )
    class_weights: Literal["none", "balanced"] = Field(
        "balanced", description="Weigh the loss by inverse class frequency of the train split."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy.")
    select: Literal["val_loss", "val_accuracy"] = Field(
        "val_loss", description="Which epoch's checkpoint is kept, chosen on validation."
    )
    patience: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Early stopping: end a phase after this many epochs without a lower validation loss (default: never).",
    )

    # Frozen and gradual modes
    feature_views: int = Field(
        1, ge=1, le=64, description="Frozen mode with augmentation: augmented views of the cached train features."
    )
    feature_cache: bool = Field(
        True, description="Frozen mode: train the head on cached features (off: run the backbone every step)."
    )
    head_epochs: int | None = Field(None, ge=0, le=100_000, description="Gradual mode: epochs of the head phase.")
    head_lr: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Gradual mode: learning rate of the head phase."
    )
    backbone_lr_scale: float = Field(
        0.25, gt=0, le=1, description="Gradual mode: the backbone learns at lr times this."
    )

    # Robust fine-tuning
    freeze_bn_stats: bool = Field(
        False,
        description="Network phases: BatchNorm layers stay in eval mode (pretrained statistics kept; "
        "their scale and shift still train).",
    )
    ema: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Network phases: per-step decay of a moving average of the weights (0: off, e.g. 0.999); "
        "the average is validated, selected and saved.",
    )
    wise: bool = Field(
        False,
        description="Gradual mode: mix the probe (end of the head phase) and the fine-tuned weights, "
        "(1-a) probe + a fine-tuned, a in 0, 0.1 .. 1 chosen on the selection set.",
    )
    intensity: Literal["none", "light", "strong"] = Field(
        "none",
        description="Intensity augmentation of the images network phases train on: gamma, contrast "
        "curve, histogram equalisation, blur or sharpening, noise.",
    )

    # What transfers (finetune mode)
    freeze_blocks: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Finetune mode: the stem and the first K stages of the backbone frozen (eval mode, no "
        "gradients), the rest and the head train; with --augment none the frozen part runs once, cached.",
    )
    transfer_blocks: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Finetune mode: the stem and the first K stages from the weights, the rest of the backbone "
        "freshly initialised; everything trains.",
    )
    train_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Train on this share of the training split: a class-stratified, patient-grouped subset, "
        "nested across fractions; validation and test splits unchanged.",
    )

    # Decision and evaluation
    threshold: Literal["0.5", "val-youden", "val-balanced"] = Field(
        "val-youden", description="Decision threshold on p(disease), fitted on the validation split."
    )
    tta: int = Field(0, ge=0, le=64, description="Test-time augmentation: augmented views averaged (0: none).")
    external: dict[str, str] = Field(
        default_factory=dict,
        description="External labelled sets, NAME=PATH: scored once after selection, never used to choose.",
    )
    external_validation: list[str] = Field(
        default_factory=list,
        description="Names of external sets that helped choose these settings (a recipe chosen on them): "
        "scored as the others and choosing nothing in the run, but recorded as validation sets, not tests.",
    )
    target_val: str | None = Field(
        None,
        description="A labelled sample of the target site (folder of class folders): the epoch, threshold, "
        "temperature and WiSE coefficient are chosen on it, not on the validation split.",
    )
    temperature_scaling: bool | None = Field(
        None,
        description="Fit a softmax temperature on the set that chooses and apply it to every probability "
        "(default: on with --target-val).",
    )

    # Data
    image_size: int = Field(
        224, ge=16, le=4096, description="Images are decoded and resized to this many pixels a side."
    )
    split_seed: int = Field(0, ge=0, lt=2**32, description="Seed of the patient-grouped validation/test split.")
    val_fraction: float = Field(0.1, ge=0, lt=0.5, description="Share of the images carved out for validation.")
    test_fraction: float = Field(0.15, ge=0, lt=0.5, description="Share carved out for test (when there is no test/).")
    on_bad_image: Literal["error", "skip"] = Field(
        "error", description="An undecodable image stops the run, or is skipped and counted."
    )
    on_duplicate_label: Literal["error", "keep"] = Field(
        "error",
        description="Byte-identical images under different labels stop the run, or are kept (each with its label) and noted.",
    )
    cache_dir: str | None = Field(None, description="Cache folder (default $CXRLAB_CACHE, else ~/.cache/cxrlab).")

    # Execution
    seed: int = Field(0, ge=0, lt=2**32, description="Seed of the initialisation, the order and the augmentation.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    deterministic: bool | None = Field(None, description="Bit-reproducible runs (default: on for the CPU).")
    compile: bool = Field(False, description="torch.compile the network.")
    channels_last: bool | None = Field(
        None, description="channels_last memory format (default: on; faster on CPU and GPU, bench/fast_paths.py)."
    )
    eval_batch_size: int | None = Field(
        None, ge=1, le=65_536, description="Inference batch size (default: 32 on CPU, 256 on CUDA)."
    )
    tensorboard: bool = Field(False, description="Log to TensorBoard in the run directory.")
    distributed: bool = Field(False, description="DistributedDataParallel under torchrun.")
    out: str = Field("runs", description="Folder the run directory is made in.")
    name: str | None = Field(None, description="Run directory name (default: model-mode-time).")

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

    @field_validator("freeze_bn_stats")
    @classmethod
    def _pretrained_statistics(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("mode") == "scratch":
            raise ValueError("frozen BatchNorm statistics need pretrained ones; scratch mode has none")
        return value

    @field_validator("ema")
    @classmethod
    def _network_phases(cls, value: float, info: ValidationInfo) -> float:
        if value and info.data.get("mode") == "frozen":
            raise ValueError("the weight average runs in network phases; frozen mode trains the head on features")
        return value

    @field_validator("wise")
    @classmethod
    def _needs_probe(cls, value: bool, info: ValidationInfo) -> bool:
        if value and (info.data.get("mode") != "gradual" or info.data.get("head_epochs") == 0):
            raise ValueError("WiSE mixes a probe with the fine-tuned weights: use mode gradual with head epochs")
        return value

    @field_validator("intensity")
    @classmethod
    def _needs_images(cls, value: str, info: ValidationInfo) -> str:
        if value != "none" and info.data.get("mode") == "frozen" and info.data.get("feature_cache", True):
            raise ValueError("frozen mode trains on cached features; intensity augmentation needs --no-feature-cache")
        return value

    @model_validator(mode="after")
    def _augment_does_something(self) -> TrainConfig:
        # A frozen head on cached features of the plain images never sees an augmented one:
        # the setting would be recorded without having had any effect.
        if (
            self.mode == "frozen"
            and self.feature_cache
            and self.augment not in (None, "none")
            and self.feature_views < 2
        ):
            raise ValueError(
                f"augment {self.augment} in frozen mode with one feature view does nothing (the head trains on "
                "features of the plain images): set feature_views to 2 or more for augmented views, or augment none"
            )
        return self

    @model_validator(mode="after")
    def _depths_need_finetune(self) -> TrainConfig:
        for name in ("freeze_blocks", "transfer_blocks"):
            if getattr(self, name) is not None and self.mode != "finetune":
                raise ValueError(f"{name} applies to finetune mode only (mode is {self.mode})")
        return self

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
        if values["temperature_scaling"] is None:
            values["temperature_scaling"] = values["target_val"] is not None
        return TrainConfig(**values)
