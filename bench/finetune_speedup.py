"""Training images per second, fine-tuning: cxrlab's fit loop against the tutorial pipeline,
same model, weights, images, batch and image size. Goal: >= 1.5x on this CPU.

Both sides' epoch times hold one train pass and one val pass over the same images. With
--profile each side also runs a few instrumented steps that split a step into its parts
(the tutorial: waiting for the loader, whose workers decode and transform; cxrlab: reading
the batch from the memory-mapped cache, augmenting it) plus forward, backward and the
optimizer, and the tutorial's per-image decode and transform cost is timed in one process.

    python bench/finetune_speedup.py [--subset 320] [--image-size 96] [--epochs 2] [--profile]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import benchlib
import tutorial
from benchlib import MODEL, alternate, channels_last, cxrlab_run, eprint, median, pair_ratios
from cxrlab.data.batches import batch_indices, image_batches
from cxrlab.data.dataset import Dataset
from cxrlab.data.transforms import AUGMENT_LEVELS, augment_batch, to_float
from cxrlab.models.registry import build_model
from cxrlab.models.weights import load_weights
from cxrlab.training.config import TrainConfig
from cxrlab.training.optim import make_optimizer, make_scheduler
from cxrlab.training.phases import Phase

GOAL = 1.5


def images_per_second(result: dict) -> float:
    return result["train_images_per_epoch"] * len(result["epoch_seconds"]) / sum(result["epoch_seconds"])


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    root = benchlib.subset_root(args.data, args.subset, args.cache_dir)
    data, _ = benchlib.prepared_dataset(root, args.image_size, args.cache_dir)
    benchlib.warm_up(args.image_size, args.weights)
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-") as scratch:
        folder = benchlib.split_folders(data, Path(scratch) / "imagefolder")
        runs = Path(scratch) / "runs"
        sides = {
            "cxrlab": lambda: cxrlab_run(
                root,
                "finetune",
                epochs=args.epochs,
                image_size=args.image_size,
                batch_size=args.batch_size,
                weights=args.weights,
                cache_dir=args.cache_dir,
                out=runs,
                channels_last=channels_last(args),
            ),
            "tutorial": lambda: tutorial.run_tutorial(
                folder,
                fixed_feature_extractor=False,
                epochs=args.epochs,
                image_size=args.image_size,
                batch_size=args.batch_size,
                weights=args.weights,
                workers=args.workers,
            ),
        }
        results = alternate(sides, args.repeats, eprint)
        for side in results.values():
            for result in side:
                result["images_per_second"] = images_per_second(result)
        profile = None
        if args.profile:
            profile = {"cxrlab": profile_cxrlab(data, args), "tutorial": profile_tutorial(folder, args)}
            for name, parts in profile.items():
                eprint(f"  profile {name}: " + ", ".join(f"{k} {v:.0%}" for k, v in parts["share"].items()))
    ratios = pair_ratios(
        [r["images_per_second"] for r in results["cxrlab"]], [r["images_per_second"] for r in results["tutorial"]]
    )
    figure = median(ratios)
    cl = {"auto": "cxrlab default (channels_last on)", "on": "channels_last on", "off": "channels_last off"}[
        args.channels_last
    ]
    line = (
        f"fine-tune training images/s, cxrlab over the tutorial, {MODEL}, batch {args.batch_size}, "
        f"{args.image_size} px, {args.threads} thread(s), {args.workers} loader workers, {cl} "
        f"(goal >= {GOAL:g}x): {figure:.2f}x"
    )
    return {
        "line": line,
        "value": figure,
        "goal": GOAL,
        "met": figure >= GOAL,
        "pair_ratios": ratios,
        "images_per_second": {k: [r["images_per_second"] for r in v] for k, v in results.items()},
        "profile": profile,
        "runs": results,
    }


# --- where the time goes ---------------------------------------------------------------------


def _shares(seconds: dict[str, float]) -> dict[str, float]:
    total = sum(seconds.values())
    return {k: v / total for k, v in seconds.items()}


def profile_cxrlab(data: Dataset, args) -> dict:
    """The steps of cxrlab's ``train_network_epoch``, each part timed."""
    config = TrainConfig(
        data=str(data.location),
        model=MODEL,
        mode="finetune",
        image_size=args.image_size,
        batch_size=args.batch_size,
        weights=args.weights,
        channels_last=channels_last(args),
    ).resolved()
    use_channels_last = bool(config.channels_last)  # None means off on the CPU
    model = build_model(MODEL, num_classes=len(data.classes))
    load_weights(model, MODEL, config.weights)
    if use_channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model, Phase("network", config.epochs, config.lr, on_features=False))
    generator = torch.Generator().manual_seed(0)
    batches = batch_indices(
        data.indices("train"), config.batch_size, shuffle=True, generator=generator, drop_last=True
    )[: args.profile_steps]
    scheduler = make_scheduler(config, optimizer, len(batches), 1)
    seconds: dict[str, float] = defaultdict(float)
    model.train()
    stream = image_batches(data.images, data.labels, batches, torch.device("cpu"))
    for _ in batches:
        tick = time.perf_counter()
        pixels, targets, _ = next(stream)
        seconds["read batch (memory map)"] += time.perf_counter() - tick
        tick = time.perf_counter()
        images = augment_batch(to_float(pixels), generator, **AUGMENT_LEVELS[config.augment])
        if use_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        seconds["augment (batch, tensors)"] += time.perf_counter() - tick
        tick = time.perf_counter()
        loss = F.cross_entropy(model(images).float(), targets)
        seconds["forward"] += time.perf_counter() - tick
        tick = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        seconds["backward"] += time.perf_counter() - tick
        tick = time.perf_counter()
        optimizer.step()
        scheduler.step()
        loss.item()
        seconds["optimizer (AdamW)"] += time.perf_counter() - tick
    images = len(batches) * config.batch_size
    return {
        "steps": len(batches),
        "seconds": dict(seconds),
        "share": _shares(seconds),
        "ms_per_image": {k: 1000 * v / images for k, v in seconds.items()},
    }


def profile_tutorial(folder: Path, args) -> dict:
    """The tutorial's train steps, each part timed, and its per-image decode and transform cost."""
    torch.use_deterministic_algorithms(False)
    loaders = tutorial.dataloaders(folder, args.image_size, args.batch_size, args.workers, MODEL)
    model, optimizer, _ = tutorial.tutorial_model(MODEL, args.weights, len(loaders["train"].dataset.classes), False)
    criterion = torch.nn.CrossEntropyLoss()
    steps = min(args.profile_steps, len(loaders["train"]))
    seconds: dict[str, float] = defaultdict(float)
    model.train()
    tick = time.perf_counter()
    stream = iter(loaders["train"])
    seconds["start loader workers"] += time.perf_counter() - tick
    for _ in range(steps):
        tick = time.perf_counter()
        inputs, labels = next(stream)
        seconds["wait for loader (decode + transforms)"] += time.perf_counter() - tick
        tick = time.perf_counter()
        loss = criterion(model(inputs), labels)
        seconds["forward"] += time.perf_counter() - tick
        tick = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        seconds["backward"] += time.perf_counter() - tick
        tick = time.perf_counter()
        optimizer.step()
        loss.item()
        seconds["optimizer (SGD)"] += time.perf_counter() - tick
    del stream
    images = steps * args.batch_size
    return {
        "steps": steps,
        "seconds": dict(seconds),
        "share": _shares(seconds),
        "ms_per_image": {k: 1000 * v / images for k, v in seconds.items()},
        "worker_ms_per_image": per_image_cost(loaders["train"].dataset, args.profile_steps * args.batch_size),
    }


def per_image_cost(dataset, n: int) -> dict[str, float]:
    """Milliseconds one loader worker spends per image: PIL decode, then the transforms."""
    order = np.random.default_rng(0).permutation(len(dataset.samples))[:n]
    decode = transform = 0.0
    for i in order:
        path, _ = dataset.samples[i]
        tick = time.perf_counter()
        image = dataset.loader(path)
        decode += time.perf_counter() - tick
        tick = time.perf_counter()
        dataset.transform(image)
        transform += time.perf_counter() - tick
    return {"decode (PIL)": 1000 * decode / len(order), "transforms": 1000 * transform / len(order)}


def main(argv: list[str] | None = None) -> dict:
    p = benchlib.parser(__doc__.splitlines()[0], subset=320, image_size=96, epochs=2)
    p.add_argument("--workers", type=int, default=tutorial.TUTORIAL_WORKERS, help="tutorial DataLoader workers")
    p.add_argument("--profile", action="store_true", help="also split a few steps of each side into their parts")
    p.add_argument("--profile-steps", type=int, default=6)
    args = p.parse_args(argv)
    record = measure(args)
    return benchlib.finish("finetune_speedup", record.pop("line"), record, args)


if __name__ == "__main__":
    main(sys.argv[1:])
