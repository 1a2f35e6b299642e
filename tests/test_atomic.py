"""Atomic records: every file is written under a temporary name and renamed; caches are checked.

* A whole run (decoded-image cache, feature cache, every file of the run directory) is
  watched: each file left on disk must have arrived by ``os.replace``.
* A write that fails half way, and a process killed half way through a write, leave the
  old file as it was.
* A decoded-image or feature cache entry whose bytes or manifest do not match is rebuilt,
  and the rebuilt pixels are the right ones.
* Two processes that build the same decoded-image cache at once end with one correct cache
  decoded once: the file lock makes the second wait and then read the first's result.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import make_class_folders, make_dataset_root
from cxrlab.core.io import read_json, write_json

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
    with pytest.raises(OSError, match="No space"):
        writer.model({"w": torch.zeros(3)}, {"epoch": 2})
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
