"""The stages of each backbone: what "the first K stages" means for freeze depth, partial
transfer and layer similarity.

A backbone splits into a stem, an ordered list of stages (EfficientNet's blocks, ResNet's
layers, DenseNet's dense blocks with their transitions, the small CNN's conv blocks) and a
pool that turns the last feature map into the pooled features. Whatever follows the last
stage and holds weights (EfficientNet's 1x1 head convolution, DenseNet's last norm) belongs
to the last stage, so that freezing every stage freezes the whole backbone: the fixed
feature extractor. The pieces share the backbone's modules (nothing is copied), and for the
models in the registry ``pool(blocks[-1](...blocks[0](stem(x))))`` is the backbone's
output, so the frozen bottom can be run once and the top on its cached output.

``timm:<name>`` models are cut after the modules timm's ``feature_info`` names; their pieces
partition the parameters but are not promised to run in sequence (``sequential`` False).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cxrlab.core.errors import CxrlabError


@dataclass(frozen=True)
class Stages:
    stem: nn.Module
    blocks: list[nn.Module]  # the stages, in order; the last holds the backbone's tail
    pool: nn.Module  # parameter-free for every registry model but ConvNeXt (its LayerNorm)
    names: list[str]  # a label per stage, e.g. "blocks.3" or "layer2"
    sequential: bool = True  # pool(blocks(...(stem(x)))) equals backbone(x)

    @property
    def count(self) -> int:
        return len(self.blocks)

    def bottom(self, k: int) -> list[nn.Module]:
        """The stem and the first ``k`` stages."""
        return [self.stem, *self.blocks[:k]]

    def top(self, k: int) -> nn.Sequential:
        """What runs after the first ``k`` stages, up to the pooled features."""
        return nn.Sequential(*self.blocks[k:], self.pool)

    def forward_from(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Pooled features from the output of stage ``k`` (0: the stem's output)."""
        for block in self.blocks[k:]:
            x = block(x)
        return self.pool(x)

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's and every stage's output for normalised images ``x``."""
        outputs = [self.stem(x)]
        for block in self.blocks:
            outputs.append(block(outputs[-1]))
        return outputs


def check_depth(stages: Stages, k: int, option: str, model: str) -> None:
    if not 0 <= k <= stages.count:
        raise CxrlabError(
            f"{option} {k}: {model} has {stages.count} stages ({', '.join(stages.names)}); use 0 to {stages.count}"
        )


def _seq(*modules: nn.Module) -> nn.Module:
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def _children(module: nn.Module, *names: str) -> list[nn.Module]:
    """``module.<name>`` for each name (a dotted name reaches into a child). The same objects
    as attribute access, typed as modules: ``nn.Module.__getattr__`` is typed ``Tensor | Module``."""
    return [module.get_submodule(name) for name in names]


def _layers(module: nn.Module, name: str) -> list[nn.Module]:
    """The modules, in order, of the ``nn.Sequential`` (or ``nn.ModuleList``) ``module.<name>``."""
    container = module.get_submodule(name)
    assert isinstance(container, nn.Sequential | nn.ModuleList), f"{name} is a {type(container).__name__}"
    return list(container)


def timm_efficientnet_stages(backbone: nn.Module) -> Stages:
    """timm's EfficientNet(-Lite): conv_stem + bn1, the seven block stages, conv_head + bn2
    with the last stage."""
    blocks = _layers(backbone, "blocks")
    blocks[-1] = _seq(blocks[-1], *_children(backbone, "conv_head", "bn2"))
    names = [f"blocks.{i}" for i in range(len(blocks))]
    stem = _seq(*_children(backbone, "conv_stem", "bn1"))
    return Stages(stem, blocks, _seq(*_children(backbone, "global_pool", "classifier")), names)


def resnet_stages(backbone: nn.Module) -> Stages:
    stem = _seq(*_children(backbone, "conv1", "bn1", "relu", "maxpool"))
    names = ["layer1", "layer2", "layer3", "layer4"]
    avgpool, fc = _children(backbone, "avgpool", "fc")
    return Stages(stem, _children(backbone, *names), _seq(avgpool, nn.Flatten(1), fc), names)


def densenet_stages(backbone: nn.Module) -> Stages:
    """The four dense blocks, each with the transition after it; norm5 with the last."""
    (f,) = _children(backbone, "features")
    blocks = [
        _seq(*_children(f, "denseblock1", "transition1")),
        _seq(*_children(f, "denseblock2", "transition2")),
        _seq(*_children(f, "denseblock3", "transition3")),
        _seq(*_children(f, "denseblock4", "norm5")),
    ]
    (classifier,) = _children(backbone, "classifier")
    pool = _seq(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), classifier)
    stem = _seq(*_children(f, "conv0", "norm0", "relu0", "pool0"))
    return Stages(stem, blocks, pool, [f"denseblock{i}" for i in range(1, 5)])


def torchvision_efficientnet_stages(backbone: nn.Module) -> Stages:
    f = _layers(backbone, "features")
    blocks = [f[i] for i in range(1, len(f) - 1)]
    blocks[-1] = _seq(blocks[-1], f[len(f) - 1])
    names = [f"features.{i}" for i in range(1, len(f) - 1)]
    avgpool, classifier = _children(backbone, "avgpool", "classifier")
    return Stages(f[0], blocks, _seq(avgpool, nn.Flatten(1), classifier), names)


def convnext_stages(backbone: nn.Module) -> Stages:
    """Each stage with the downsampling layer before it; the pool keeps the final LayerNorm."""
    f = _layers(backbone, "features")
    blocks = [f[1]] + [_seq(f[i], f[i + 1]) for i in range(2, len(f), 2)]
    names = [f"features.{i}" for i in range(1, len(f), 2)]
    return Stages(f[0], blocks, _seq(*_children(backbone, "avgpool", "classifier")), names)


def scratch_cnn_stages(backbone: nn.Module) -> Stages:
    """The first conv-BN-ReLU is the stem; each later one (with its max pool) a stage."""
    layers = _layers(backbone, "features")
    starts = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    starts = [s - 1 if s and isinstance(layers[s - 1], nn.MaxPool2d) else s for s in starts]
    pieces = [_seq(*layers[a:b]) for a, b in zip(starts, [*starts[1:], len(layers)])]
    (pool,) = _children(backbone, "pool")
    return Stages(pieces[0], pieces[1:], pool, [f"conv{i}" for i in range(1, len(pieces))])


def timm_feature_stages(backbone: nn.Module) -> Stages:
    """Any timm model with ``feature_info``: cut after each module it names."""
    info = getattr(backbone, "feature_info", None)
    cuts = [entry["module"] for entry in info] if info else []
    if len(cuts) < 2:
        raise CxrlabError(f"{type(backbone).__name__} names no feature stages: it has no freeze or transfer depth")
    linear = _linearised(backbone, cuts)
    positions = [next(i for i, (name, _) in enumerate(linear) if name == cut) for cut in cuts]
    bounds = [p + 1 for p in positions]
    pieces = [[m for _, m in linear[a:b]] for a, b in zip([0, *bounds[:-1]], bounds)]
    tail = [m for _, m in linear[bounds[-1] :]]
    pieces[-1] += [m for m in tail if any(True for _ in m.parameters())]
    pool = [m for m in tail if not any(True for _ in m.parameters())]
    blocks = [_seq(*p) for p in pieces[1:]]
    return Stages(_seq(*pieces[0]), blocks, _seq(*pool) if pool else nn.Identity(), cuts[1:], sequential=False)


def _linearised(backbone: nn.Module, cuts: list[str]) -> list[tuple[str, nn.Module]]:
    """The backbone's children in order, with the containers of a cut module opened up."""
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if any(cut.startswith(full + ".") for cut in cuts):
                walk(full + ".", child)
            else:
                out.append((full, child))

    walk("", backbone)
    return out


StagesOf = Callable[[nn.Module], Stages]
