"""Batch transforms on tensors, run on the model's device: augment batches, not images.

Input is ``(B, 1, H, W)`` float in [0, 1]. "light" augmentation: a small random resized
crop (85-100% of the area), rotation up to 10 degrees, brightness and contrast within
10%, all drawn per image and applied to the whole batch in one ``grid_sample``. "strong"
widens every range (60-100% of the area, 15 degrees, 25%): X-rays from another machine or
period differ most in framing and exposure, which is what it imitates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENT_LEVELS = {
    "light": dict(min_area=0.85, max_degrees=10.0, max_brightness=0.1, max_contrast=0.1),
    "strong": dict(min_area=0.6, max_degrees=15.0, max_brightness=0.25, max_contrast=0.25),
}
AUGMENTS = ("none", *AUGMENT_LEVELS)


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W)`` or ``(B, 1, H, W)`` to float ``(B, 1, H, W)`` in [0, 1]."""
    if batch.dim() == 3:
        batch = batch.unsqueeze(1)
    return batch.float().div_(255.0)


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator,
    min_area: float = 0.85,
    max_degrees: float = 10.0,
    max_brightness: float = 0.1,
    max_contrast: float = 0.1,
) -> torch.Tensor:
    """A randomly cropped, rotated, brightened and contrasted copy of ``images``."""
    n = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        # Drawn on the CPU generator so that results do not depend on the device.
        return (torch.rand(n, generator=generator) * (high - low) + low).to(images.device)

    scale = uniform(min_area, 1.0).sqrt()
    angle = uniform(-max_degrees, max_degrees) * (math.pi / 180.0)
    shift_x = uniform(-1.0, 1.0) * (1 - scale)
    shift_y = uniform(-1.0, 1.0) * (1 - scale)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1).to(
        images.dtype
    )
    grid = affine_grid(theta, images.shape[-2], images.shape[-1])
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    brightness = uniform(1 - max_brightness, 1 + max_brightness).view(n, 1, 1, 1).to(images.dtype)
    contrast = uniform(1 - max_contrast, 1 + max_contrast).view(n, 1, 1, 1).to(images.dtype)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    # ((out - mean) * contrast + mean) * brightness, in place: two passes over the batch, not five.
    return out.mul_(contrast * brightness).add_(mean * (1 - contrast) * brightness).clamp_(0.0, 1.0)


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, height, width), align_corners=False)``, computed as
    broadcast multiply-adds: on the CPU affine_grid's batched matrix product with an inner
    size of 3 took half of ``augment_batch``'s time at 224 px."""
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    t = theta[:, :, :, None, None]  # (B, 2, 3, 1, 1)
    coords = t[:, :, 0] * xs + t[:, :, 1] * ys[:, None] + t[:, :, 2]  # (B, 2, height, width)
    return coords.permute(0, 2, 3, 1)
