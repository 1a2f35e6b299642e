"""Class probabilities of a model over decoded images, with optional test-time augmentation."""

from __future__ import annotations

import numpy as np
import torch

from cxrlab.data.batches import batch_indices, image_batches
from cxrlab.data.transforms import augment_batch, to_float


def default_eval_batch_size(device: torch.device) -> int:
    """Inference batch size: the largest that fits on a GPU; on a CPU small batches are faster
    (bench/fast_paths.py: 256 images were 1.7x slower than 32, from page faults on the
    activations) and need a tenth of the memory."""
    return 256 if device.type == "cuda" else 32


def autocast_for(device: torch.device):
    """bf16 autocast where the device runs it fast (CUDA); a no-op context elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    images: np.ndarray,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int | None = None,
    tta: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """Logits ``(len(indices), C)`` in the order of ``indices``; with ``tta`` > 0 the mean
    probability over the plain image and ``tta`` augmented views, returned as log-probabilities."""
    model.eval()
    batch_size = batch_size or default_eval_batch_size(device)
    indices = np.asarray(indices)
    position = {int(i): k for k, i in enumerate(indices)}
    out: np.ndarray | None = None
    generator = torch.Generator().manual_seed(seed)
    for pixels, _, rows in image_batches(images, None, batch_indices(indices, batch_size, shuffle=False), device):
        x = to_float(pixels)
        with autocast_for(device):
            logits = model(x).float()
            if tta:
                probs = logits.softmax(1)
                for _ in range(tta):
                    probs += model(augment_batch(x, generator)).float().softmax(1)
                logits = (probs / (tta + 1)).log()
        logits = logits.cpu().numpy()
        if out is None:
            out = np.zeros((len(indices), logits.shape[1]), dtype=np.float32)
        out[[position[int(r)] for r in rows]] = logits
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)
