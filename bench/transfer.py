"""What transferred, at what cost: a freeze-depth sweep against one fine-tune, and CKA's cost.

1. Freeze depth. Every ``--freeze-blocks K`` from 0 (the stem frozen) to the last stage (the
   whole backbone frozen) of EfficientNet-Lite0, without augmentation so that the frozen
   bottom's output is computed once and cached, each run from a cold cache; against one
   fine-tune of the same epochs and settings with nothing frozen. The figure is the sweep's
   summed training time (epochs plus computing the cached activations) over the fine-tune's.
   Goal: <= 1.5. The sides alternate (fine-tune, sweep, fine-tune, ...).
2. CKA. ``cxrlab similarity`` in a child process with ``--cka-threads`` torch threads: two
   Lite0 networks (the ImageNet weights and the fine-tune of part 1) on ``--probes`` images
   of the validation split of ``--cka-data`` at the same image size: the seconds CKA took,
   the command's wall time and its peak RSS. Goals: under 60 s and 2 GB.

The load average is recorded beside every measurement: the machine is shared.

    python bench/transfer.py [--subset 600] [--image-size 128] [--epochs 3] [--probes 500]
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
from pathlib import Path

import torch

import benchlib
from benchlib import MODEL, channels_last, cxrlab_run, eprint
from memory import run_child

SWEEP_GOAL = 1.5
CKA_SECONDS_GOAL = 60.0
CKA_MB_GOAL = 2048.0


def sweep_and_finetune(args, root: Path, out: Path) -> dict:
    from cxrlab.models.registry import backbone_stages, build_model

    depths = args.depths or list(range(backbone_stages(build_model(MODEL), MODEL).count + 1))

    def run(**options) -> dict:
        load, cpu = os.getloadavg()[0], benchlib.cpu_seconds()
        result = cxrlab_run(
            root,
            "finetune",
            epochs=args.epochs,
            image_size=args.image_size,
            batch_size=args.batch_size,
            weights=args.weights,
            cache_dir=args.cache_dir,
            out=out,
            augment="none",
            channels_last=channels_last(args),
            **options,
        )
        # CPU seconds beside wall seconds: on a shared machine they say what the run itself cost.
        return {**result, "load_average": load, "cpu_seconds": benchlib.cpu_seconds() - cpu}

    def sweep() -> dict:
        runs = {k: run(freeze_blocks=k) for k in depths}
        return {
            "runs": runs,
            "train_seconds": sum(r["train_seconds"] for r in runs.values()),
            "wall_seconds": sum(r["wall_seconds"] for r in runs.values()),
            "cpu_seconds": sum(r["cpu_seconds"] for r in runs.values()),
            "load_average": [r["load_average"] for r in runs.values()],
        }

    results = benchlib.alternate({"finetune": run, "sweep": sweep}, args.repeats, eprint)
    ratios = benchlib.pair_ratios(
        [r["train_seconds"] for r in results["sweep"]], [r["train_seconds"] for r in results["finetune"]]
    )
    wall_ratios = benchlib.pair_ratios(
        [r["wall_seconds"] for r in results["sweep"]], [r["wall_seconds"] for r in results["finetune"]]
    )
    cpu_ratios = benchlib.pair_ratios(
        [r["cpu_seconds"] for r in results["sweep"]], [r["cpu_seconds"] for r in results["finetune"]]
    )
    return {
        "depths": depths,
        "results": results,
        "ratios": ratios,
        "wall_ratios": wall_ratios,
        "cpu_ratios": cpu_ratios,
    }


def cka_cost(args, finetuned: str, out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.cka_threads))
    if args.cache_dir:
        env["CXRLAB_CACHE"] = args.cache_dir
    folder = out / "similarity"
    command = [sys.executable, "-m", "cxrlab", "similarity", f"{MODEL}@{args.weights}", finetuned]
    command += ["--data", args.cka_data, "--probes", str(args.probes), "--split", args.cka_split]
    command += ["--image-size", str(args.image_size), "--out", str(folder), "--json"]
    load, cpu = os.getloadavg()[0], _children_cpu()
    child = run_child(command, env)
    record = json.loads((folder / "similarity.json").read_text())["comparisons"][0]
    return {
        "cka_seconds": record["seconds"],
        "wall_seconds": child["seconds"],
        # CPU seconds of the whole command: what it would take on a core of its own.
        "cpu_seconds": _children_cpu() - cpu,
        "peak_rss_mb": child["peak_rss_mb"],
        "probes": record["probes"],
        "cka": dict(zip(record["layers"], record["cka"])),
        "load_average": load,
        "threads": args.cka_threads,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    root = benchlib.subset_root(args.data, args.subset, args.cache_dir)
    data, _ = benchlib.prepared_dataset(root, args.image_size, args.cache_dir)
    benchlib.prepared_dataset(Path(args.cka_data), args.image_size, args.cache_dir)
    eprint(f"{len(data.paths)} images at {args.image_size} px ({data.count('train')} train)")
    if args.cka_only:
        with tempfile.TemporaryDirectory(prefix="cxrlab-bench-cka-") as scratch:
            cka = cka_cost(args, args.cka_only, Path(scratch))
        line = (
            f"CKA on {cka['probes']} probes at {args.image_size} px, {cka['threads']} threads: {cka['cka_seconds']:.1f} s "
            f"({cka['wall_seconds']:.1f} s wall, {cka['cpu_seconds']:.1f} CPU-s), peak RSS {cka['peak_rss_mb']:.0f} MB"
        )
        met = cka["wall_seconds"] < CKA_SECONDS_GOAL and cka["peak_rss_mb"] < CKA_MB_GOAL
        return {"line": line, "cka": cka, "cka_met": met}
    benchlib.warm_up(args.image_size, args.weights)
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-runs-") as scratch:
        sweep = sweep_and_finetune(args, root, Path(scratch))
        finetuned = sweep["results"]["finetune"][-1]["run_dir"]
        cka = cka_cost(args, finetuned, Path(scratch))
    figure = benchlib.median(sweep["ratios"])
    n_train = sweep["results"]["finetune"][-1]["n_train"]
    line = (
        f"freeze-depth sweep K={','.join(map(str, sweep['depths']))} over one fine-tune, {MODEL}, {args.epochs} epochs, "
        f"{n_train} train images at {args.image_size} px (goal <= {SWEEP_GOAL}): {figure:.2f}; "
        f"CKA on {cka['probes']} probes: {cka['cka_seconds']:.1f} s ({cka['wall_seconds']:.1f} s wall, goal < "
        f"{CKA_SECONDS_GOAL:.0f}), peak RSS {cka['peak_rss_mb']:.0f} MB (goal < {CKA_MB_GOAL:.0f})"
    )
    return {
        "line": line,
        "value": figure,
        "goal": SWEEP_GOAL,
        "met": figure <= SWEEP_GOAL,
        "sweep": sweep,
        "cka": cka,
        "cka_met": cka["wall_seconds"] < CKA_SECONDS_GOAL and cka["peak_rss_mb"] < CKA_MB_GOAL,
    }


def main(argv: list[str] | None = None) -> dict:
    p = benchlib.parser(__doc__.splitlines()[0], subset=600, image_size=128, epochs=3, repeats=1)
    p.add_argument("--probes", type=int, default=500, help="CKA probe images (default: %(default)s)")
    p.add_argument("--cka-data", default=str(benchlib.DEFAULT_DATA), help="probe images' data (default: %(default)s)")
    p.add_argument("--cka-split", default="val", help="probe images' split (default: %(default)s)")
    p.add_argument(
        "--depths",
        type=lambda text: [int(k) for k in text.split(",")],
        default=None,
        help="freeze depths of the sweep, e.g. 0,3,7 (default: every one, 0 to the last stage)",
    )
    p.add_argument(
        "--cka-only",
        default=None,
        metavar="NETWORK",
        help="measure CKA alone, against this run directory or MODEL@WEIGHTS (default: the sweep's fine-tune)",
    )
    p.add_argument("--cka-threads", type=int, default=2, help="torch threads of the CKA child (default: %(default)s)")
    args = p.parse_args(argv)
    record = measure(args)
    return benchlib.finish("transfer", record.pop("line"), record, args)


if __name__ == "__main__":
    main(sys.argv[1:])
