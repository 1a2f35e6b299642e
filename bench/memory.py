"""Peak resident memory of a cxrlab run on the whole training set, against the size of the
decoded array (N x S x S bytes, memory-mapped from the cache).

The run is ``cxrlab train`` in a child process; its peak RSS comes from ``wait4`` (the
kernel's high-water mark), and /proc is sampled while it runs to split resident memory into
anonymous (the process's own allocations) and file-backed (pages of the memory-mapped
cache, which the kernel may drop and read again). The same run on a small subset gives
what does not depend on the data (Python, torch, the model, one batch of activations); the
figure is how much the whole set adds, over the size of its decoded array: about 1x means
the pixels are mapped once and never copied (a float32 copy alone would add 4x).

    python bench/memory.py [--image-size 128] [--mode frozen] [--baseline-subset 256]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import MODEL, eprint

MB = 1024 * 1024


def run_child(command: list[str], env: dict[str, str], sample_seconds: float = 0.1) -> dict:
    """Run ``command``; its exit code, peak RSS and peak anonymous and file-backed RSS."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks = {"RssAnon": 0, "RssFile": 0}
    tick = time.perf_counter()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        for key, kb in _status_fields(proc.pid, peaks).items():
            peaks[key] = max(peaks[key], kb)
        time.sleep(sample_seconds)
    seconds = time.perf_counter() - tick
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped above by wait4, not by Popen
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "peak_anon_mb": peaks["RssAnon"] / 1024,
            "peak_file_mb": peaks["RssFile"] / 1024}


def _status_fields(pid: int, keys) -> dict[str, int]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in keys:
            fields[name] = int(value.split()[0])
    return fields


def train_command(root: Path, args, out: Path) -> list[str]:
    return [sys.executable, "-m", "cxrlab", "train", "--data", str(root), "--model", MODEL, "--mode", args.mode,
            "--weights", args.weights, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--image-size", str(args.image_size), "--out", str(out)]


def measure(args) -> dict:
    full_root = benchlib.subset_root(args.data, args.subset, args.cache_dir)
    small_root = benchlib.subset_root(args.data, args.baseline_subset, args.cache_dir)
    full, _ = benchlib.prepared_dataset(full_root, args.image_size, args.cache_dir)
    small, _ = benchlib.prepared_dataset(small_root, args.image_size, args.cache_dir)
    array_mb = full.images.nbytes / MB
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if args.cache_dir:
        env["CXRLAB_CACHE"] = args.cache_dir
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-runs-") as out:
        runs = {}
        for name, root in (("small", small_root), ("full", full_root)):
            runs[name] = run_child(train_command(root, args, Path(out)), env)
            eprint(f"  {name} ({len(small.paths) if name == 'small' else len(full.paths)} images): "
                   f"peak RSS {runs[name]['peak_rss_mb']:.0f} MB, {runs[name]['seconds']:.0f} s")
    growth = runs["full"]["peak_rss_mb"] - runs["small"]["peak_rss_mb"]
    figure = growth / array_mb
    line = (f"peak RSS of a cxrlab {args.mode} run ({args.epochs} epoch(s)) on {len(full.paths)} images at "
            f"{args.image_size} px: {runs['full']['peak_rss_mb']:.0f} MB ({runs['full']['peak_anon_mb']:.0f} MB anonymous, "
            f"{runs['full']['peak_file_mb']:.0f} MB mapped files); decoded array {array_mb:.0f} MB; "
            f"{growth:.0f} MB more than the same run on {len(small.paths)} images: {figure:.2f}x the decoded array")
    return {"line": line, "value": figure, "array_mb": array_mb, "growth_mb": growth,
            "images": {"full": len(full.paths), "small": len(small.paths)}, "runs": runs}


def main(argv: list[str] | None = None) -> dict:
    p = benchlib.parser(__doc__.splitlines()[0], subset=0, image_size=128, epochs=1, repeats=1)
    p.add_argument("--mode", default="frozen", choices=("frozen", "finetune", "scratch"))
    p.add_argument("--baseline-subset", type=int, default=256, help="images in the small run (default: %(default)s)")
    args = p.parse_args(argv)
    record = measure(args)
    return benchlib.finish("memory", record.pop("line"), record, args)


if __name__ == "__main__":
    main(sys.argv[1:])
