"""Peak resident memory of a cxrlab run on the whole training set, against the size of the
decoded array (N x S x S bytes, memory-mapped from the cache).

The run is ``cxrlab train`` in a child process, with a scratch cache so that its frozen
features are computed, not found from an earlier run. Its peak RSS comes from ``wait4``
(the kernel's high-water mark); while it runs, /proc is sampled for its anonymous memory
(the process's own allocations) and for the resident pages of the cache's ``pixels.npy``
mapping (file-backed: shared, and dropped by the kernel when memory is short). The same run
on a small subset shows what does not depend on the number of images: its train split
fills a whole evaluation batch of 256 too (hence 640 images), so both runs hold the same
activations at their peak.

    python bench/memory.py [--image-size 128] [--mode frozen] [--baseline-subset 640]
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
CACHE_FILE = "pixels.npy"  # the decoded array's file in the cache


def run_child(command: list[str], env: dict[str, str], sample_seconds: float = 0.2) -> dict:
    """Run ``command``: its wall time, peak RSS, peak anonymous RSS and peak resident pages of
    the decoded cache's mapping, in MB."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_anon = peak_cache = 0
    tick = time.perf_counter()
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        anon, cache = resident_kb(proc.pid)
        peak_anon, peak_cache = max(peak_anon, anon), max(peak_cache, cache)
        time.sleep(sample_seconds)
    seconds = time.perf_counter() - tick
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped above by wait4, not by Popen
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return {
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "peak_anon_mb": peak_anon / 1024,
        "peak_cache_mb": peak_cache / 1024,
    }


def resident_kb(pid: int) -> tuple[int, int]:
    """``(RssAnon, resident kB of mappings of the cache file)`` of ``pid`` now; zeros once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        smaps = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return 0, 0
    anon = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon:")), 0)
    cache, in_cache = 0, False
    for line in smaps.splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            in_cache = len(fields) >= 6 and fields[-1].endswith(CACHE_FILE)
        elif in_cache and fields and fields[0] == "Rss:":
            cache += int(fields[1])
    return anon, cache


def train_command(root: Path, args, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cxrlab",
        "train",
        "--data",
        str(root),
        "--model",
        MODEL,
        "--mode",
        args.mode,
        "--weights",
        args.weights,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--image-size",
        str(args.image_size),
        "--out",
        str(out),
    ]


def measure(args) -> dict:
    full_root = benchlib.subset_root(args.data, args.subset, args.cache_dir)
    small_root = benchlib.subset_root(args.data, args.baseline_subset, args.cache_dir)
    full, _ = benchlib.prepared_dataset(full_root, args.image_size, args.cache_dir)
    small, _ = benchlib.prepared_dataset(small_root, args.image_size, args.cache_dir)
    array_mb = full.images.nbytes / MB
    with tempfile.TemporaryDirectory(prefix="cxrlab-bench-runs-") as out:
        runs = {}
        for name, root in (("small", small_root), ("full", full_root)):
            with benchlib.scratch_cache(args.cache_dir) as scratch:
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "CXRLAB_CACHE": scratch}
                runs[name] = run_child(train_command(root, args, Path(out)), env)
            eprint(
                f"  {name} ({len(small.paths) if name == 'small' else len(full.paths)} images): "
                f"{benchlib.summary(runs[name])}, peak RSS {runs[name]['peak_rss_mb']:.0f} MB"
            )
    peak = runs["full"]["peak_rss_mb"]
    figure = peak / array_mb
    line = (
        f"peak RSS of a cxrlab {args.mode} run ({args.epochs} epoch(s)) on {len(full.paths)} images at "
        f"{args.image_size} px: {peak:.0f} MB, of which anonymous {runs['full']['peak_anon_mb']:.0f} MB and the "
        f"mapped cache {runs['full']['peak_cache_mb']:.0f} MB; on {len(small.paths)} images {runs['small']['peak_rss_mb']:.0f} "
        f"MB; decoded array {array_mb:.0f} MB; peak RSS over the decoded array: {figure:.1f}x"
    )
    return {
        "line": line,
        "value": figure,
        "array_mb": array_mb,
        "images": {"full": len(full.paths), "small": len(small.paths)},
        "peak_ratio_full_over_small": peak / runs["small"]["peak_rss_mb"],
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> dict:
    p = benchlib.parser(__doc__.splitlines()[0], subset=0, image_size=128, epochs=1, repeats=1)
    p.add_argument("--mode", default="frozen", choices=("frozen", "finetune", "scratch"))
    p.add_argument("--baseline-subset", type=int, default=640, help="images in the small run (default: %(default)s)")
    args = p.parse_args(argv)
    record = measure(args)
    return benchlib.finish("memory", record.pop("line"), record, args)


if __name__ == "__main__":
    main(sys.argv[1:])
