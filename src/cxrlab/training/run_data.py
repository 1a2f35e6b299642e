"""The data a run's settings name, decoded and split exactly as those settings say.

Training, the learning-rate range test, the cost estimate and the scoring of external sets
all load images through ``load_run_data``, so that a split or decoding setting added to
``TrainConfig`` reaches every one of them, not only the fit loop.
"""

from __future__ import annotations

from typing import Any

from cxrlab.data.dataset import Dataset, load_dataset
from cxrlab.training.config import TrainConfig


def load_run_data(
    config: TrainConfig, show_progress: bool = True, data: str | None = None, **overrides: Any
) -> Dataset:
    """``data`` (default ``config.data``) at the run's image size, split by its split settings;
    ``overrides`` replace one of ``load_dataset``'s options (e.g. ``folder_is_test=True``)."""
    options: dict[str, Any] = dict(
        split_seed=config.split_seed,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        labels=config.labels,
        on_bad_image=config.on_bad_image,
        on_duplicate_label=config.on_duplicate_label,
        cache_dir=config.cache_dir,
        show_progress=show_progress,
    )
    options.update(overrides)
    return load_dataset(config.data if data is None else data, config.image_size, **options)
