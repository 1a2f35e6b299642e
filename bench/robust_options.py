"""What each robustness option costs in time: a gradual run with it over the same run without.

Options measured, each as one run beside the plain gradual run (same data, epochs, seed),
alternating: frozen BatchNorm statistics, a moving average of the weights (whose BatchNorm
statistics are re-estimated before each validation), WiSE-FT (11 mixtures scored on
validation at the end; with frozen statistics), intensity augmentation, and a labelled
target sample that chooses (the validation split reused as the sample here: the cost is an
extra pass over it per epoch). Then, on the finished plain run: adapting to the test images
(``bn``, ``prior``, ``bn+prior``) as seconds per image, and one training batch's intensity
augmentation over its framing augmentation.

    python bench/robust_options.py [--subset 320] [--image-size 64] [--epochs 2]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import benchlib
from benchlib import alternate, channels_last, cxrlab_run, eprint, median, pair_ratios
from cxrlab.data.transforms import AUGMENT_LEVELS, INTENSITY_LEVELS, augment_batch, intensity_batch
from cxrlab.evaluate.adapt import adapt_model
from cxrlab.training.records import load_run

OPTIONS = {
    "plain": {},
    "freeze_bn_stats": {"freeze_bn_stats": True},
    "ema": {"ema": 0.99},
    "wise": {"wise": True, "freeze_bn_stats": True},
    "intensity": {"intensity": "light"},
}


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    root = benchlib.subset_root(args.data, args.subset, args.cache_dir)
    data, _ = benchlib.prepared_dataset(root, args.image_size, args.cache_dir)
    eprint(f"{len(data.paths)} images at {args.image_size} px ({data.count('train')} train)")
    benchlib.warm_up(args.image_size, args.weights)
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-runs-") as out:
        options = {**OPTIONS, "target_val": {"target_val": str(_val_folder(data, Path(out) / "target"))}}
        options = {name: settings for name, settings in options.items() if name == "plain" or name in args.options}

        def run(settings: dict):
            return lambda: cxrlab_run(
                root,
                "gradual",
                epochs=args.epochs,
                head_epochs=args.head_epochs,
                image_size=args.image_size,
                batch_size=args.batch_size,
                weights=args.weights,
                cache_dir=args.cache_dir,
                out=Path(out),
                channels_last=channels_last(args),
                **settings,
            )

        results = alternate({name: run(settings) for name, settings in options.items()}, args.repeats, eprint)
        ratios = {
            name: median(
                pair_ratios([r["wall_seconds"] for r in results[name]], [r["wall_seconds"] for r in results["plain"]])
            )
            for name in options
            if name != "plain"
        }
        adaptation = _adaptation_seconds(load_run(results["plain"][-1]["run_dir"]), data)
    augmentation = _augmentation_ratio(args.image_size, args.batch_size)
    line = (
        "wall time over the plain gradual run: "
        + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items())
        + "; adaptation ms per image: "
        + ", ".join(f"{m} {1000 * s:.1f}" for m, s in adaptation.items())
        + f"; intensity/framing augmentation per batch {augmentation:.2f}x"
    )
    return {
        "line": line,
        "ratios": ratios,
        "adaptation_seconds_per_image": adaptation,
        "intensity_over_framing": augmentation,
        "runs": results,
    }


def _val_folder(data, dest: Path) -> Path:
    """The validation split as a folder of class folders (links), to stand in for a target sample."""
    for i in data.indices("val"):
        source = Path(data.paths[i])
        link = dest / data.classes[int(data.labels[i])] / source.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source.resolve())
    return dest


def _adaptation_seconds(run, data) -> dict[str, float]:
    """Seconds per image of adapting ``run``'s model to the test images, by method."""
    indices = data.indices("test")
    seconds = {}
    for method in ("bn", "prior", "bn+prior"):
        model = run.load_model()
        tick = time.perf_counter()
        adapt_model(run, model, data.images, indices, method, torch.device("cpu"), target="test", transductive=True)
        seconds[method] = (time.perf_counter() - tick) / len(indices)
    return seconds


def _augmentation_ratio(image_size: int, batch_size: int, repeats: int = 20) -> float:
    """Time of one batch's light intensity augmentation over its light framing augmentation."""
    images = torch.rand(batch_size, 1, image_size, image_size)
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"intensity": [], "framing": []}
    for _ in range(repeats):
        for name, step in (
            ("intensity", lambda: intensity_batch(images, generator, **INTENSITY_LEVELS["light"])),
            ("framing", lambda: augment_batch(images, generator, **AUGMENT_LEVELS["light"])),
        ):
            tick = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - tick)
    return float(np.median(times["intensity"]) / np.median(times["framing"]))


def main(argv: list[str] | None = None) -> dict:
    p = benchlib.parser(__doc__.splitlines()[0], subset=320, image_size=64, epochs=2, repeats=1)
    p.add_argument("--head-epochs", type=int, default=2)
    p.add_argument(
        "--options",
        type=lambda text: text.split(","),
        default=[*list(OPTIONS)[1:], "target_val"],
        help="comma-separated options to measure (default: all)",
    )
    args = p.parse_args(argv)
    record = measure(args)
    return benchlib.finish("robust_options", record.pop("line"), record, args)


if __name__ == "__main__":
    main(sys.argv[1:])
