"""Batches straight from the memory-mapped decoded cache: no workers, no PIL, no copies
beyond the batch itself."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def batch_indices(
    indices: np.ndarray,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """``indices`` cut into batches, in a random order drawn from ``generator`` when shuffling."""
    indices = np.asarray(indices)
    if shuffle:
        indices = indices[torch.randperm(len(indices), generator=generator).numpy()]
    stop = len(indices) - (len(indices) % batch_size if drop_last and len(indices) > batch_size else 0)
    return [indices[i : i + batch_size] for i in range(0, stop, batch_size)]


def image_batches(
    images: np.ndarray,
    labels: np.ndarray | None,
    batches: list[np.ndarray],
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """Yield ``(uint8 images (B, 1, H, W), labels, indices)`` on ``device`` for each batch."""
    pin = device.type == "cuda"
    for batch in batches:
        # Sorted reads walk the memory map forwards; the order inside a batch does not matter.
        order = np.argsort(batch, kind="stable")
        rows = batch[order]
        pixels = torch.from_numpy(np.ascontiguousarray(images[rows])).unsqueeze(1)
        targets = torch.from_numpy(
            np.asarray(labels[rows] if labels is not None else np.zeros(len(rows)), dtype=np.int64)
        )
        if pin:
            pixels, targets = pixels.pin_memory(), targets.pin_memory()
        yield pixels.to(device, non_blocking=pin), targets.to(device, non_blocking=pin), rows
