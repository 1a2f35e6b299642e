"""Whole commands as a user runs them, timed from outside, side by side in one command.

Every figure of this script is a ratio of two commands run here, alternately (A B A B), at
the machine's default thread count: ``cxrlab train`` as typed at a shell, and the PyTorch
transfer-learning tutorial (``bench/tutorial.py``) as a command of its own. Each command's
wall time includes what a user pays for: interpreter start, imports, reading the data,
building the model, the epochs, scoring and writing records. CPU seconds (user + system of
the command's processes) are recorded beside wall seconds, because on a shared machine wall
time swells with whatever else runs.

The data: ``--images`` (default 1200) of the shared training images at 64 px, ResNet-18
with random weights, batch 32. Their decoded-image cache is built before any timing (a user
pays for it once per data set, not per command); every ``cxrlab train`` gets a scratch cache
folder whose ``images/`` links to it, so each frozen run computes its features, as a first
run does, and none is served an earlier command's.

    python bench/commands.py [--repeats 2] [--images 1200] [--quick]

Figures and goals:
    frozen / fine-tune wall, 20 epochs each             <= 0.06
    tutorial frozen / cxrlab frozen, 20 epochs          >= 10x
    tutorial fine-tune / cxrlab fine-tune, 5 epochs      >= 1.6x
    cxrlab frozen 20 epochs / 1 epoch                   <= 1.2x
    cxrlab frozen 1 epoch, wall                         <= 5 s on an idle machine
    cxrlab --help, wall                                 <= 0.5 s
and, without a goal, the same 1-epoch frozen run again on features an identical run left in
its cache: what a command costs beside the backbone's pass over the images.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

HERE = Path(__file__).resolve().parent
GOALS = {
    "frozen_over_finetune": ("<=", 0.06),
    "tutorial_frozen_over_cxrlab_frozen": (">=", 10.0),
    "tutorial_finetune_over_cxrlab_finetune": (">=", 1.6),
    "frozen_20_over_frozen_1": ("<=", 1.2),
    "frozen_1_epoch_seconds": ("<=", 5.0),
    "help_seconds": ("<=", 0.5),
}


def timed(command: list[str], env: dict, cache_dir: str | None, warm: bool = False) -> dict:
    """Wall and CPU seconds (user + system of the command and its children) of one command;
    a ``cxrlab`` command runs with a scratch cache (decoded pixels linked, nothing else), or
    with ``warm`` in the cache an untimed first run of the same command filled."""
    if "cxrlab" in command and "train" in command:
        with benchlib.scratch_cache(cache_dir) as scratch:
            scratch_env = {**env, "CXRLAB_CACHE": scratch}
            if warm:
                _timed(command, scratch_env)
            return _timed(command, scratch_env)
    return _timed(command, env)


def _timed(command: list[str], env: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tick = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "load": os.getloadavg()[0]}


def commands(root: Path, folders: Path, out: Path, epochs: dict[str, int]) -> dict[str, list[str]]:
    common = ["--model", "resnet18", "--weights", "none", "--image-size", "64", "--batch-size", "32", "--quiet"]
    train = [sys.executable, "-m", "cxrlab", "train", "--data", str(root), *common]
    tutorial = [
        sys.executable,
        str(HERE / "tutorial.py"),
        str(folders),
        "--model",
        "resnet18",
        "--weights",
        "none",
        "--image-size",
        "64",
        "--batch-size",
        "32",
    ]
    return {
        "cxrlab_frozen_20": [*train, "--mode", "frozen", "--epochs", str(epochs["long"]), "--out", str(out)],
        "cxrlab_frozen_1": [*train, "--mode", "frozen", "--epochs", "1", "--out", str(out)],
        "cxrlab_frozen_1_again": [*train, "--mode", "frozen", "--epochs", "1", "--out", str(out)],
        "cxrlab_finetune_20": [*train, "--mode", "finetune", "--epochs", str(epochs["long"]), "--out", str(out)],
        "cxrlab_finetune_5": [*train, "--mode", "finetune", "--epochs", str(epochs["short"]), "--out", str(out)],
        "tutorial_frozen_20": [*tutorial, "--mode", "frozen", "--epochs", str(epochs["long"])],
        "tutorial_finetune_5": [*tutorial, "--mode", "finetune", "--epochs", str(epochs["short"])],
        "help": [sys.executable, "-m", "cxrlab", "--help"],
    }


def figures(times: dict[str, list[dict]]) -> dict[str, float]:
    def median(name: str, clock: str = "wall") -> float:
        return statistics.median(t[clock] for t in times[name])

    return {
        "frozen_over_finetune": median("cxrlab_frozen_20") / median("cxrlab_finetune_20"),
        "tutorial_frozen_over_cxrlab_frozen": median("tutorial_frozen_20") / median("cxrlab_frozen_20"),
        "tutorial_finetune_over_cxrlab_finetune": median("tutorial_finetune_5") / median("cxrlab_finetune_5"),
        "frozen_20_over_frozen_1": median("cxrlab_frozen_20") / median("cxrlab_frozen_1"),
        "frozen_1_epoch_seconds": median("cxrlab_frozen_1"),
        "frozen_1_epoch_again_seconds": median("cxrlab_frozen_1_again"),
        "help_seconds": median("help"),
        # The same ratios in CPU seconds, which a loaded machine distorts far less.
        "cpu_frozen_over_finetune": median("cxrlab_frozen_20", "cpu") / median("cxrlab_finetune_20", "cpu"),
        "cpu_tutorial_frozen_over_cxrlab_frozen": median("tutorial_frozen_20", "cpu")
        / median("cxrlab_frozen_20", "cpu"),
        "cpu_tutorial_finetune_over_cxrlab_finetune": median("tutorial_finetune_5", "cpu")
        / median("cxrlab_finetune_5", "cpu"),
    }


def met(name: str, value: float) -> bool:
    sign, goal = GOALS[name]
    return value <= goal if sign == "<=" else value >= goal


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "kermany-224"))
    p.add_argument("--images", type=int, default=1200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="2 and 1 epochs instead of 20 and 5 (checks the script)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--results", default=str(benchlib.RESULTS_DIR))
    args = p.parse_args(argv)
    epochs = {"long": 2, "short": 1} if args.quick else {"long": 20, "short": 5}
    root = benchlib.subset_root(args.data, args.images, args.cache_dir)
    data, _ = benchlib.prepared_dataset(root, 64, args.cache_dir)  # decode once, before any timing
    env = {**os.environ, **({"CXRLAB_CACHE": args.cache_dir} if args.cache_dir else {})}
    times: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-commands-") as scratch:
        folders = benchlib.split_folders(data, Path(scratch) / "tutorial")
        runs = commands(root, folders, Path(scratch) / "runs", epochs)
        for repeat in range(args.repeats):
            for name, command in runs.items():  # alternated: every repeat runs each once
                warm = name.endswith("_again")
                times.setdefault(name, []).append(timed(command, env, args.cache_dir, warm=warm))
                benchlib.eprint(f"repeat {repeat + 1}: {name} {times[name][-1]['wall']:.1f} s wall")
    values = figures(times)
    line = ", ".join(
        f"{name} {value:.3g} ({'met' if met(name, value) else 'missed'})"
        for name, value in values.items()
        if name in GOALS
    )
    record = {"figures": values, "times": times, "images": len(data.paths), "epochs": epochs}
    return benchlib.finish("commands", line, {**record, "value": values}, args)


if __name__ == "__main__":
    main(sys.argv[1:])
