"""cxrlab ``frozen`` against the tutorial's fixed feature extractor: same model, weights,
images (cxrlab's train and val splits), batch and image size, the same number of epochs.

The tutorial runs the frozen network forward on every image every epoch and decodes every
JPEG every epoch; cxrlab computes the pooled features once, from the decoded cache. Goal:
>= 10x. The tutorial side may run fewer epochs (--tutorial-epochs) and is then scaled to
--epochs per epoch (its epochs all do the same work); the output says so.

    python bench/frozen_speedup.py [--subset 1000] [--image-size 96] [--epochs 20] [--tutorial-epochs 3]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

import benchlib
import tutorial
from benchlib import MODEL, alternate, channels_last, cxrlab_run, eprint, median, pair_ratios

GOAL = 10.0


def scaled_tutorial_seconds(result: dict, epochs: int) -> float:
    """The tutorial's wall time for ``epochs``: its setup plus its mean epoch times ``epochs``."""
    measured = result["epoch_seconds"]
    setup = result["wall_seconds"] - sum(measured)
    return setup + sum(measured) / len(measured) * epochs


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    tutorial_epochs = min(args.tutorial_epochs or args.epochs, args.epochs)
    root = benchlib.subset_root(args.data, args.subset, args.cache_dir)
    data, _ = benchlib.prepared_dataset(root, args.image_size, args.cache_dir)
    decode = benchlib.decode_seconds(root, args.image_size) if args.time_decode else None
    eprint(
        f"{len(data.paths)} images at {args.image_size} px ({data.count('train')} train, {data.count('val')} val)"
        + (f"; decoding them once takes {decode:.1f} s" if decode is not None else "")
    )
    benchlib.warm_up(args.image_size, args.weights)
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-") as scratch:
        folder = benchlib.split_folders(data, Path(scratch) / "imagefolder")
        runs = Path(scratch) / "runs"
        sides = {
            "cxrlab": lambda: cxrlab_run(
                root,
                "frozen",
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
                fixed_feature_extractor=True,
                epochs=tutorial_epochs,
                image_size=args.image_size,
                batch_size=args.batch_size,
                weights=args.weights,
                workers=args.workers,
            ),
        }
        results = alternate(sides, args.repeats, eprint)
    tutorial_seconds = [scaled_tutorial_seconds(r, args.epochs) for r in results["tutorial"]]
    cxrlab_seconds = [r["wall_seconds"] for r in results["cxrlab"]]
    ratios = pair_ratios(tutorial_seconds, cxrlab_seconds)
    figure = median(ratios)
    scaled = (
        f", tutorial measured on {tutorial_epochs} epochs and scaled to {args.epochs}"
        if tutorial_epochs < args.epochs
        else ""
    )
    with_decode = (
        median(pair_ratios(tutorial_seconds, [s + decode for s in cxrlab_seconds])) if decode is not None else None
    )
    line = (
        f"frozen speed-up over the tutorial's fixed feature extractor, {MODEL}, {args.epochs} epochs, "
        f"{data.count('train')} train images at {args.image_size} px, {args.workers} loader workers{scaled} "
        f"(goal >= {GOAL:g}x): {figure:.1f}x"
    )
    return {
        "line": line,
        "value": figure,
        "goal": GOAL,
        "met": figure >= GOAL,
        "pair_ratios": ratios,
        "tutorial_epochs": tutorial_epochs,
        "tutorial_seconds_scaled": tutorial_seconds,
        "cxrlab_seconds": cxrlab_seconds,
        "decode_seconds": decode,
        "speedup_with_decode": with_decode,
        "runs": results,
    }


def main(argv: list[str] | None = None) -> dict:
    p = benchlib.parser(__doc__.splitlines()[0], subset=1000, image_size=96, epochs=20)
    p.add_argument("--tutorial-epochs", type=int, default=3, help="epochs run on the tutorial side (0: --epochs)")
    p.add_argument("--workers", type=int, default=tutorial.TUTORIAL_WORKERS, help="tutorial DataLoader workers")
    p.add_argument(
        "--no-decode-time",
        dest="time_decode",
        action="store_false",
        help="skip timing the one-time decode into the cache",
    )
    args = p.parse_args(argv)
    record = measure(args)
    return benchlib.finish("frozen_speedup", record.pop("line"), record, args)


if __name__ == "__main__":
    main(sys.argv[1:])
