"""Batches straight from the memory-mapped decoded cache: no workers, no PIL, no copies
beyond the batch itself."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from cxrlab.core.errors import CxrlabError


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


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def check_batch_memory(batch_size: int, image_size: int) -> None:
    """Refuse a batch whose input alone cannot fit in memory: the uint8 images, their float
    copy and the three-channel normalised copy the model makes (activations come on top)."""
    needed = batch_size * image_size * image_size * (1 + 4 + 12)
    available = available_memory()
    if available is not None and needed > available:
        raise CxrlabError(
            f"a batch of {batch_size} images at {image_size} px needs at least {needed / 1e9:.1f} GB of memory "
            f"for its input alone, and {available / 1e9:.1f} GB is available: use a smaller --image-size or --batch-size"
        )
