"""BatchNorm statistics: kept frozen while the weights train, or re-estimated on a set of images.

A BatchNorm layer normalises with the statistics of its batch while training and with its
running averages at inference. Two uses here:

* frozen statistics (``freeze_bn_stats``): fine-tuning from a linear probe with BatchNorm in
  train mode replaces the pretrained statistics with those of small, augmented batches of a
  new domain at the first step, which distorts the features the probe was fitted on (the
  ``gradual`` mode lost 3 points this way). In eval mode the statistics stay put while the
  affine scale and shift still learn;
* re-estimated statistics: the running averages recomputed for a given set of weights on a
  given set of images (an averaged model's own statistics; AdaBN on a target site's images),
  with ``torch.optim.swa_utils.update_bn`` (a cumulative average over the batches).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from cxrlab.data.batches import batch_indices, image_batches
from cxrlab.data.transforms import to_float
from cxrlab.training.predict import default_eval_batch_size

# Images used to re-estimate statistics during training: a fixed sample of the train split,
# not all of it, so that the cost per validation stays bounded (bench/robust_options.py).
BN_SAMPLE = 1024


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batchnorm_buffer_names(model: nn.Module) -> list[str]:
    """The state-dict keys of every BatchNorm buffer (running mean, variance, batch count)."""
    layers = {id(m) for m in batchnorm_layers(model)}
    names = []
    for prefix, module in model.named_modules():
        if id(module) in layers:
            names += [f"{prefix}.{name}" if prefix else name for name, _ in module.named_buffers(recurse=False)]
    return names


def freeze_bn_stats(model: nn.Module) -> None:
    """BatchNorm layers to eval mode (running statistics used and left as they are); called
    after ``model.train()``. Their affine parameters keep their ``requires_grad``."""
    for layer in batchnorm_layers(model):
        layer.eval()


def reestimate_bn_stats(
    model: nn.Module,
    images: np.ndarray,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int | None = None,
    channels_last: bool = True,
) -> int:
    """Recompute every BatchNorm layer's running statistics of ``model`` on ``images[indices]``
    (plain images, no augmentation); the weights are untouched. Returns the number of layers;
    the model is left in eval mode."""
    if not batchnorm_layers(model):
        return 0
    with torch.no_grad():
        update_bn(_float_batches(images, indices, device, batch_size, channels_last), model)
    model.eval()
    return len(batchnorm_layers(model))


def sample_indices(indices: np.ndarray, limit: int = BN_SAMPLE, seed: int = 0) -> np.ndarray:
    """At most ``limit`` of ``indices``, a fixed random sample, in order."""
    indices = np.asarray(indices)
    if len(indices) <= limit:
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, limit, replace=False))


def _float_batches(
    images: np.ndarray, indices: np.ndarray, device: torch.device, batch_size: int | None, channels_last: bool
) -> Iterator[torch.Tensor]:
    batches = batch_indices(np.asarray(indices), batch_size or default_eval_batch_size(device), shuffle=False)
    if len(batches) > 1 and len(batches[-1]) < 2:
        # A batch of one image has no batch statistics where the feature maps are 1x1.
        batches = batches[:-2] + [np.concatenate(batches[-2:])]
    for pixels, _, _ in image_batches(images, None, batches, device):
        x = to_float(pixels)
        yield x.contiguous(memory_format=torch.channels_last) if channels_last else x
