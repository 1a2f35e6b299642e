"""Do channels_last, torch.compile and a large evaluation batch pay on this machine? Each
measured against cxrlab's plain path, side by side: training images/s through ``fit``
(fine-tune, epoch times) and inference images/s through ``predict_logits`` (evaluation's and
the frozen features' path, under inference_mode) at batch 256, cxrlab's default, and 32.

cxrlab's defaults: channels_last on for CUDA only (TrainConfig.channels_last None), compile
off (--compile), evaluation batch 256 (TrainConfig.eval_batch_size). With --compile the compiled variants are measured too; their first epoch
holds the compilation, so their rate is taken over the later epochs and the compile time is
reported beside it (use --epochs 3 or more).

    python bench/fast_paths.py [--model efficientnet_lite0] [--subset 320] [--image-size 96] [--epochs 2] [--compile]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

import benchlib
from benchlib import alternate, cxrlab_run, eprint, median, pair_ratios
from cxrlab.data.dataset import Dataset
from cxrlab.models.registry import build_model
from cxrlab.models.weights import load_weights
from cxrlab.training.predict import predict_logits


def train_rate(result: dict, skip_first: bool) -> float:
    epochs = result["epoch_seconds"][1:] if skip_first and len(result["epoch_seconds"]) > 1 else result["epoch_seconds"]
    return result["train_images_per_epoch"] * len(epochs) / sum(epochs)


def inference(data: Dataset, model_name: str, weights: str, channels_last: bool, batch_size: int) -> dict:
    """Images/s of ``predict_logits`` over every image, the model as ``fit`` leaves it."""
    model = build_model(model_name, num_classes=len(data.classes))
    load_weights(model, model_name, weights)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    indices = torch.arange(len(data.paths)).numpy()
    predict_logits(model, data.images, indices[:batch_size], torch.device("cpu"), batch_size=batch_size)
    tick = time.perf_counter()
    predict_logits(model, data.images, indices, torch.device("cpu"), batch_size=batch_size)
    seconds = time.perf_counter() - tick
    return {"seconds": seconds, "images_per_second": len(indices) / seconds}


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    root = benchlib.subset_root(args.data, args.subset, args.cache_dir)
    data, _ = benchlib.prepared_dataset(root, args.image_size, args.cache_dir)
    benchlib.warm_up(args.image_size, args.weights)
    variants = {"plain": dict(channels_last=False), "channels_last": dict(channels_last=True)}
    if args.compile:
        variants.update(
            {
                "compile": dict(channels_last=False, compile=True),
                "compile+channels_last": dict(channels_last=True, compile=True),
            }
        )
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-runs-") as out:

        def train(options: dict):
            return lambda: cxrlab_run(
                root,
                "finetune",
                epochs=args.epochs,
                image_size=args.image_size,
                batch_size=args.batch_size,
                weights=args.weights,
                cache_dir=args.cache_dir,
                out=Path(out),
                model=args.model,
                **options,
            )

        eprint("training (fit, finetune):")
        trained = alternate({name: train(options) for name, options in variants.items()}, args.repeats, eprint)
    eprint("inference (predict_logits):")
    small = args.small_eval_batch_size
    inference_variants = {
        "plain": (False, args.eval_batch_size),
        "channels_last": (True, args.eval_batch_size),
        f"batch {small}": (False, small),
        f"channels_last+batch {small}": (True, small),
    }
    inferred = alternate(
        {
            name: (lambda cl=cl, batch=batch: inference(data, args.model, args.weights, cl, batch))
            for name, (cl, batch) in inference_variants.items()
        },
        args.repeats,
        eprint,
    )

    skip_first = args.compile  # compiled variants compile in epoch 1; compare every variant on the same epochs
    train_rates = {name: [train_rate(r, skip_first) for r in runs] for name, runs in trained.items()}
    train_speedup = {name: median(pair_ratios(rates, train_rates["plain"])) for name, rates in train_rates.items()}
    infer_rates = {name: [r["images_per_second"] for r in runs] for name, runs in inferred.items()}
    infer_speedup = {name: median(pair_ratios(rates, infer_rates["plain"])) for name, rates in infer_rates.items()}
    compile_seconds = {
        name: median(
            [r["epoch_seconds"][0] - sum(r["epoch_seconds"][1:]) / max(1, len(r["epoch_seconds"]) - 1) for r in runs]
        )
        for name, runs in trained.items()
        if "compile" in name
    }
    compiled = [
        f"{name} training {train_speedup[name]:.2f}x (+{seconds:.0f} s to compile); "
        for name, seconds in compile_seconds.items()
    ]
    line = (
        f"fast paths against plain fp32 NCHW, {args.model} at {args.image_size} px, {args.threads} CPU thread(s): "
        f"{''.join(compiled)}inference at batch {small} instead of {args.eval_batch_size} "
        f"{infer_speedup[f'batch {small}']:.2f}x, channels_last inference {infer_speedup['channels_last']:.2f}x, "
        f"both {infer_speedup[f'channels_last+batch {small}']:.2f}x; "
        f"channels_last training {train_speedup['channels_last']:.2f}x"
    )
    return {
        "line": line,
        "value": train_speedup["channels_last"],
        "train_speedup": train_speedup,
        "inference_speedup": infer_speedup,
        "train_images_per_second": train_rates,
        "inference_images_per_second": infer_rates,
        "compile_seconds": compile_seconds,
        "runs": {"train": trained, "inference": inferred},
    }


def main(argv: list[str] | None = None) -> dict:
    p = benchlib.parser(__doc__.splitlines()[0], subset=320, image_size=96, epochs=2)
    p.add_argument("--model", default=benchlib.MODEL, help="the network (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="measure torch.compile too (minutes to compile here)")
    p.add_argument(
        "--eval-batch-size", type=int, default=256, help="the large evaluation batch (cxrlab's default on CUDA)"
    )
    p.add_argument(
        "--small-eval-batch-size",
        type=int,
        default=32,
        help="the small evaluation batch measured beside it (cxrlab's default on CPU)",
    )
    args = p.parse_args(argv)
    record = measure(args)
    return benchlib.finish("fast_paths", record.pop("line"), record, args)


if __name__ == "__main__":
    main(sys.argv[1:])
