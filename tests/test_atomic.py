"""Atomic records: every file is written under a temporary name and renamed; caches are checked.

* A whole run (decoded-image cache, feature cache, every file of the run directory) is
  watched: each file left on disk must have arrived by ``os.replace``.
* A write that fails half way, and a process killed half way through a write, leave the
  old file as it was.
* A decoded-image or feature cache entry whose bytes or manifest do not match is rebuilt,
  and the rebuilt pixels are the right ones.
* Two processes that build the same decoded-image cache at once end with one correct cache
  decoded once: the file lock makes the second wait and then read the first's result.
* A run directory has one writer: two trainings started at the same moment under one name
  give one run and one one-line refusal; a live owner is named (pid and host), a dead or
  silent one is taken over.
* A full disk or a file-size limit ends in one line, leaves no temporary file, and a run
  after the space is freed works.
* Frozen features are keyed by the exact images of each split: a split seed is never served
  another seed's test features.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import read_json, write_json
from cxrlab.testing import make_class_folders, make_dataset_root

SIZE = 32


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


def test_every_record_of_a_run_and_its_caches_arrives_by_rename(tiny_root, tmp_path, monkeypatch):
    from cxrlab.training.config import TrainConfig
    from cxrlab.training.features import clear_memory_cache
    from cxrlab.training.loop import fit

    renamed: set[Path] = set()
    original_replace = os.replace

    def recording_replace(source, target, *args, **kwargs):
        renamed.add(Path(target).resolve())
        return original_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording_replace)
    clear_memory_cache()
    cache, out = tmp_path / "cache", tmp_path / "runs"
    # Gradual: cached features for the head phase, then the network; every kind of record.
    run_dir = fit(
        TrainConfig(
            data=str(tiny_root),
            model="scratch_cnn",
            mode="gradual",
            weights="none",
            head_epochs=1,
            epochs=1,
            image_size=SIZE,
            batch_size=16,
            out=str(out),
            cache_dir=str(cache),
        ),
        show_progress=False,
        log=lambda line: None,
    )

    written = _files(run_dir) | _files(cache)
    assert {p.name for p in _files(run_dir)} >= {
        "config.yaml",
        "status.json",
        "split.csv",
        "history.csv",
        "metrics.json",
        "predictions.csv",
        "model.pt",
    }
    assert any(p.name == "pixels.npy" for p in written) and any(p.parent.name == "features" for p in written)
    assert {p.resolve() for p in written} <= renamed, "written in place: " + ", ".join(
        sorted(str(p) for p in written if p.resolve() not in renamed)
    )
    assert not [p for p in written if p.name.endswith(".tmp")]


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    import torch

    from cxrlab.training.rundir import RunWriter, load_tensors

    writer = RunWriter(tmp_path / "run")
    writer.metrics({"test_accuracy": 0.9})
    writer.model({"w": torch.ones(3)}, {"epoch": 1})

    def half_then_fail(payload, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space") as full:
        writer.model({"w": torch.zeros(3)}, {"epoch": 2})
    # One line naming the file, as bad input is (the place, not cxrlab, is at fault).
    assert isinstance(full.value, CxrlabError) and "model.pt" in str(full.value) and "\n" not in str(full.value)
    with pytest.raises(TypeError):
        writer.metrics({"test_accuracy": 0.5, "oops": object()})

    assert torch.equal(load_tensors(tmp_path / "run" / "model.pt")["state_dict"]["w"], torch.ones(3))
    assert read_json(tmp_path / "run" / "metrics.json") == {"test_accuracy": 0.9}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.json", "model.pt"]


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"test_accuracy": 0.9})
    script = textwrap.dedent(f"""
        import os, signal
        from cxrlab.core.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "w") as f:
                f.write('{{"test_accuracy": 0.')
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    process = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert process.returncode == -9
    assert read_json(target) == {"test_accuracy": 0.9}
    # What a kill can leave is a stray temporary file beside it, never a torn record.
    assert all(p.name.endswith(".tmp") for p in tmp_path.iterdir() if p != target)


# --- cache entries that do not match are rebuilt ----------------------------------------------


def _flip_pixel_bytes(entry: Path) -> None:
    path = entry / "pixels.npy"
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 200, len(data) - 100):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncate_pixels(entry: Path) -> None:
    path = entry / "pixels.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pickle_in_place_of_pixels(entry: Path) -> None:
    np.save(entry / "pixels.npy", np.array([{"not": "pixels"}], dtype=object), allow_pickle=True)


def _edit_manifest(change):
    def corrupt(entry: Path) -> None:
        manifest = read_json(entry / "manifest.json")
        change(manifest)
        (entry / "manifest.json").write_text(json.dumps(manifest))

    return corrupt


def _garbage_manifest(entry: Path) -> None:
    (entry / "manifest.json").write_text('{"shape": [80, 32')


def _no_manifest(entry: Path) -> None:
    (entry / "manifest.json").unlink()


CORRUPTIONS = {
    "pixel bytes flipped": _flip_pixel_bytes,
    "pixels.npy truncated": _truncate_pixels,
    "pixels.npy a pickle": _pickle_in_place_of_pixels,
    "manifest shape changed": _edit_manifest(lambda m: m.update(shape=[m["shape"][0] - 1, SIZE, SIZE])),
    "manifest checksum changed": _edit_manifest(lambda m: m.update(checksum="00000000")),
    "manifest without checksum": _edit_manifest(lambda m: m.pop("checksum")),
    "manifest digests cut short": _edit_manifest(lambda m: m.update(digests=m["digests"][:-1])),
    "manifest of another format": _edit_manifest(lambda m: m.update(format=0)),
    "manifest not JSON": _garbage_manifest,
    "manifest missing": _no_manifest,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_decoded_cache_that_does_not_match_is_rebuilt(corrupt, tiny_root, tmp_path):
    from cxrlab.data.dataset import load_dataset

    cache = tmp_path / "cache"
    first = load_dataset(str(tiny_root), SIZE, cache_dir=str(cache), show_progress=False)
    assert first.decoded == 80
    expected = np.array(first.images)
    (entry,) = (cache / "images").iterdir()
    del first  # drop the memory map before the bytes under it change
    corrupt(entry)

    again = load_dataset(str(tiny_root), SIZE, cache_dir=str(cache), show_progress=False)
    assert again.decoded == 80, "a cache entry that does not match must be decoded again"
    assert np.array_equal(np.asarray(again.images), expected)
    trusted = load_dataset(str(tiny_root), SIZE, cache_dir=str(cache), show_progress=False)
    assert trusted.decoded == 0 and np.array_equal(np.asarray(trusted.images), expected)


@pytest.mark.parametrize("corrupt", ["bytes", "truncate", "manifest"])
def test_a_feature_cache_that_does_not_match_is_recomputed(corrupt, tmp_path, monkeypatch):
    import torch

    from cxrlab.models.registry import build_model
    from cxrlab.training import features

    torch.manual_seed(0)
    model = build_model("scratch_cnn")
    images = np.random.default_rng(0).integers(0, 256, (12, SIZE, SIZE), dtype=np.uint8)
    computed = []
    original = features.compute_features
    monkeypatch.setattr(features, "compute_features", lambda *a, **k: computed.append(1) or original(*a, **k))

    def get():
        features.clear_memory_cache()
        return features.cached_features(
            model,
            images,
            np.arange(12),
            key="k" * 32,
            device=torch.device("cpu"),
            batch_size=8,
            cache_dir=str(tmp_path),
            show_progress=False,
        ).clone()

    expected = get()
    array_path, manifest_path = tmp_path / "features" / f"{'k' * 32}.npy", tmp_path / "features" / f"{'k' * 32}.json"
    if corrupt == "bytes":
        data = bytearray(array_path.read_bytes())
        data[-8:] = b"\x00\x00\xc0\x7f" * 2  # two NaNs where features were
        array_path.write_bytes(bytes(data))
    elif corrupt == "truncate":
        array_path.write_bytes(array_path.read_bytes()[:200])
    else:
        manifest = read_json(manifest_path)
        manifest["shape"][1] += 1
        write_json(manifest_path, manifest)
    assert torch.equal(get(), expected)
    assert len(computed) == 2
    assert torch.equal(get(), expected) and len(computed) == 2, "the recomputed entry is trusted"


# --- two processes, one cache ----------------------------------------------------------------


def _build_cache_in_a_process(root: str, cache: str, barrier, results) -> None:
    """Runs in a child process: wait for the other one, then ask for the decoded images."""
    from cxrlab.data import cache as cache_module
    from cxrlab.data.sources import list_source

    build = cache_module._build_entry

    def slow_build(*args, **kwargs):
        # Hold the lock long enough that the other process surely arrives while it is held.
        import time

        time.sleep(0.5)
        return build(*args, **kwargs)

    cache_module._build_entry = slow_build
    listing = list_source(root)
    barrier.wait(timeout=60)
    decoded = cache_module.decoded_images(listing, SIZE, cache_dir=cache, show_progress=False)
    results.put((decoded.decoded, cache_module.pixels_checksum(decoded.pixels), decoded.key))


def test_two_processes_building_one_cache_decode_once(tmp_path):
    from cxrlab.data.cache import pixels_checksum
    from cxrlab.data.images import decode_file
    from cxrlab.data.sources import list_source

    root = make_class_folders(tmp_path / "data", {"NORMAL": 12, "PNEUMONIA": 12}, size=48)
    cache = tmp_path / "cache"
    # fork: the children start at once, with this process's imports; nothing here runs threads.
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_build_cache_in_a_process, args=(str(root), str(cache), barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    assert sorted(decoded for decoded, _, _ in outcomes) == [0, 24], "exactly one process decodes"
    assert outcomes[0][1:] == outcomes[1][1:], "both see the same entry with the same pixels"
    expected = np.stack([decode_file(f, SIZE)[0] for f in list_source(str(root)).files])
    assert outcomes[0][1] == pixels_checksum(expected)
    entries = list((cache / "images").iterdir())
    assert len(entries) == 1
    assert sorted(p.name for p in entries[0].iterdir() if not p.name.endswith(".lock")) == [
        "manifest.json",
        "pixels.npy",
    ]


def test_the_data_folder_gains_no_files(tmp_path):
    """The cache lives under the cache folder only: the data folder gains no files."""
    from cxrlab.data.dataset import load_dataset

    root = make_dataset_root(tmp_path / "data", n_train=6, size=SIZE)
    before = _files(root)
    load_dataset(str(root), SIZE, cache_dir=str(tmp_path / "cache"), show_progress=False, val_fraction=0.2)
    assert _files(root) == before


# --- one writer per run directory ---------------------------------------------------------------

# Imports first, then wait at a shared start line: both trainings begin within a millisecond.
# The moment between "is the name free?" and the first record is widened to a second, so that
# without a claim both would always pass the check (on a busy machine they might not meet).
START_TOGETHER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import cxrlab.training.loop  # noqa: F401
    from cxrlab.cli import main
    from cxrlab.training import rundir
    opened = rundir.RunWriter.__init__
    def slowly(self, *args, **kwargs):
        time.sleep(1.0)
        opened(self, *args, **kwargs)
    rundir.RunWriter.__init__ = slowly
    ready, go = Path(sys.argv[1]), Path(sys.argv[2])
    ready.write_text("ready")
    while not go.exists():
        time.sleep(0.001)
    sys.argv = ["cxrlab", *sys.argv[3:]]
    main()
""")


def _train_args(root: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(root),
        "--model",
        "scratch_cnn",
        "--mode",
        "scratch",
        "--epochs",
        "2",
        "--image-size",
        str(SIZE),
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--quiet",
        *extra,
    ]


def _predictions_match_model(run_dir: Path, root: Path, cache: Path) -> bool:
    """Whether predictions.csv is what model.pt predicts: records written by one process."""
    from cxrlab.data.dataset import load_dataset
    from cxrlab.training.calibration import softmax
    from cxrlab.training.predict import predict_logits
    from cxrlab.training.records import load_run

    run = load_run(run_dir)
    data = load_dataset(str(root), SIZE, cache_dir=str(cache), show_progress=False)
    paths, _, recorded = run.prediction_arrays("test")
    index = {p: i for i, p in enumerate(data.paths)}
    import torch

    probs = softmax(predict_logits(run.load_model(), data.images, [index[p] for p in paths], torch.device("cpu")))
    return np.allclose(probs, recorded, atol=1e-4)


@pytest.mark.slow
def test_two_trainings_started_at_once_under_one_name_give_one_run(tmp_path):
    import socket

    from cxrlab.data.dataset import load_dataset

    root = make_dataset_root(tmp_path / "data", n_train=16, size=SIZE)
    cache, out, go = tmp_path / "cache", tmp_path / "runs", tmp_path / "go"
    load_dataset(str(root), SIZE, cache_dir=str(cache), show_progress=False)  # decoded before, not in the race
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", START_TOGETHER, str(tmp_path / f"ready-{seed}"), str(go)]
            + _train_args(root, out, cache, "--name", "shared", "--seed", str(seed)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready-{seed}").exists() for seed in (1, 2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "a process did not start"
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=600) for p in processes]
    codes = [p.returncode for p in processes]
    assert sorted(codes) == [0, 2], [(code, err[-600:]) for code, (_, err) in zip(codes, outputs)]
    winner, loser = codes.index(0), codes.index(2)
    refusal = outputs[loser][1].strip()
    assert len(refusal.splitlines()) == 1 and "Traceback" not in refusal, refusal
    assert str(out / "shared") in refusal, refusal
    if "being written" in refusal:  # it arrived while the winner ran (else: the run existed already)
        assert f"pid {processes[winner].pid} on host {socket.gethostname()}" in refusal

    run_dir = out / "shared"
    record = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert record["seed"] == (1, 2)[winner], "config.yaml is not the winner's"
    assert read_json(run_dir / "status.json")["pid"] == processes[winner].pid
    assert _predictions_match_model(run_dir, root, cache), "predictions.csv and model.pt come from two processes"
    assert not (run_dir / "owner.json").exists()
    assert [p.name for p in out.iterdir()] == ["shared"]


# A second process that owns the directory (a training would, for the whole of its run).
HOLD_CLAIM = textwrap.dedent("""
    import sys, time
    try:
        from cxrlab.training.claim import claim_run_dir
        claim = claim_run_dir(sys.argv[1])
    except ImportError:  # a cxrlab without claims: nothing to hold
        pass
    print("claimed", flush=True)
    time.sleep(600)
""")


def _resumable_run(root: Path, out: Path, cache: Path, monkeypatch) -> Path:
    """A run killed after its last epoch and before it was scored: status running, last.pt kept."""
    from cxrlab.training import loop
    from cxrlab.training.config import TrainConfig

    def killed(*args, **kwargs):
        raise RuntimeError("killed before scoring")

    config = TrainConfig(
        data=str(root),
        model="scratch_cnn",
        mode="scratch",
        epochs=2,
        image_size=SIZE,
        batch_size=8,
        out=str(out),
        cache_dir=str(cache),
        name="interrupted",
    )
    with monkeypatch.context() as patch:
        patch.setattr(loop, "_finish", killed)
        with pytest.raises(RuntimeError, match="killed before scoring"):
            loop.fit(config, show_progress=False, log=lambda line: None)
    run_dir = out / "interrupted"
    assert read_json(run_dir / "status.json")["status"] == "running" and (run_dir / "last.pt").exists()
    return run_dir


def test_a_live_owner_is_named_and_a_dead_one_is_taken_over(tmp_path, cli, monkeypatch):
    import socket

    root = make_dataset_root(tmp_path / "data", n_train=16, size=SIZE)
    out, cache = tmp_path / "runs", tmp_path / "cache"
    run_dir = _resumable_run(root, out, cache, monkeypatch)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        owner = f"pid {holder.pid} on host {socket.gethostname()}"
        for args in (
            ["train", "--resume", str(run_dir), "--quiet"],
            _train_args(root, out, cache, "--name", "interrupted"),
        ):
            refused = cli(*args)
            assert refused.code == 2 and "Traceback" not in refused.err
            assert len(refused.err.strip().splitlines()) == 1 and owner in refused.err, refused.err
        assert read_json(run_dir / "status.json")["status"] == "running", "a refused writer wrote"
    finally:
        holder.kill()
        holder.wait(timeout=60)
    # kill -9 leaves owner.json behind, naming a process that is gone: the next writer takes over.
    assert read_json(run_dir / "owner.json")["pid"] == holder.pid
    resumed = cli("train", "--resume", str(run_dir), "--quiet")
    assert resumed.code == 0, resumed.err
    assert read_json(run_dir / "status.json")["status"] == "finished"
    assert not (run_dir / "owner.json").exists()


def test_a_second_claim_in_one_process_is_refused(tmp_path):
    from cxrlab.training.claim import RunDirBusy, claim_run_dir

    run_dir = tmp_path / "run"
    claim = claim_run_dir(run_dir)
    with pytest.raises(RunDirBusy, match=f"pid {os.getpid()} on host"):
        claim_run_dir(run_dir)
    claim.release()
    claim_run_dir(run_dir).release()
    assert list(run_dir.iterdir()) == []


def _owner_file(run_dir: Path, **owner) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "owner.json"
    path.write_text(json.dumps(owner))
    return path


def test_an_owner_elsewhere_is_refused_until_its_heartbeat_is_old(tmp_path):
    import time as clock

    from cxrlab.training.claim import STALE_S, RunDirBusy, claim_run_dir

    run_dir = tmp_path / "run"
    path = _owner_file(run_dir, pid=4242, host="other-machine", time=clock.time())
    with pytest.raises(RunDirBusy, match="pid 4242 on host other-machine"):
        claim_run_dir(run_dir)
    old = clock.time() - STALE_S - 60
    path.write_text(json.dumps({"pid": 4242, "host": "other-machine", "time": old}))
    os.utime(path, (old, old))
    claim = claim_run_dir(run_dir)
    assert read_json(path)["pid"] == os.getpid()
    claim.release()


def test_a_dead_or_reused_pid_here_is_taken_over_a_live_one_is_not(tmp_path):
    import socket

    from cxrlab.training.claim import RunDirBusy, claim_run_dir, process_start

    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _owner_file(tmp_path / "dead", pid=gone.pid, host=host, time=time.time())
    claim_run_dir(tmp_path / "dead").release()
    # A live pid that started at another time is another process under a reused pid.
    _owner_file(tmp_path / "reused", pid=os.getppid(), host=host, process_start="1", time=time.time())
    claim_run_dir(tmp_path / "reused").release()
    # The live process itself: owner.json alone refuses the claim (as where a file system has no locks).
    live = _owner_file(
        tmp_path / "live", pid=os.getppid(), host=host, process_start=process_start(os.getppid()), time=time.time()
    )
    with pytest.raises(RunDirBusy, match=f"pid {os.getppid()}"):
        claim_run_dir(tmp_path / "live")
    assert read_json(live)["pid"] == os.getppid(), "a refused claim must leave the owner's file alone"


def test_the_owner_file_carries_a_heartbeat(tmp_path, monkeypatch):
    from cxrlab.training import claim as claim_module

    monkeypatch.setattr(claim_module, "HEARTBEAT_S", 0.05)
    claim = claim_module.claim_run_dir(tmp_path / "run")
    owner = tmp_path / "run" / "owner.json"
    os.utime(owner, (1.0, 1.0))
    time.sleep(0.5)
    beat = owner.stat().st_mtime
    claim.release()
    assert beat > time.time() - 60 and not owner.exists()


# --- a disk that fills up -------------------------------------------------------------------------


def _stray(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _limit_file_size(limit: int):
    def apply() -> None:
        import resource
        import signal

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        # Ignored, SIGXFSZ lets the write fail with EFBIG instead of killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


def test_a_write_past_the_size_limit_is_one_line_and_leaves_nothing(tmp_path):
    root = make_dataset_root(tmp_path / "data", n_train=40, size=SIZE)
    out, cache = tmp_path / "runs", tmp_path / "cache"
    args = [sys.executable, "-m", "cxrlab", *_train_args(root, out, cache, "--image-size", "64", "--epochs", "1")]
    # 80 images at 64 px are 327,680 bytes of decoded pixels: past a 200 kB limit on file size.
    limited = subprocess.run(args, capture_output=True, text=True, timeout=600, preexec_fn=_limit_file_size(200_000))
    assert limited.returncode == 2, limited.stderr[-2000:]
    assert "Traceback" not in limited.stderr and len(limited.stderr.strip().splitlines()) == 1
    assert "pixels.npy" in limited.stderr and "File too large" in limited.stderr
    assert not _stray(cache) and not list((cache / "images").rglob("pixels.npy"))
    assert not out.exists() or not list(out.rglob("metrics.json"))
    freed = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert freed.returncode == 0, freed.stderr[-2000:]


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]).returncode == 0


@pytest.mark.slow
def test_a_full_disk_under_the_cache_is_one_line_and_a_later_run_works(tmp_path):
    """A sparse memory-mapped file on a full tmpfs dies with SIGBUS; here the space is
    checked and reserved first."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "2m"):
        pytest.skip("needs root and tmpfs to make a small full disk")
    try:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (2 * 1024 * 1024 - 64 * 1024))  # leaves under 64 kB free
        root = make_dataset_root(tmp_path / "data", n_train=40, size=SIZE)
        cache, out = disk / "cache", tmp_path / "runs"
        args = [sys.executable, "-m", "cxrlab", *_train_args(root, out, cache, "--image-size", "64", "--epochs", "1")]
        full = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert full.returncode == 2, (full.returncode, full.stderr[-2000:])
        assert "Traceback" not in full.stderr and len(full.stderr.strip().splitlines()) == 1
        assert "needs 0.3 MB" in full.stderr and "free" in full.stderr, full.stderr
        assert not _stray(disk) and not list(disk.rglob("pixels.npy"))
        filler.unlink()
        freed = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert freed.returncode == 0, freed.stderr[-2000:]
    finally:
        subprocess.run(["umount", "-l", str(disk)])


# --- frozen features are keyed by the exact images ----------------------------------------------


def test_frozen_features_of_one_split_seed_are_never_served_to_another(tmp_path, monkeypatch):
    """A root with train/ and val/ and no test/: each split seed carves another test set of the
    same size, which an earlier key (split letters only) could not tell apart."""
    import torch

    from cxrlab.training import features
    from cxrlab.training.config import TrainConfig
    from cxrlab.training.loop import fit

    root = tmp_path / "data"
    make_class_folders(root / "train", {"NORMAL": 14, "PNEUMONIA": 14}, size=SIZE, images_per_patient=1)
    make_class_folders(root / "val", {"NORMAL": 4, "PNEUMONIA": 4}, size=SIZE, seed=5, start=700)
    served: dict[int, dict] = {}
    original = features.cached_features

    def spy(model, images, indices, **kwargs):
        result = original(model, images, indices, **kwargs)
        if kwargs.get("label") == "test":
            served[current] = {"model": model, "images": images, "indices": np.array(indices), "features": result}
        return result

    monkeypatch.setattr(features, "cached_features", spy)
    for current in (0, 1):
        features.clear_memory_cache()  # the disk cache is what is shared between runs
        fit(
            TrainConfig(
                data=str(root),
                model="scratch_cnn",
                mode="frozen",
                weights="none",
                epochs=1,
                image_size=SIZE,
                batch_size=8,
                split_seed=current,
                out=str(tmp_path / "runs"),
                cache_dir=str(tmp_path / "cache"),
            ),
            show_progress=False,
            log=lambda line: None,
        )
    first, second = served[0], served[1]
    assert len(first["indices"]) == len(second["indices"]) == 4
    assert set(first["indices"]) != set(second["indices"]), "the two split seeds carved the same test set"
    expected = features.compute_features(
        second["model"], second["images"], second["indices"], device=torch.device("cpu"), batch_size=8
    )
    assert np.allclose(second["features"].numpy(), expected, atol=1e-5), "seed 1 got another seed's test features"
