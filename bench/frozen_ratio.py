"""Wall time of a cxrlab ``frozen`` run over a ``finetune`` run: same model, data and epochs.

The study's fixed feature extractor took 0.91 of its fine-tuning time because the frozen
backbone ran again every epoch; cxrlab runs it once and trains the head on cached features.
Goal: <= 0.10.

    python bench/frozen_ratio.py [--subset 320] [--image-size 64] [--epochs 20]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

import benchlib
from benchlib import MODEL, alternate, channels_last, cxrlab_run, eprint, median, pair_ratios

GOAL = 0.10


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    root = benchlib.subset_root(args.data, args.subset, args.cache_dir)
    data, decoded = benchlib.prepared_dataset(root, args.image_size, args.cache_dir)
    eprint(
        f"{len(data.paths)} images at {args.image_size} px ({data.count('train')} train); "
        f"{f'decoded in {decoded:.1f} s' if decoded else 'decoded cache found'}"
    )
    benchlib.warm_up(args.image_size, args.weights)
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-runs-") as out:

        def run(mode: str):
            return lambda: cxrlab_run(
                root,
                mode,
                epochs=args.epochs,
                image_size=args.image_size,
                batch_size=args.batch_size,
                weights=args.weights,
                cache_dir=args.cache_dir,
                out=Path(out),
                channels_last=channels_last(args),
            )

        results = alternate({"frozen": run("frozen"), "finetune": run("finetune")}, args.repeats, eprint)
    ratios = pair_ratios(
        [r["wall_seconds"] for r in results["frozen"]], [r["wall_seconds"] for r in results["finetune"]]
    )
    train_ratios = pair_ratios(
        [r["train_seconds"] for r in results["frozen"]], [r["train_seconds"] for r in results["finetune"]]
    )
    figure = median(ratios)
    frozen = results["frozen"][-1]
    line = (
        f"frozen/finetune wall-time ratio, {MODEL}, {args.epochs} epochs, {frozen['n_train']} train images at "
        f"{args.image_size} px (goal <= {GOAL}, study 0.91): {figure:.3f}"
    )
    return {
        "line": line,
        "value": figure,
        "goal": GOAL,
        "met": figure <= GOAL,
        "pair_ratios": ratios,
        "train_seconds_ratio": median(train_ratios),
        "runs": results,
    }


def main(argv: list[str] | None = None) -> dict:
    args = benchlib.parser(__doc__.splitlines()[0], subset=320, image_size=64, epochs=20).parse_args(argv)
    record = measure(args)
    return benchlib.finish("frozen_ratio", record.pop("line"), record, args)


if __name__ == "__main__":
    main(sys.argv[1:])
