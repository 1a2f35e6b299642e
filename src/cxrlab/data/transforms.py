"""Batch transforms on tensors, run on the model's device: augment batches, not images.

Input is ``(B, 1, H, W)`` float in [0, 1]. "light" augmentation: a small random resized
crop (85-100% of the area), rotation up to 10 degrees, brightness and contrast within
10%, all drawn per image and applied to the whole batch in one ``grid_sample``. "strong"
widens every range (60-100% of the area, 15 degrees, 25%): X-rays from another machine or
period differ most in framing and exposure, which is what it imitates.

Intensity augmentation (``intensity_batch``) imitates what differs between sites after
framing: exposure (a gamma), the detector's or viewer's tone curve (an S-shaped contrast
curve), histogram equalisation applied by some devices' post-processing, the sharpness of
the detector and its processing (blur or an unsharp mask) and quantum noise. Like the
framing augmentation it works on the whole batch at once with per-image parameters drawn
from the run's generator, so it costs a few elementwise passes and one small convolution
per batch instead of a Python loop over images (bench/intensity.py measures it).
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
INTENSITY_LEVELS = {
    "light": dict(max_gamma=1.25, max_curve=0.5, equalize=0.1, max_sharpness=0.5, max_noise=0.02),
    "strong": dict(max_gamma=1.6, max_curve=1.0, equalize=0.25, max_sharpness=1.0, max_noise=0.04),
}
INTENSITIES = ("none", *INTENSITY_LEVELS)
# 3x3 binomial blur: the smallest kernel whose difference to the image is an unsharp mask.
_BLUR = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0


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


def augment_training_batch(
    images: torch.Tensor, generator: torch.Generator, augment: str = "none", intensity: str = "none"
) -> torch.Tensor:
    """The training augmentation of a run: intensity first (a tone curve acts on the detector's
    values, before any resampling pads the borders with black), then framing."""
    if intensity != "none":
        images = intensity_batch(images, generator, **INTENSITY_LEVELS[intensity])
    if augment != "none":
        images = augment_batch(images, generator, **AUGMENT_LEVELS[augment])
    return images


def intensity_batch(
    images: torch.Tensor,
    generator: torch.Generator,
    max_gamma: float = 1.25,
    max_curve: float = 0.5,
    equalize: float = 0.1,
    max_sharpness: float = 0.5,
    max_noise: float = 0.02,
) -> torch.Tensor:
    """A copy of ``images`` (``(B, 1, H, W)`` in [0, 1]) with per-image exposure and device
    changes: histogram equalisation with probability ``equalize``; a gamma in
    [1/max_gamma, max_gamma] (log-uniform); an S-shaped contrast curve blended in with a
    weight in [-max_curve, max_curve] (negative flattens); blur (negative) or an unsharp mask
    (positive) of strength in [-max_sharpness, max_sharpness]; Gaussian noise with a standard
    deviation in [0, max_noise]. Every parameter is drawn on the CPU generator, so the result
    does not depend on the device."""
    n = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * (high - low) + low).to(images.device, images.dtype)

    equalized = torch.rand(n, generator=generator) < equalize
    gamma = uniform(-math.log(max_gamma), math.log(max_gamma)).exp().view(n, 1, 1, 1)
    curve = uniform(-max_curve, max_curve).view(n, 1, 1, 1)
    sharpness = uniform(-max_sharpness, max_sharpness).view(n, 1, 1, 1)
    noise = uniform(0.0, max_noise).view(n, 1, 1, 1)
    out = images.clamp(0.0, 1.0)
    if equalized.any():
        rows = equalized.nonzero().flatten().to(images.device)
        out = out.index_copy(0, rows, equalize_histogram(out.index_select(0, rows)))
    # x ** gamma as exp(gamma * log x): half the time of pow with a per-image exponent on the CPU.
    out = out.clamp_min(1e-6).log_().mul_(gamma).exp_()
    out = out.add_(curve * (contrast_curve(out) - out))
    kernel = _BLUR.to(images.device, images.dtype).view(1, 1, 3, 3)
    blurred = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel)
    out = out.add_(sharpness * (out - blurred))
    out = out.add_(torch.randn(images.shape, generator=generator).to(images.device, images.dtype).mul_(noise))
    return out.clamp_(0.0, 1.0)


def contrast_curve(images: torch.Tensor, steepness: float = 6.0) -> torch.Tensor:
    """Each image through a sigmoid centred on its mean, rescaled so 0 and 1 stay 0 and 1:
    darker darks and brighter brights, the look of a harder tone curve."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    low, high = torch.sigmoid(-steepness * mean), torch.sigmoid(steepness * (1 - mean))
    return (torch.sigmoid(steepness * (images - mean)) - low) / (high - low)


def equalize_histogram(images: torch.Tensor) -> torch.Tensor:
    """Per-image histogram equalisation of ``(B, 1, H, W)`` in [0, 1] over 256 levels: one
    batched histogram (scatter_add), its cumulative sum as a lookup table, one gather."""
    n = images.shape[0]
    levels = (images * 255).round_().long().clamp_(0, 255).view(n, -1)
    counts = torch.zeros(n, 256, device=images.device, dtype=images.dtype)
    counts.scatter_add_(1, levels, torch.ones_like(levels, dtype=images.dtype))
    cdf = counts.cumsum(1)
    lowest = cdf.masked_fill(counts == 0, float("inf")).amin(1, keepdim=True)
    table = (cdf - lowest) / (cdf[:, -1:] - lowest).clamp_min(1.0)
    return table.clamp_(0.0, 1.0).gather(1, levels).view_as(images)
