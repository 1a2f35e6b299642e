"""No silent reuse: images that trained or validated a run are found wherever they come back.

* ``evaluate`` and ``predict`` on a run's own training or validation images (found by real
  path, and by content under another name) say how many, and give the metrics on the rest;
  ``--allow-overlap`` silences the warning, never the record.
* A given ``test/`` folder that shares patients or byte-identical files with ``train/`` is
  reported at train time, in metrics.json and in config.yaml.
* A MedMNIST .npz has no patient ids: ``train#12`` and ``test#12`` are two patients.
* Augmentation that a frozen run on cached features could not apply is refused, not recorded.
* ``predict`` shows the decision threshold beside the probabilities.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cxrlab.testing import make_class_folders, make_dataset_root
from cxrlab.training.records import load_run, read_csv

SIZE = 32


def _fit(root: Path, out: Path, **settings):
    from cxrlab.training.config import TrainConfig
    from cxrlab.training.loop import fit

    values = dict(
        data=str(root), model="scratch_cnn", mode="scratch", epochs=1, image_size=SIZE, batch_size=8, out=str(out)
    )
    return fit(TrainConfig(**{**values, **settings}), show_progress=False, log=lambda line: None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run on a root with train/ only: val and test carved from it."""
    base = tmp_path_factory.mktemp("leakage")
    root = make_dataset_root(base / "data", n_train=16, size=SIZE)
    run_dir = _fit(root, base / "runs", name="run")
    return root, run_dir


def _rows(run_dir: Path) -> list[dict]:
    return read_csv(run_dir / "split.csv")


def test_split_csv_records_each_files_content_hash(trained):
    import hashlib

    _, run_dir = trained
    for row in _rows(run_dir):
        assert row["sha1"] == hashlib.sha1(Path(row["path"]).read_bytes()).hexdigest()


def test_evaluate_on_the_runs_own_images_says_how_many_and_scores_the_rest(trained, cli):
    root, run_dir = trained
    rows = _rows(run_dir)
    learned = sum(r["split"] in ("train", "val") for r in rows)
    result = cli("evaluate", str(run_dir), "--data", str(root / "train"), "--json")
    assert result.code == 0, result.err
    scored = json.loads(result.out)
    overlap = scored["overlap"]
    assert overlap["images"] == learned and overlap["train"] + overlap["val"] == learned
    assert overlap["without_overlap"]["n"] == scored["n_test"] - learned == sum(r["split"] == "test" for r in rows)
    assert f"warning: {learned} of {scored['n_test']} images trained" in result.err
    written = json.loads(next(run_dir.glob("eval-train-*.json")).read_text())
    assert written["overlap"]["images"] == learned

    silent = cli("evaluate", str(run_dir), "--data", str(root / "train"), "--json", "--allow-overlap")
    assert silent.code == 0 and "warning" not in silent.err
    assert json.loads(silent.out)["overlap"]["images"] == learned, "the record keeps the count"


def test_a_training_image_under_another_name_is_found_by_content(trained, cli, tmp_path):
    _, run_dir = trained
    train_row = next(r for r in _rows(run_dir) if r["split"] == "train")
    test_row = next(r for r in _rows(run_dir) if r["split"] == "test")
    copy = tmp_path / "renamed-scan.jpeg"
    shutil.copyfile(train_row["path"], copy)
    result = cli("predict", str(run_dir), str(copy), test_row["path"], "--json")
    assert result.code == 0, result.err
    predictions = json.loads(result.out)
    assert [p["seen_in"] for p in predictions] == ["train", None]
    assert "warning: 1 of 2 images trained or validated this run" in result.err
    assert "warning" not in cli("predict", str(run_dir), str(copy), "--allow-overlap").err


def test_predict_shows_the_threshold_in_text_and_json(trained, cli):
    root, run_dir = trained
    run = load_run(run_dir)
    image = next((root / "train" / "NORMAL").iterdir())
    as_json = json.loads(cli("predict", str(run_dir), str(image), "--json", "--allow-overlap").out)
    assert as_json[0]["threshold"] == pytest.approx(run.threshold)
    assert as_json[0]["positive_class"] == "PNEUMONIA"
    text = cli("predict", str(run_dir), str(image), "--allow-overlap").out.strip().split("\t")
    assert text[-1] == f"PNEUMONIA if p >= {run.threshold:.4f}"


def test_a_given_test_folder_sharing_patients_with_train_is_reported(tmp_path):
    root = make_dataset_root(tmp_path / "data", n_train=16, size=SIZE)
    make_class_folders(root / "test", {"NORMAL": 4, "PNEUMONIA": 4}, size=SIZE, seed=3, start=500)
    # The same patient's other image in test/ (IM-0000 is patient 0 of train/NORMAL), and a copy.
    first = sorted((root / "train" / "NORMAL").iterdir())[0]
    shutil.copyfile(first, root / "test" / "NORMAL" / "IM-0000-0009.jpeg")
    run_dir = _fit(root, tmp_path / "runs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_overlap"]["patients"] == 1
    assert metrics["test_overlap"]["identical_images"] == 1
    assert "IM-0000" in metrics["test_overlap"]["examples"]
    record = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert record["data_info"]["test_overlap"]["patients"] == 1
    assert load_run(run_dir).scores.test_overlap.any


def test_a_carved_test_split_shares_nothing(trained):
    _, run_dir = trained
    assert not load_run(run_dir).scores.test_overlap.any


def test_npz_images_are_each_their_own_patient(tmp_path):
    from cxrlab.data.dataset import load_dataset
    from cxrlab.data.inspect import inspect_source

    path = tmp_path / "medmnist.npz"
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 6), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(path, **arrays)
    data = load_dataset(str(path), 28, show_progress=False)
    assert len(set(data.patients)) == len(data.patients) == 32, "train#12 and test#12 are not one patient"
    assert any("no patient ids" in note for note in data.split_notes)
    assert not data.overlap("test")["patients"]
    summary = inspect_source(str(path), show_progress=False)
    assert summary["patients"] == 32 and summary["patients_in_several_splits"] == 0


def test_augmentation_a_frozen_run_cannot_apply_is_refused(tiny_root, tmp_path, cli):
    from pydantic import ValidationError

    from cxrlab.training.config import TrainConfig

    with pytest.raises(ValidationError, match="feature_views to 2 or more"):
        TrainConfig(data="d", model="scratch_cnn", mode="frozen", augment="light")
    # What does something is accepted: augmented views, or the backbone run on every batch.
    TrainConfig(data="d", model="scratch_cnn", mode="frozen", augment="light", feature_views=2)
    TrainConfig(data="d", model="scratch_cnn", mode="frozen", augment="strong", feature_cache=False)
    TrainConfig(data="d", model="scratch_cnn", mode="gradual", augment="light")
    result = cli(
        "train", "--data", str(tiny_root), "--model", "scratch_cnn", "--mode", "frozen", "--augment", "light",
        "--image-size", str(SIZE), "--out", str(tmp_path / "runs"), "--quiet",
    )  # fmt: skip
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "augment light" in result.err
    assert not (tmp_path / "runs").exists()


def test_evaluate_on_the_runs_own_root_scores_its_test_split_without_overlap(trained, cli):
    root, run_dir = trained
    result = cli("evaluate", str(run_dir), "--data", str(root), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["overlap"]["images"] == 0 and "warning" not in result.err


def test_resume_refuses_splits_that_changed_with_the_same_files(tmp_path, monkeypatch):
    """Swapping one train image with one test image keeps every file and the string of split
    initials ("t" for both): the resume guard must still see it."""
    from cxrlab.core.errors import CxrlabError
    from cxrlab.data import dataset
    from cxrlab.training import loop

    root = make_dataset_root(tmp_path / "data", n_train=16, size=SIZE)

    def killed(*args, **kwargs):
        raise RuntimeError("killed before scoring")

    with monkeypatch.context() as patch:
        patch.setattr(loop, "_finish", killed)
        with pytest.raises(RuntimeError):
            _fit(root, tmp_path / "runs", name="swapped", epochs=2)
    carve = dataset.carve_splits

    def swapped(*args, **kwargs):
        splits = carve(*args, **kwargs)
        first_train, first_test = np.flatnonzero(splits == "train")[0], np.flatnonzero(splits == "test")[0]
        splits[first_train], splits[first_test] = "test", "train"
        return splits

    monkeypatch.setattr(dataset, "carve_splits", swapped)
    with pytest.raises(CxrlabError, match="changed since the run started"):
        loop.fit(None, resume=tmp_path / "runs" / "swapped", show_progress=False, log=lambda line: None)
