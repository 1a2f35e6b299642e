"""What every bench script shares: the command-line options, the data subset, a cxrlab run
timed from outside, the side-by-side alternation, and the JSON record.

Every figure compares two pipelines measured in one command, alternating (A B A B ...), so
that whatever else the machine is doing hits both; figures are ratios, never absolute times.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from cxrlab.core.io import write_json
from cxrlab.core.paths import cache_root
from cxrlab.data.dataset import Dataset, load_dataset
from cxrlab.data.images import is_image_name
from cxrlab.training.config import TrainConfig
from cxrlab.training.features import clear_memory_cache
from cxrlab.training.loop import fit
from cxrlab.training.records import load_run

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "kermany-224"
RESULTS_DIR = BENCH_DIR / "results"
MODEL = "efficientnet_lite0"


def parser(
    description: str, *, subset: int | None, image_size: int, epochs: int, batch_size: int = 32, repeats: int = 2
) -> argparse.ArgumentParser:
    """The options every script takes, with that script's defaults."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="dataset root with train/<class>/ (default: %(default)s)")
    p.add_argument("--subset", type=int, default=subset, help="images drawn from train/ (default: %(default)s; 0: all)")
    p.add_argument("--image-size", type=int, default=image_size)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--repeats", type=int, default=repeats, help="pairs measured, alternating (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for both sides (default 1: on a shared machine more threads "
        "than free cores make every step wait for the slowest one)",
    )
    p.add_argument("--weights", default="imagenet", help="imagenet or none (default: %(default)s)")
    p.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        default="auto",
        help="cxrlab's channels_last setting (auto: its default, on for CUDA only)",
    )
    p.add_argument("--cache-dir", default=None, help="cxrlab cache folder (default: the usual one)")
    p.add_argument("--results", default=str(RESULTS_DIR), help="where the JSON record goes")
    return p


def channels_last(args: argparse.Namespace) -> bool | None:
    return {"auto": None, "on": True, "off": False}[args.channels_last]


def settings(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("results",)}


# --- data ----------------------------------------------------------------------------------


def subset_root(data: str | os.PathLike, n: int | None, cache_dir: str | None = None, seed: int = 0) -> Path:
    """``data`` itself, or a root of ``n`` of its train images drawn at random, as symbolic links.

    The subset sits at a fixed place in the cache folder (named by the source, ``n`` and
    ``seed``), not in a temporary folder, because the decoded-image cache is keyed by the
    image paths: the same subset path means the images are decoded once, not once per run.
    """
    data = Path(data).resolve()
    files = sorted(p for p in (data / "train").glob("*/*") if is_image_name(p.name))
    if not files:
        raise SystemExit(f"{data} holds no train/<class>/ images: pass --data a dataset root")
    if not n or n >= len(files):
        return data
    name = hashlib.sha256(f"{data}|{n}|{seed}".encode()).hexdigest()[:16]
    root = cache_root(cache_dir) / "bench" / "subsets" / name
    if (root / "train").is_dir():
        return root
    chosen = np.sort(np.random.default_rng(seed).choice(len(files), n, replace=False))
    building = root.with_name(f"{name}.building-{os.getpid()}")
    for i in chosen:
        link = building / "train" / files[i].parent.name / files[i].name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(files[i])
    try:
        building.rename(root)
    except OSError:
        # Another process built the same subset first; theirs is identical.
        shutil.rmtree(building)
    return root


def prepared_dataset(root: Path, image_size: int, cache_dir: str | None) -> tuple[Dataset, float]:
    """The cxrlab dataset of ``root`` with its decoded cache built before any timing, and the
    seconds the decoding took (0 when the cache already held it)."""
    tick = time.perf_counter()
    data = load_dataset(str(root), image_size, cache_dir=cache_dir, show_progress=False)
    return data, (time.perf_counter() - tick) if data.decoded else 0.0


def decode_seconds(root: Path, image_size: int) -> float:
    """What decoding ``root`` into the cache costs, timed into a scratch cache folder."""
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-decode-") as scratch:
        tick = time.perf_counter()
        load_dataset(str(root), image_size, cache_dir=scratch, show_progress=False)
        return time.perf_counter() - tick


def split_folders(data: Dataset, dest: Path) -> Path:
    """``dest/train`` and ``dest/val``, one folder per class, linking the images of cxrlab's
    train and val splits: the layout ImageFolder reads, holding exactly the same images."""
    for split in ("train", "val"):
        for i in data.indices(split):
            source = Path(data.paths[i])
            link = dest / split / data.classes[int(data.labels[i])] / source.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source.resolve())
    return dest


# --- a cxrlab run, timed from outside ---------------------------------------------------------


@contextlib.contextmanager
def scratch_cache(cache_dir: str | None = None) -> Iterator[str]:
    """A temporary cache folder whose ``images/`` links to the real one: decoded pixels are
    reused (decode once) while frozen features start cold, as in a first run, instead of
    coming from an earlier repeat of the benchmark."""
    real_images = cache_root(cache_dir) / "images"
    real_images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-cache-") as scratch:
        (Path(scratch) / "images").symlink_to(real_images.resolve(), target_is_directory=True)
        clear_memory_cache()
        yield scratch
        clear_memory_cache()


def cxrlab_run(
    root: Path,
    mode: str,
    *,
    epochs: int,
    image_size: int,
    batch_size: int,
    weights: str,
    cache_dir: str | None,
    out: Path,
    model: str = MODEL,
    **options,
) -> dict:
    """One ``fit`` run of ``model`` in a scratch cache (cold features), its wall time, and what
    its run directory recorded."""
    # A folder of its own: run ids are unique per second and process, and tiny runs are faster.
    out.mkdir(parents=True, exist_ok=True)
    run_out = tempfile.mkdtemp(prefix=f"{mode}-", dir=out)
    with scratch_cache(cache_dir) as scratch:
        config = TrainConfig(
            data=str(root),
            model=model,
            mode=mode,
            epochs=epochs,
            image_size=image_size,
            batch_size=batch_size,
            weights=weights,
            cache_dir=scratch,
            out=run_out,
            **options,
        )
        tick = time.perf_counter()
        run_dir = fit(config, show_progress=False, log=lambda line: None)
        wall = time.perf_counter() - tick
    run = load_run(run_dir)
    metrics = run.scores.model_dump()
    epoch_seconds = [row.seconds for row in run.epochs]
    steps = metrics["n_train"] // batch_size if metrics["n_train"] > batch_size else 1
    return {
        "wall_seconds": wall,
        "train_seconds": metrics["train_seconds"],
        "epoch_seconds": epoch_seconds,
        "feature_seconds": metrics["train_seconds"] - sum(epoch_seconds),
        "n_train": metrics["n_train"],
        "n_val": metrics["n_val"],
        "n_test": metrics["n_test"],
        "train_images_per_epoch": steps * batch_size if mode != "frozen" else metrics["n_train"],
        "test_accuracy": metrics["test_accuracy"],
        "run_dir": str(run_dir),
    }


def warm_up(image_size: int, weights: str) -> None:
    """Pay the process's one-time costs (imports, first model build, first kernels) before
    any timing, so that they do not land on whichever side happens to run first."""
    from cxrlab.models.registry import build_model
    from cxrlab.models.weights import load_weights

    model = build_model(MODEL)
    load_weights(model, MODEL, weights)
    model(torch.rand(2, 1, image_size, image_size)).sum().backward()


# --- side by side ----------------------------------------------------------------------------


def alternate(
    sides: dict[str, Callable[[], dict]], repeats: int, log: Callable[[str], None] | None = None
) -> dict[str, list[dict]]:
    """Each side run ``repeats`` times, interleaved A B A B ..., so machine noise hits both."""
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for repeat in range(repeats):
        for name, run in sides.items():
            results[name].append(run())
            if log:
                log(f"  repeat {repeat + 1}/{repeats} {name}: {summary(results[name][-1])}")
    return results


def summary(result: dict) -> str:
    keys = [k for k in ("wall_seconds", "seconds", "images_per_second", "cpu_ms_per_image") if k in result]
    return ", ".join(f"{k} {result[k]:.2f}" for k in keys)


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children (loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pair_ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerators, denominators)]


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def eprint(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- the record ------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
    }


def write_record(figure: str, record: dict, results_dir: str | os.PathLike) -> dict:
    """``record`` with the figure's name, the date and the machine added, written to
    ``<results>/<figure>-<UTC time>.json``."""
    now = datetime.now(UTC)
    record = {"figure": figure, "date": now.isoformat(timespec="seconds"), "machine": machine(), **record}
    path = Path(results_dir) / f"{figure}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    write_json(path, record)
    return record


def finish(figure: str, line: str, record: dict, args: argparse.Namespace) -> dict:
    """Write the record, print the one-line result, and return the record as written."""
    record = write_record(figure, {"line": line, "settings": settings(args), **record}, args.results)
    print(line, flush=True)
    return json.loads(json.dumps(record, default=str))
