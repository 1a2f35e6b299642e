"""Pooled features of a frozen backbone, computed once and cached.

A frozen backbone in eval mode is a fixed function, so running it again every epoch (as the
study's fixed feature extractor did) only burns time. Features are computed once per split,
kept in memory for the process (a sweep's runs share them) and on disk under
``<cache>/features/``, keyed by everything they depend on: the exact images of the split
(paths and content hashes, in order), the backbone's actual tensors (whatever version of
the weights was resolved), its preprocessing, the image size, the views and their
augmentation, the device's arithmetic and the versions of the packages that compute them.
The manifest keeps the whole key and an entry is served only when it matches.
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
    """The full key (64 hex digits) of what features depend on; files are named by its first 32."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8", "surrogateescape")).hexdigest()


def backbone_digest(model) -> str:
    """A hash of the backbone's tensors: the weights actually loaded, whatever their source
    or version, and for random weights the initialisation itself."""
    digest = hashlib.sha256()
    for name, tensor in model.backbone.state_dict().items():
        value = tensor.detach().to("cpu").contiguous().reshape(-1)  # 1-D: 0-d tensors cannot be viewed as bytes
        digest.update(f"{name}|{value.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def _code_versions() -> str:
    from cxrlab.training.runtime import package_version

    return ",".join(f"{name}={package_version(name)}" for name in ("torch", "torchvision", "timm"))


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
    array_path, manifest_path = folder / f"{key[:32]}.npy", folder / f"{key[:32]}.json"
    features = _load(array_path, manifest_path, key, len(indices))
    if features is None:
        with file_lock(array_path):
            features = _load(array_path, manifest_path, key, len(indices))
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
                        "key": key,
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
    manifest_path = cache_root(cache_dir) / "features" / f"{key[:32]}.json"
    try:
        return float(read_json(manifest_path)[clock])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_memory_cache() -> None:
    _MEMORY.clear()


def _load(array_path: Path, manifest_path: Path, key: str, n_images: int) -> np.ndarray | None:
    if not array_path.exists() or not manifest_path.exists():
        return None
    try:
        manifest = read_json(manifest_path)
        features = np.load(array_path, allow_pickle=False)
        shape, checksum = manifest["shape"], manifest["checksum"]
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable, truncated or a manifest of another shape: recomputed, never trusted.
        return None
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return None  # another key under the same file name (or a manifest from before keys were kept)
    if features.dtype != np.float32 or list(features.shape) != shape or features.ndim != 3:
        return None
    if features.shape[1] != n_images:
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
    assert config.augment is not None  # resolved() sets the mode's augmentation
    augment = config.augment != "none"
    views = config.feature_views if augment else 1
    level = {split: config.augment if split == "train" else "none" for split in ("train", "val", "test")}
    # What every split's features share: the backbone's tensors and preprocessing, the image
    # size, the arithmetic of the device (bf16 autocast on CUDA) and the code computing them.
    common = (
        "features-v2",
        config.model,
        backbone_digest(ctx.model),
        [round(float(v), 6) for v in ctx.model.mean.flatten()] + [round(float(v), 6) for v in ctx.model.std.flatten()],
        data.image_size,
        f"{ctx.device.type}-{'bf16' if ctx.device.type == 'cuda' and torch.cuda.is_bf16_supported() else 'fp32'}",
        _code_versions(),
    )
    for split in ("train", "val", "test"):
        indices = data.indices(split)
        split_views = views if split == "train" else 1
        # The seed only draws the augmented views: plain features of pretrained weights are
        # the same for every seed, so the repeats of a frozen run share them.
        view_seed = config.seed if augment and split == "train" else 0
        key = feature_key(*common, data.split_key(split), split, split_views, level[split], view_seed)
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
