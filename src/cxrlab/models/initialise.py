"""How a run's network starts: pretrained weights, partial transfer, or only their statistics.

- ``weights`` as ``load_weights`` reads it (imagenet, none, a file): every tensor as given.
- ``--transfer-blocks K``: the stem and the first K stages from those weights, every other
  tensor of the backbone as the architecture initialises it (the random draw made when the
  model was built, before any weights were loaded): Transfusion's partial transfer.
- ``--weights imagenet-stats`` or ``FILE-stats``: every weight tensor drawn i.i.d. from a
  normal with the mean and standard deviation of the pretrained tensor (Transfusion's "Mean
  Var" init), and BatchNorm's running statistics reset to those of a new layer.

The new head is never pretrained: it keeps its own random initialisation in every case.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrlab.core.errors import CxrlabError
from cxrlab.models.registry import Classifier, backbone_stages
from cxrlab.models.stages import check_depth
from cxrlab.models.weights import load_weights

STATS_SUFFIX = "-stats"
# What a run's initialisation was, as records name it.
INIT_KINDS = ("pretrained", "partial", "stats", "random", "file")


def split_stats(weights: str) -> tuple[str, bool]:
    """``("imagenet", True)`` for ``imagenet-stats``; ``(weights, False)`` otherwise."""
    if weights.endswith(STATS_SUFFIX) and len(weights) > len(STATS_SUFFIX):
        return weights[: -len(STATS_SUFFIX)], True
    return weights, False


def init_kind(weights: str, transfer_blocks: int | None) -> str:
    """One of ``INIT_KINDS``: how the backbone's weights were set before training."""
    base, stats = split_stats(weights)
    if stats:
        return "stats"
    if base == "none":
        return "random"
    if transfer_blocks is not None:
        return "partial"
    return "pretrained" if base == "imagenet" else "file"


def initialise(
    model: Classifier,
    name: str,
    weights: str,
    *,
    seed: int,
    transfer_blocks: int | None = None,
    freeze_blocks: int | None = None,
) -> str:
    """Set ``model``'s starting weights; returns the fingerprint feature caches are keyed by.

    ``freeze_blocks`` is only checked here (against the model's stages), before anything is
    written; the freezing itself happens when training starts."""
    if freeze_blocks is not None:
        check_depth(backbone_stages(model, name), freeze_blocks, "--freeze-blocks", name)
    base, stats = split_stats(weights)
    if stats and base == "none":
        raise CxrlabError("--weights none-stats: statistics need weights to come from (imagenet-stats or FILE-stats)")
    if transfer_blocks is not None and (stats or base == "none"):
        raise CxrlabError(
            f"--transfer-blocks needs pretrained weights to transfer (imagenet or a file), not --weights {weights}"
        )
    fresh = {k: v.clone() for k, v in model.backbone.state_dict().items()} if transfer_blocks is not None else None
    weights_id = load_weights(model, name, base)
    if stats:
        generator = torch.Generator().manual_seed(seed)
        stats_init(model.backbone, generator)
        return f"{weights_id}|stats-seed-{seed}"
    if fresh is not None and transfer_blocks is not None:
        stages = backbone_stages(model, name)
        check_depth(stages, transfer_blocks, "--transfer-blocks", name)
        kept = _tensor_names(model.backbone, stages.bottom(transfer_blocks))
        model.backbone.load_state_dict({k: v for k, v in fresh.items() if k not in kept}, strict=False)
        return f"{weights_id}|transfer-{transfer_blocks}-seed-{seed}"
    return weights_id


def stats_init(backbone: nn.Module, generator: torch.Generator) -> None:
    """Every parameter redrawn from N(mean, std) of its own values; BatchNorm statistics reset."""
    with torch.no_grad():
        for parameter in backbone.parameters():
            mean, std = parameter.mean(), parameter.std(unbiased=False)
            draw = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            parameter.copy_(draw.mul_(std).add_(mean))
        for module in backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                module.reset_running_stats()


def _tensor_names(backbone: nn.Module, modules: list[nn.Module]) -> set[str]:
    """The state-dict keys of ``backbone`` that belong to any of ``modules``."""
    owned = {id(t) for m in modules for t in [*m.parameters(), *m.buffers()]}
    tensors: dict[str, torch.Tensor] = dict(backbone.named_parameters())
    tensors.update(dict(backbone.named_buffers()))
    return {name for name, tensor in tensors.items() if id(tensor) in owned}
