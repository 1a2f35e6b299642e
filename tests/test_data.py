"""The data layer: sources, patient-grouped splits, the decoded-image cache, inspect."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import make_class_folders, make_dataset_root
from cxrlab.core.errors import CxrlabError
from cxrlab.data import cache as cache_module
from cxrlab.data.dataset import load_dataset
from cxrlab.data.inspect import inspect_source
from cxrlab.data.patients import kermany3_class, patient_id
from cxrlab.data.sources import list_source
from cxrlab.data.splits import grouped_holdout, linked_groups


@pytest.mark.parametrize(
    "name, patient",
    [
        ("person1000_bacteria_2931.jpeg", "person1000"),
        ("person1000_virus_1681.jpeg", "person1000"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("IM-0640-0001-0001.jpeg", "IM-0640"),
        ("NORMAL2-IM-0927-0001.jpeg", "NORMAL2-IM-0927"),
        ("NORMAL2-IM-1152-0001-0002.jpeg", "NORMAL2-IM-1152"),
        ("chest_scan.png", "chest_scan"),
    ],
)
def test_patient_ids_from_kermany_names(name, patient):
    assert patient_id(f"/data/train/X/{name}") == patient


def test_kermany3_class():
    assert kermany3_class("person1_virus_2.jpeg", "PNEUMONIA") == "VIRUS"
    assert kermany3_class("person1_bacteria_2.jpeg", "PNEUMONIA") == "BACTERIA"
    assert kermany3_class("IM-0001-0001.jpeg", "NORMAL") == "NORMAL"


def test_dataset_root_carves_val_and_test_by_patient(tiny_root):
    data = load_dataset(str(tiny_root), 32, show_progress=False)
    assert data.classes == ["NORMAL", "PNEUMONIA"]
    assert data.images.shape == (80, 32, 32) and data.images.dtype == np.uint8
    counts = {s: data.count(s) for s in ("train", "val", "test")}
    assert all(counts.values()) and sum(counts.values()) == 80
    by_patient = {}
    for patient, split in zip(data.patients, data.splits):
        by_patient.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in by_patient.values()), "a patient sits in two splits"
    for split in ("train", "val", "test"):
        assert set(data.labels[data.indices(split)]) == {0, 1}, f"{split} is not stratified"


def test_same_seed_same_split_other_seed_other_split(tiny_root):
    first = load_dataset(str(tiny_root), 32, split_seed=3, show_progress=False).splits
    again = load_dataset(str(tiny_root), 32, split_seed=3, show_progress=False).splits
    other = load_dataset(str(tiny_root), 32, split_seed=4, show_progress=False).splits
    assert (first == again).all()
    assert (first != other).any()


def test_existing_test_split_is_kept_and_tiny_val_is_merged(tmp_path):
    root = make_dataset_root(tmp_path / "d", n_train=40, n_test=6)
    make_class_folders(root / "val", {"NORMAL": 1, "PNEUMONIA": 1}, seed=9, start=9000)
    data = load_dataset(str(root), 32, show_progress=False)
    assert data.count("test") == 12
    assert all("/test/" in p for p in np.asarray(data.paths)[data.indices("test")])
    assert any("merged into train" in note for note in data.split_notes)
    assert data.count("val") > 2


def test_duplicates_are_kept_on_one_side_of_a_carved_split():
    patients = ["a", "b", "c", "d"]
    digests = ["x", "y", "x", "z"]  # a and c are byte-identical
    groups = linked_groups(patients, digests)
    assert groups[0] == groups[2] and len(set(groups)) == 3


def test_grouped_holdout_never_splits_a_group():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(100), 3)
    labels = (groups % 4 == 0).astype(int)
    held = grouped_holdout(labels, groups, 0.2, seed=1)
    for g in np.unique(groups):
        assert len(set(held[groups == g])) == 1
    assert 0.1 < held.mean() < 0.3
    assert rng is not None


def test_folder_of_class_folders(kermany_fixture):
    listing = list_source(str(kermany_fixture))
    assert listing.kind == "folder" and listing.classes == ["NORMAL", "PNEUMONIA"] and len(listing) == 6
    data = load_dataset(str(kermany_fixture), 64, all_test=True, show_progress=False)
    assert data.count("test") == 6
    # Real X-rays are stored as RGB JPEGs with equal channels: one channel is kept.
    assert data.images.shape == (6, 64, 64)


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "pneumoniamnist_64.npz"
    np.savez(
        path,
        train_images=rng.integers(0, 255, (20, 64, 64), dtype=np.uint8),
        train_labels=rng.integers(0, 2, (20, 1)),
        val_images=rng.integers(0, 255, (6, 64, 64), dtype=np.uint8),
        val_labels=np.array([[0], [1]] * 3),
        test_images=rng.integers(0, 255, (6, 64, 64), dtype=np.uint8),
        test_labels=np.array([[0], [1]] * 3),
    )
    data = load_dataset(str(path), 32, show_progress=False)
    assert data.classes == ["NORMAL", "PNEUMONIA"]
    assert (data.count("train"), data.count("val"), data.count("test")) == (20, 6, 6)
    source = np.load(path)["test_images"][0]
    expected = np.asarray(Image.fromarray(source).resize((32, 32), Image.BILINEAR, reducing_gap=3.0))
    assert np.array_equal(data.images[data.indices("test")[0]], expected)


def test_pneumoniamnist_offline_says_how_to_pass_a_file(monkeypatch):
    import medmnist

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(medmnist, "PneumoniaMNIST", offline)
    with pytest.raises(CxrlabError, match=r"--data /path/to/pneumoniamnist_64.npz"):
        list_source("pneumoniamnist:64")


def test_second_load_decodes_nothing(tiny_root, monkeypatch):
    first = load_dataset(str(tiny_root), 40, show_progress=False)
    assert first.decoded == 80
    calls = []
    monkeypatch.setattr(cache_module, "_fill_from_files", lambda *a, **k: calls.append(a))
    second = load_dataset(str(tiny_root), 40, show_progress=False)
    assert second.decoded == 0 and not calls
    assert np.array_equal(np.asarray(first.images), np.asarray(second.images))
    assert isinstance(second.images, np.memmap)


def test_a_changed_file_gives_a_new_cache_entry(tiny_root):
    first = load_dataset(str(tiny_root), 24, show_progress=False)
    victim = sorted((tiny_root / "train" / "NORMAL").iterdir())[0]
    Image.fromarray(np.zeros((48, 48), dtype=np.uint8)).save(victim)
    second = load_dataset(str(tiny_root), 24, show_progress=False)
    assert second.fingerprint != first.fingerprint and second.decoded == 80


def test_inspect_counts_patients_and_duplicates(tiny_root):
    normal = sorted((tiny_root / "train" / "NORMAL").iterdir())
    (tiny_root / "train" / "NORMAL" / "IM-0999-0001.jpeg").write_bytes(normal[0].read_bytes())
    summary = inspect_source(str(tiny_root), show_progress=False)
    assert summary["splits"]["train"]["classes"] == {"NORMAL": 41, "PNEUMONIA": 40}
    assert summary["patients"] == 41  # 20 + 20 + the copy under a new patient id
    assert summary["duplicate_groups"] == 1
    assert summary["run_splits"]["test"]["NORMAL"] > 0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "does not exist"),
        (lambda p: (p.mkdir(), p)[1], "no class folders"),
        (lambda p: make_class_folders(p / "train", {"NORMAL": 4}).parent, "one class"),
        (
            lambda p: (p.joinpath("x.txt").parent.mkdir(), p.joinpath("x.txt").write_text("hi"), p / "x.txt")[2],
            "not a .npz",
        ),
    ],
)
def test_bad_sources_fail_with_one_line(tmp_path, make, message):
    path = make(tmp_path / "data")
    with pytest.raises(CxrlabError, match=message) as info:
        load_dataset(str(path), 32, show_progress=False)
    assert "\n" not in str(info.value)
