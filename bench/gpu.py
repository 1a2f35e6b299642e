"""Fine-tuning ResNet-50 on a GPU: 20 epochs over 5216 images at 224 px through cxrlab's fit
loop, with its CUDA fast paths (bf16 autocast, channels_last, batches from the decoded cache
augmented on the GPU). Random weights: speed does not depend on their values. Goal: <= 30 s
of training (the study: 1096 s for the same work).

The data is a synthetic .npz of uint8 images with the Kermany training split's size (5216
train, plus val and test splits as cxrlab would hold out), or --data. The figure is the
run's train_seconds (every epoch's train and val passes); the wall time, which adds loading,
checkpoints and scoring the test split, is printed beside it.

    python bench/gpu.py [--epochs 20] [--batch-size 256] [--compile] [--ranks N]
    python bench/gpu.py --dry-run    # the same path on the CPU in seconds (64 images, 32 px, 1 epoch),
                                     # one process and then two under torchrun (gloo)

``--ranks N`` runs the same fit as one DDP run of N processes under torchrun (one GPU each;
on the CPU, gloo), through the command line a user types.

Not measured yet: the machines this was written on have no GPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import benchlib
from cxrlab.core.paths import cache_root
from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.records import load_run

GOAL = 30.0


def synthetic_npz(n_train: int, size: int, cache_dir: str | None = None, seed: int = 0) -> Path:
    """A MedMNIST-style .npz of random images: ``n_train`` train, 10% as many val, 12% test.

    Kept in the cache folder under a fixed name, so that its decoded cache is built once."""
    path = cache_root(cache_dir) / "bench" / f"synthetic-{n_train}-{size}-{seed}.npz"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    counts = {"train": n_train, "val": max(2, n_train // 10), "test": max(2, n_train * 12 // 100)}
    arrays = {}
    for split, n in counts.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(n) % 2  # both classes in every split
    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_name(f"{path.stem}.building.npz")
    np.savez(building, **arrays)
    building.rename(path)
    return path


def fit_distributed(config: TrainConfig, ranks: int) -> Path:
    """The run as ``torchrun --nproc_per_node RANKS -m cxrlab train ... --distributed``."""
    flags = []
    for key, value in config.model_dump(exclude_defaults=True).items():
        if isinstance(value, bool):
            flags.append(f"--{key.replace('_', '-')}" if value else f"--no-{key.replace('_', '-')}")
        else:
            flags += [f"--{key.replace('_', '-')}", str(value)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command += ["-m", "cxrlab", "train", *flags, "--distributed", "--name", "ddp", "--quiet"]
    subprocess.run(command, check=True)
    return Path(config.out) / "ddp"


def measure(args) -> dict:
    data = args.data or str(synthetic_npz(args.images, args.image_size, args.cache_dir))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU"
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-gpu-") as out:
        config = TrainConfig(
            data=data,
            model=args.model,
            mode="finetune",
            weights="none",
            epochs=args.epochs,
            batch_size=args.batch_size,
            image_size=args.image_size,
            device=device,
            compile=args.compile,
            cache_dir=args.cache_dir,
            out=out,
        )
        tick = time.perf_counter()
        # Epoch lines go to stderr.
        run_dir = fit_distributed(config, args.ranks) if args.ranks > 1 else fit(config, show_progress=False)
        wall = time.perf_counter() - tick
        run = load_run(run_dir)
    train_seconds = run.scores.train_seconds
    environment = run.config.environment
    line = (
        f"{'dry run: ' if args.dry_run else ''}{args.model} fine-tune, {args.epochs} epochs x "
        f"{run.scores.n_train} images at {args.image_size} px, batch {args.batch_size}, "
        f"{'bf16 autocast + channels_last' if device.startswith('cuda') else 'fp32'}"
        f"{' + compile' if args.compile else ''} on {name}"
        f"{f' x {args.ranks} ranks (DDP)' if args.ranks > 1 else ''}, wall {wall:.1f} s "
        f"(goal <= {GOAL:g} s, study 1096 s): {train_seconds:.1f} s"
    )
    return {
        "line": line,
        "value": train_seconds,
        "goal": GOAL,
        "met": train_seconds <= GOAL,
        "wall_seconds": wall,
        "device_name": name,
        "epoch_seconds": [row.seconds for row in run.epochs],
        "n_train": run.scores.n_train,
        "environment": environment,
        "ranks": args.ranks,
        "distributed": run.scores.distributed.model_dump() if run.scores.distributed else None,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="a dataset root or .npz (default: synthetic)")
    p.add_argument("--images", type=int, default=5216, help="synthetic train images (default: %(default)s)")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when present)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (cxrlab --compile)")
    p.add_argument("--dry-run", action="store_true", help="64 images at 32 px, 1 epoch, batch 16, on one CPU thread")
    p.add_argument("--ranks", type=int, default=1, help="processes of one DDP run under torchrun (default: 1)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--results", default=str(benchlib.RESULTS_DIR))
    args = p.parse_args(argv)
    if args.dry_run:
        args.images, args.image_size, args.epochs, args.batch_size, args.device = 64, 32, 1, 16, "cpu"
        torch.set_num_threads(1)
        single = measure(args)
        args.ranks = 2  # the distributed path too: process group, shards, buffer sync, weight check
        record = measure(args)
        record["single_process"] = {k: single[k] for k in ("value", "wall_seconds")}
        if not (record["distributed"] or {}).get("ranks_identical"):
            raise SystemExit("dry run: the two ranks ended with different weights")
    else:
        record = measure(args)
    return benchlib.finish("gpu_dry_run" if args.dry_run else "gpu", record.pop("line"), record, args)


if __name__ == "__main__":
    main(sys.argv[1:])
