"""Optimiser steps: torch's default implementation on the CPU against the fused one.

On a CPU, torch's optimisers default to their single-tensor implementation: a Python loop
over the parameters, a few small kernels each. ``fused=True`` updates every parameter in one
kernel per tensor. This script times ``optimizer.step()`` both ways, alternating, on the
parameters of cxrlab's networks with random gradients, for each of cxrlab's optimisers (built
by ``make_optimizer``'s parameter groups, weight decay on weights only), and checks that the
two end at the same weights.

    python bench/optimizer_step.py [--steps 30] [--repeats 3] [--threads 2]

Prints the per-step time ratio (default / fused) for each network and optimiser.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import benchlib
from cxrlab.models.registry import build_model
from cxrlab.training.config import TrainConfig
from cxrlab.training.optim import OPTIMIZERS, parameter_groups
from cxrlab.training.phases import plan_phases

MODELS = ("resnet18", "efficientnet_lite0")


def timed_steps(
    model: torch.nn.Module, model_name: str, optimizer_name: str, fused: bool, steps: int
) -> tuple[float, torch.Tensor]:
    """Median seconds of one ``step()``, and the weights after ``steps`` steps (same gradients
    whatever the implementation: drawn from a fixed seed)."""
    config = TrainConfig(data=".", model=model_name, mode="finetune", optimizer=optimizer_name).resolved()
    phase = next(p for p in plan_phases(config) if not p.head_only)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = OPTIMIZERS[optimizer_name](parameter_groups(config, model, phase), phase.lr, config, fused=fused)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=generator) * 1e-2
        tick = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - tick)
    weights = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    model.load_state_dict(start)
    return statistics.median(times[2:]), weights


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--results", default=str(benchlib.RESULTS_DIR))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    figures: dict[str, dict] = {}
    for model_name in MODELS:
        model = build_model(model_name, num_classes=2)
        for optimizer_name in OPTIMIZERS:
            seconds: dict[bool, list[float]] = {False: [], True: []}
            weights: dict[bool, torch.Tensor] = {}
            for _ in range(args.repeats):  # alternated: default, fused, default, fused ...
                for fused in (False, True):
                    step, weights[fused] = timed_steps(model, model_name, optimizer_name, fused, args.steps)
                    seconds[fused].append(step)
            default, fused_step = statistics.median(seconds[False]), statistics.median(seconds[True])
            figures[f"{model_name}/{optimizer_name}"] = {
                "default_ms": 1000 * default,
                "fused_ms": 1000 * fused_step,
                "ratio": default / fused_step,
                "max_weight_difference": float((weights[False] - weights[True]).abs().max()),
                "parameters": sum(p.numel() for p in model.parameters()),
            }
            benchlib.eprint(f"{model_name} {optimizer_name}: {figures[f'{model_name}/{optimizer_name}']}")
    line = ", ".join(
        f"{name} {f['default_ms']:.1f}/{f['fused_ms']:.1f} ms = {f['ratio']:.2f}x" for name, f in figures.items()
    )
    args.image_size = args.epochs = args.batch_size = args.subset = None
    return benchlib.finish("optimizer_step", line, {"figures": figures, "steps": args.steps}, args)


if __name__ == "__main__":
    main(sys.argv[1:])
