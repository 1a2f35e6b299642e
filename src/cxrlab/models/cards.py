"""Model cards for ``cxrlab models`` (the study's task A): size, cost and availability."""

from __future__ import annotations

import time

import torch

from cxrlab.models.registry import MODELS, build_model, model_entry
from cxrlab.models.weights import pretrained_available, torchvision_weights


def count_flops(model: torch.nn.Module, image_size: int) -> int:
    """Floating-point operations of one forward pass on one image (a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, image_size, image_size))
    return int(counter.get_total_flops())


def measure_throughput(model: torch.nn.Module, image_size: int, batch_size: int = 16, seconds: float = 2.0) -> float:
    """Inference images per second on this machine's CPU (after two warm-up batches)."""
    model.eval()
    batch = torch.rand(batch_size, 1, image_size, image_size)
    with torch.inference_mode():
        for _ in range(2):
            model(batch)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(batch)
            done += batch_size
    return done / (time.perf_counter() - start)


def imagenet_top1(name: str) -> float | None:
    entry = model_entry(name)
    if entry.torchvision_weights:
        metrics = torchvision_weights(entry).meta.get("_metrics", {}).get("ImageNet-1K", {})
        return metrics.get("acc@1")
    return entry.imagenet_top1


def model_card(name: str, image_size: int = 224, num_classes: int = 2, measure: bool = False) -> dict:
    entry = model_entry(name)
    model = build_model(name, num_classes=num_classes)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    card = {
        "model": name,
        "description": entry.description,
        "source": entry.source,
        "params": total,
        "trainable_finetune": total,
        "trainable_frozen": head,
        "feature_dim": model.head.in_features,
        "gflops": round(count_flops(model, image_size) / 1e9, 3),
        "image_size": image_size,
        "imagenet_top1": imagenet_top1(name),
        "pretrained": entry.pretrained,  # whether the model has pretrained weights at all
        "pretrained_weights": "n/a (from scratch)"
        if not entry.pretrained
        else ("available" if pretrained_available(name) else "not on this machine"),
        "images_per_second": round(measure_throughput(model, image_size), 1) if measure else None,
    }
    return card


def model_cards(names: list[str] | None = None, image_size: int = 224, measure: bool = False) -> list[dict]:
    return [model_card(n, image_size=image_size, measure=measure) for n in (names or list(MODELS))]
