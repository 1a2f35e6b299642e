"""Images per second delivered to the model, augmented, one training epoch at a time: cxrlab's
batches from the memory-mapped decoded cache (``batch_indices`` + ``image_batches`` +
``augment_batch``, in the training process, no workers) against the tutorial's
``ImageFolder`` + ``DataLoader`` (per-image PIL decode and transforms in 4 worker
processes, started again every epoch as the tutorial's loaders do). Goal: >= 10x.

    python bench/input_pipeline.py [--subset 0] [--image-size 224] [--epochs 1]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

import benchlib
import tutorial
from benchlib import alternate, eprint, median, pair_ratios
from cxrlab.data.batches import batch_indices, image_batches
from cxrlab.data.dataset import Dataset
from cxrlab.data.transforms import AUGMENT_LEVELS, augment_batch, to_float

GOAL = 10.0


def cxrlab_epochs(data: Dataset, batch_size: int, epochs: int, seed: int = 0) -> dict:
    """What ``train_network_epoch`` does before the model: shuffled batches read from the
    memory map, turned to float and augmented ("light", cxrlab's fine-tune default)."""
    generator = torch.Generator().manual_seed(seed)
    device = torch.device("cpu")
    images = 0
    tick, cpu = time.perf_counter(), benchlib.cpu_seconds()
    for _ in range(epochs):
        batches = batch_indices(data.indices("train"), batch_size, shuffle=True, generator=generator, drop_last=True)
        for pixels, _targets, _ in image_batches(data.images, data.labels, batches, device):
            batch = augment_batch(to_float(pixels), generator, **AUGMENT_LEVELS["light"])
            images += batch.shape[0]
    seconds, cpu = time.perf_counter() - tick, benchlib.cpu_seconds() - cpu
    return {
        "seconds": seconds,
        "images": images,
        "images_per_second": images / seconds,
        "cpu_ms_per_image": 1000 * cpu / images,
    }


def tutorial_epochs(folder: Path, image_size: int, batch_size: int, epochs: int, workers: int) -> dict:
    """The tutorial's train loader iterated ``epochs`` times, the batches handed to nothing."""
    loader = tutorial.dataloaders(folder, image_size, batch_size, workers)["train"]
    images = 0
    tick, cpu = time.perf_counter(), benchlib.cpu_seconds()
    for _ in range(epochs):
        for inputs, _labels in loader:
            images += inputs.shape[0]
    seconds, cpu = time.perf_counter() - tick, benchlib.cpu_seconds() - cpu
    return {
        "seconds": seconds,
        "images": images,
        "images_per_second": images / seconds,
        "cpu_ms_per_image": 1000 * cpu / images,
    }


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    root = benchlib.subset_root(args.data, args.subset, args.cache_dir)
    data, _ = benchlib.prepared_dataset(root, args.image_size, args.cache_dir)
    eprint(f"{data.count('train')} train images at {args.image_size} px")
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-") as scratch:
        folder = benchlib.split_folders(data, Path(scratch) / "imagefolder")
        # Untimed first pass of each: page cache and first-call costs are not what is measured.
        cxrlab_epochs(data, args.batch_size, 1)
        sides = {
            "cxrlab": lambda: cxrlab_epochs(data, args.batch_size, args.epochs),
            "tutorial": lambda: tutorial_epochs(folder, args.image_size, args.batch_size, args.epochs, args.workers),
        }
        results = alternate(sides, args.repeats, eprint)
    ratios = pair_ratios(
        [r["images_per_second"] for r in results["cxrlab"]], [r["images_per_second"] for r in results["tutorial"]]
    )
    figure = median(ratios)
    rates = {k: median([r["images_per_second"] for r in v]) for k, v in results.items()}
    # CPU time per image: what each pipeline costs whatever share of the machine it was given.
    cpu_ratio = median(
        pair_ratios(
            [r["cpu_ms_per_image"] for r in results["tutorial"]], [r["cpu_ms_per_image"] for r in results["cxrlab"]]
        )
    )
    line = (
        f"input pipeline, augmented training images/s delivered, cxrlab cache {rates['cxrlab']:.0f} vs "
        f"ImageFolder+DataLoader ({args.workers} workers) {rates['tutorial']:.0f}, {data.count('train')} images at "
        f"{args.image_size} px, batch {args.batch_size}, {args.threads} thread(s); CPU time per image {cpu_ratio:.1f}x "
        f"less (goal >= {GOAL:g}x): {figure:.1f}x"
    )
    return {
        "line": line,
        "value": figure,
        "goal": GOAL,
        "met": figure >= GOAL,
        "pair_ratios": ratios,
        "images_per_second": rates,
        "cpu_ratio": cpu_ratio,
        "runs": results,
    }


def main(argv: list[str] | None = None) -> dict:
    p = benchlib.parser(__doc__.splitlines()[0], subset=0, image_size=224, epochs=1)
    p.add_argument("--workers", type=int, default=tutorial.TUTORIAL_WORKERS, help="tutorial DataLoader workers")
    args = p.parse_args(argv)
    record = measure(args)
    return benchlib.finish("input_pipeline", record.pop("line"), record, args)


if __name__ == "__main__":
    main(sys.argv[1:])
