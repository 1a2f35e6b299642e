"""Pooled features of a frozen backbone, computed once and cached.

A frozen backbone in eval mode is a fixed function, so running it again every epoch (as the
study's fixed feature extractor did) only burns time. Features are computed once per split,
kept in memory for the process (a sweep's runs share them) and on disk under
``<cache>/features/``, keyed by model, weights, data, image size, the images chosen and the
augmented views asked for.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from cxrlab.core.io import atomic_path, file_lock, read_json, write_json
from cxrlab.core.paths import cache_root
from cxrlab.core.progress import progress_bar
from cxrlab.data.batches import batch_indices, image_batches
from cxrlab.data.cache import pixels_checksum
from cxrlab.data.transforms import AUGMENT_LEVELS, augment_batch, to_float
from cxrlab.training.predict import autocast_for, default_eval_batch_size

if TYPE_CHECKING:
    from cxrlab.training.context import Context

_MEMORY: dict[str, torch.Tensor] = {}
_MEMORY_LIMIT = 8


def feature_key(*parts) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


def cached_features(
    model,
    images: np.ndarray,
    indices: np.ndarray,
    *,
    key: str,
    device: torch.device,
    batch_size: int | None,
    views: int = 1,
    augment: str = "none",
    seed: int = 0,
    cache_dir: str | None = None,
    show_progress: bool = True,
    label: str = "",
) -> torch.Tensor:
    """Features ``(views, len(indices), F)`` on the CPU, from memory, disk, or computed now.

    View 0 is the plain image, the others augmented at level ``augment`` ("light", "strong"); every view is drawn from its own seeded
    generator so the same key always means the same numbers."""
    if key in _MEMORY:
        return _MEMORY[key]
    folder = cache_root(cache_dir) / "features"
    array_path, manifest_path = folder / f"{key}.npy", folder / f"{key}.json"
    features = _load(array_path, manifest_path)
    if features is None:
        with file_lock(array_path):
            features = _load(array_path, manifest_path)
            if features is None:
                started, started_cpu = time.perf_counter(), time.process_time()
                features = compute_features(
                    model,
                    images,
                    indices,
                    device=device,
                    batch_size=batch_size,
                    views=views,
                    augment=augment,
                    seed=seed,
                    show_progress=show_progress,
                    label=label,
                )
                with atomic_path(array_path) as tmp, open(tmp, "wb") as f:
                    np.save(f, features)
                write_json(
                    manifest_path,
                    {
                        "shape": list(features.shape),
                        "dtype": str(features.dtype),
                        "checksum": pixels_checksum(features.view(np.uint8)),
                        "seconds": round(time.perf_counter() - started, 3),
                        "cpu_seconds": round(time.process_time() - started_cpu, 3),
                    },
                )
    tensor = torch.from_numpy(np.ascontiguousarray(features))
    if len(_MEMORY) >= _MEMORY_LIMIT:
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[key] = tensor
    return tensor


def recorded_seconds(key: str, cache_dir: str | None = None, clock: str = "seconds") -> float | None:
    """How long computing the features of ``key`` took when they were computed (by this run
    or an earlier one that shared them), from the cache manifest: wall ``seconds`` or
    process ``cpu_seconds``."""
    manifest_path = cache_root(cache_dir) / "features" / f"{key}.json"
    try:
        return float(read_json(manifest_path)[clock])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_memory_cache() -> None:
    _MEMORY.clear()


def _load(array_path: Path, manifest_path: Path) -> np.ndarray | None:
    if not array_path.exists() or not manifest_path.exists():
        return None
    try:
        manifest = read_json(manifest_path)
        features = np.load(array_path, allow_pickle=False)
        shape, checksum = manifest["shape"], manifest["checksum"]
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable, truncated or a manifest of another shape: recomputed, never trusted.
        return None
    if features.dtype != np.float32 or list(features.shape) != shape:
        return None
    if pixels_checksum(features.view(np.uint8)) != checksum:
        return None
    return features


@torch.inference_mode()
def compute_features(
    model,
    images: np.ndarray,
    indices: np.ndarray,
    *,
    device: torch.device,
    batch_size: int | None,
    views: int = 1,
    augment: str = "none",
    seed: int = 0,
    show_progress: bool = True,
    label: str = "",
) -> np.ndarray:
    """Run the backbone (in eval mode: BatchNorm statistics never move) over ``indices``."""
    model.eval()
    indices = np.asarray(indices)
    position = {int(i): k for k, i in enumerate(indices)}
    out: np.ndarray | None = None
    batches = batch_indices(indices, batch_size or default_eval_batch_size(device), shuffle=False)
    with progress_bar(f"Features {label}".strip(), views * len(indices), enabled=show_progress) as advance:
        for view in range(views):
            generator = torch.Generator().manual_seed(seed * 1000 + view)
            for pixels, _, rows in image_batches(images, None, batches, device):
                x = to_float(pixels)
                if augment != "none" and view > 0:
                    x = augment_batch(x, generator, **AUGMENT_LEVELS[augment])
                with autocast_for(device):
                    feats = model.features(x).float().cpu().numpy()
                if out is None:
                    out = np.zeros((views, len(indices), feats.shape[1]), dtype=np.float32)
                out[view, [position[int(r)] for r in rows]] = feats
                advance(len(rows))
    assert out is not None
    return out


def prepare_features(ctx: Context) -> None:
    """Cached pooled features of train (``views`` of them), val and test, into ``ctx.features``."""
    if "train" in ctx.features:
        return
    config, data = ctx.config, ctx.data
    augment = config.augment != "none"
    views = config.feature_views if augment else 1
    level = {split: config.augment if split == "train" else "none" for split in ("train", "val", "test")}
    weights_part = ctx.weights_id if ctx.weights_id != "none" else f"random-seed-{config.seed}"
    for split in ("train", "val", "test"):
        indices = data.indices(split)
        split_views = views if split == "train" else 1
        # The seed only draws the augmented views: plain features of pretrained weights are
        # the same for every seed, so the repeats of a frozen run share them.
        view_seed = config.seed if augment and split == "train" else 0
        key = feature_key(
            "features-v1",
            config.model,
            weights_part,
            data.fingerprint,
            data.image_size,
            data.split_fingerprint,
            split,
            split_views,
            level[split],
            view_seed,
        )
        ctx.features[split] = cached_features(
            ctx.model,
            data.images,
            indices,
            key=key,
            device=ctx.device,
            batch_size=config.eval_batch_size,
            views=split_views,
            augment=level[split],
            seed=config.seed,
            cache_dir=config.cache_dir,
            show_progress=ctx.show_progress,
            label=split,
        )
        ctx.features[f"{split}_labels"] = torch.from_numpy(data.labels[indices])
        # What computing these features cost, even when an earlier run computed them: a
        # run's training time must not depend on what happens to be in the cache.
        ctx.feature_seconds += recorded_seconds(key, config.cache_dir) or 0.0
        ctx.feature_cpu_seconds += recorded_seconds(key, config.cache_dir, "cpu_seconds") or 0.0
