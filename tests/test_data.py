"""The data layer: sources, patient-grouped splits, the decoded-image cache, inspect."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlab.core.errors import CxrlabError
from cxrlab.data import cache as cache_module
from cxrlab.data.dataset import load_dataset
from cxrlab.data.inspect import inspect_source
from cxrlab.data.patients import kermany3_class, patient_id
from cxrlab.data.sources import list_source
from cxrlab.data.splits import grouped_holdout, linked_groups
from cxrlab.testing import make_class_folders, make_dataset_root


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


def test_grouped_holdout_carves_each_split_once_per_process(monkeypatch):
    from cxrlab.data import splits as splits_module

    monkeypatch.setattr(splits_module, "_carved", {})
    calls = []
    real = splits_module.stratified_group_fold

    def counted(labels, groups, n_splits, seed):
        calls.append(seed)
        return real(labels, groups, n_splits, seed)

    monkeypatch.setattr(splits_module, "stratified_group_fold", counted)
    groups = np.repeat(np.arange(60), 2)
    labels = (groups % 3 == 0).astype(int)
    first = grouped_holdout(labels, groups, 0.2, seed=4)
    first[:] = ~first  # the caller's copy: the remembered mask must not change with it
    again = grouped_holdout(labels.copy(), groups.copy(), 0.2, seed=4)
    assert calls == [4]
    np.testing.assert_array_equal(again, ~first)
    other_seed = grouped_holdout(labels, groups, 0.2, seed=5)
    other_labels = grouped_holdout(1 - labels, groups, 0.2, seed=4)
    assert calls == [4, 5, 4]
    assert not np.array_equal(other_seed, again) and other_labels.dtype == bool


def _sklearn_first_fold(labels, groups, n_splits, seed):
    from sklearn.model_selection import StratifiedGroupKFold

    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(folds.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return mask


@pytest.mark.parametrize("case", range(40))
def test_the_carving_holds_out_what_scikit_learn_holds_out(case):
    """The carving is scikit-learn's StratifiedGroupKFold written out: every mask must be its
    first fold exactly, ties included (patients of one image, many groups alike, 2-3 classes)."""
    from cxrlab.data.splits import stratified_group_fold

    rng = np.random.default_rng(case)
    n = int(rng.integers(40, 900))
    n_groups = int(rng.integers(12, max(13, n // int(rng.integers(1, 4)))))
    groups = rng.integers(0, n_groups, n)
    n_classes = 2 + case % 2
    labels = rng.choice(n_classes, size=n, p=rng.dirichlet(np.full(n_classes, 3.0)))
    labels[: n_classes * 10] = np.repeat(np.arange(n_classes), 10)  # every class in several groups
    fewest = min(len(np.unique(groups[labels == c])) for c in range(n_classes))
    n_splits = int(min(rng.integers(2, 9), fewest))
    seed = int(rng.integers(0, 2**32 - 1))
    np.testing.assert_array_equal(
        stratified_group_fold(labels, groups, n_splits, seed), _sklearn_first_fold(labels, groups, n_splits, seed)
    )


def test_the_carving_of_real_patients_is_scikit_learns():
    from cxrlab.data.patients import patient_id
    from cxrlab.data.splits import stratified_group_fold

    files = sorted(str(p) for p in (Path(__file__).parent / "fixtures" / "kermany-small").rglob("*.jpeg"))
    labels = np.array([int("PNEUMONIA" in f) for f in files])
    groups = np.unique([patient_id(f) for f in files], return_inverse=True)[1]
    assert len(np.unique(groups)) < len(files)  # some patients have several images
    for n_splits, seed in ((2, 0), (3, 1), (5, 42)):
        np.testing.assert_array_equal(
            stratified_group_fold(labels, groups, n_splits, seed), _sklearn_first_fold(labels, groups, n_splits, seed)
        )


def test_carved_masks_are_remembered_on_disk_exactly(tmp_path, monkeypatch):
    from cxrlab.data import splits as splits_module

    groups = np.repeat(np.arange(80), 2)
    labels = (groups % 3 == 0).astype(int)
    monkeypatch.setattr(splits_module, "_carved", {})
    carved = grouped_holdout(labels, groups, 0.25, seed=2, memo_dir=tmp_path / "splits")
    assert [p.suffix for p in (tmp_path / "splits").iterdir()] == [".npy"]  # written whole: no partial file left

    # A later command (a fresh process: nothing remembered in memory) reads the mask back
    # without carving again.
    monkeypatch.setattr(splits_module, "_carved", {})
    monkeypatch.setattr(splits_module, "_carve_holdout", lambda *args: pytest.fail("carved again"))
    np.testing.assert_array_equal(grouped_holdout(labels, groups, 0.25, seed=2, memo_dir=tmp_path / "splits"), carved)

    # A kept file that is not this mask (damaged, or another length) is carved anew.
    (memo,) = (tmp_path / "splits").glob("*.npy")
    memo.write_bytes(b"not an array")
    monkeypatch.setattr(splits_module, "_carved", {})
    recarved = []
    monkeypatch.setattr(splits_module, "_carve_holdout", lambda *args: recarved.append(args) or carved.copy())
    np.testing.assert_array_equal(grouped_holdout(labels, groups, 0.25, seed=2, memo_dir=tmp_path / "splits"), carved)
    assert len(recarved) == 1 and np.load(memo).shape == carved.shape


def test_a_remembered_split_is_the_split_a_cold_load_carves(kermany_fixture, tmp_path, monkeypatch):
    from cxrlab.data import splits as splits_module

    monkeypatch.setattr(splits_module, "_carved", {})
    cold = load_dataset(
        str(kermany_fixture), 32, val_fraction=0.3, test_fraction=0.3, cache_dir=str(tmp_path), show_progress=False
    )
    assert list((tmp_path / "splits").glob("*.npy"))
    monkeypatch.setattr(splits_module, "_carved", {})
    warm = load_dataset(
        str(kermany_fixture), 32, val_fraction=0.3, test_fraction=0.3, cache_dir=str(tmp_path), show_progress=False
    )
    assert list(warm.splits) == list(cold.splits) and warm.split_fingerprint == cold.split_fingerprint


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


# --- one file, one place, one label ------------------------------------------------------------


def _small_root(tmp_path) -> Path:
    return make_dataset_root(tmp_path / "data", n_train=8, size=32)


def test_a_link_from_one_class_folder_into_another_is_an_error(tmp_path):
    root = _small_root(tmp_path)
    # The walk follows links: every PNEUMONIA image would be listed again, labelled NORMAL.
    os.symlink("../PNEUMONIA", root / "train" / "NORMAL" / "more")
    with pytest.raises(CxrlabError, match="reached twice") as info:
        list_source(str(root))
    message = str(info.value)
    assert "\n" not in message
    assert "NORMAL/more/" in message and "train/PNEUMONIA/" in message  # both places are named
    assert "(train, NORMAL)" in message and "(train, PNEUMONIA)" in message


def test_real_paths_are_realpath(tmp_path, monkeypatch):
    """Each folder resolved once gives what realpath gives each file: links to files, links to
    folders, links to links, relative paths, and a file whose folder is reached through a link."""
    from cxrlab.data.sources import real_paths

    root = _small_root(tmp_path)
    normal = sorted((root / "train" / "NORMAL").iterdir())
    os.symlink(normal[0], root / "file-link.png")
    os.symlink(root / "file-link.png", root / "link-to-link.png")
    os.symlink(root / "train", tmp_path / "train-link")
    monkeypatch.chdir(root / "train")
    files = [
        str(normal[1]),
        str(root / "file-link.png"),
        str(root / "link-to-link.png"),
        str(tmp_path / "train-link" / "NORMAL" / normal[2].name),
        f"NORMAL/{normal[3].name}",
        f"../train/NORMAL/{normal[3].name}",
    ]
    assert list(real_paths(files)) == [os.path.realpath(f) for f in files]


def test_a_class_folder_that_links_to_another_is_an_error(tmp_path):
    root = _small_root(tmp_path)
    os.symlink("NORMAL", root / "train" / "COVID")
    with pytest.raises(CxrlabError, match="reached twice") as info:
        load_dataset(str(root), 32, show_progress=False)
    assert "COVID" in str(info.value) and "NORMAL" in str(info.value)


def test_a_test_folder_linked_to_train_is_an_error(tmp_path):
    root = _small_root(tmp_path)
    (root / "test").mkdir()
    os.symlink("../train/NORMAL", root / "test" / "NORMAL")
    os.symlink("../train/PNEUMONIA", root / "test" / "PNEUMONIA")
    with pytest.raises(CxrlabError, match=r"\(test, NORMAL\)"):
        list_source(str(root))


def test_a_link_to_a_file_outside_the_root_is_one_place(tmp_path):
    """The control: a link is not an error in itself, only a second place for one file."""
    root = _small_root(tmp_path)
    outside = tmp_path / "elsewhere.jpeg"
    first = next((root / "train" / "NORMAL").iterdir())
    outside.write_bytes(first.read_bytes()[:-1] + b"\xd9")  # other bytes: not a duplicate either
    os.symlink(outside, root / "train" / "NORMAL" / "IM-0777-0001.jpeg")
    assert len(list_source(str(root))) == 17


def _twin_under_other_label(root: Path) -> Path:
    source = sorted((root / "train" / "NORMAL").iterdir())[0]
    twin = root / "train" / "PNEUMONIA" / "person999_bacteria_1.jpeg"
    twin.write_bytes(source.read_bytes())
    return twin


def test_identical_bytes_under_two_labels_are_refused_unless_kept(tmp_path):
    root = _small_root(tmp_path)
    twin = _twin_under_other_label(root)
    with pytest.raises(CxrlabError, match="byte-identical images carry different labels") as info:
        load_dataset(str(root), 32, show_progress=False)
    assert twin.name in str(info.value) and "--on-duplicate-label keep" in str(info.value)
    kept = load_dataset(str(root), 32, on_duplicate_label="keep", show_progress=False)
    assert len(kept.paths) == 17
    assert any("different labels" in note and twin.name in note for note in kept.split_notes)
    summary = inspect_source(str(root), show_progress=False)
    (conflict,) = summary["duplicates_with_different_labels"]
    assert twin.name in conflict and "(NORMAL)" in conflict and "(PNEUMONIA)" in conflict


def test_train_refuses_identical_bytes_under_two_labels(tmp_path):
    from cxrlab.training.config import TrainConfig
    from cxrlab.training.loop import fit

    root = _small_root(tmp_path)
    _twin_under_other_label(root)
    settings = dict(data=str(root), model="scratch_cnn", mode="scratch", epochs=1, image_size=32, batch_size=8)
    with pytest.raises(CxrlabError, match="different labels"):
        fit(TrainConfig(**settings, out=str(tmp_path / "runs")), show_progress=False, log=lambda line: None)
    assert not (tmp_path / "runs").exists()
    assert "on_duplicate_label" in TrainConfig.model_fields
    assert TrainConfig.model_fields["on_duplicate_label"].description


# --- a local path wins over the download spec --------------------------------------------------


def _npz(path: Path, n: int = 12, shape=(28, 28), labels=None) -> Path:
    rng = np.random.default_rng(0)
    train_labels = np.arange(n) % 2 if labels is None else np.asarray(labels)
    np.savez(
        path,
        train_images=rng.integers(0, 255, (n, *shape), dtype=np.uint8),
        train_labels=train_labels.reshape(-1, 1),
    )
    return path


def test_a_local_file_named_like_the_download_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _npz(tmp_path / "pneumoniamnist_64.npz")
    listing = list_source("pneumoniamnist_64.npz")
    assert listing.kind == "npz" and len(listing) == 12 and listing.classes == ["NORMAL", "PNEUMONIA"]


def test_a_local_folder_named_pneumoniamnist_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset_root(tmp_path / "pneumoniamnist", n_train=4, size=32)
    assert list_source("pneumoniamnist").kind == "root"


def test_only_the_exact_spec_is_a_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CxrlabError, match=r"pneumoniamnist_64\.npz does not exist"):
        list_source("pneumoniamnist_64.npz")
    with pytest.raises(CxrlabError, match="pneumoniamnist-old does not exist"):
        list_source("pneumoniamnist-old")
    with pytest.raises(CxrlabError, match="SIZE one of 28, 64, 128, 224"):
        list_source("pneumoniamnist:65")


# --- MedMNIST arrays -----------------------------------------------------------------------------


def test_npz_images_with_a_channel_axis_are_read(tmp_path):
    path = tmp_path / "images.npz"
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (10, 28, 28, 1), dtype=np.uint8)
    np.savez(path, train_images=images, train_labels=np.arange(10) % 2)
    data = load_dataset(str(path), 28, val_fraction=0.2, test_fraction=0.2, show_progress=False)
    assert data.images.shape == (10, 28, 28)
    order = [int(p.rpartition("/")[2]) for p in data.paths]
    assert np.array_equal(np.asarray(data.images), images[order, ..., 0])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _npz(p, shape=(0, 0)), "hold no pixels"),
        (lambda p: _npz(p, shape=(28, 28, 2)), "expected"),
        (lambda p: _npz(p, labels=[0, 2] * 6), r"not 0\.\.2 \(no image of class 1\)"),
        (lambda p: _npz(p, labels=[1, 2] * 6), "no image of class 0"),
        (lambda p: _npz(p, labels=[0] * 12), "one class"),
    ],
    ids=["(N, 0, 0)", "two channels", "labels 0 and 2", "labels 1 and 2", "one label"],
)
def test_npz_that_cannot_be_read_as_meant_is_one_line(tmp_path, make, message):
    path = make(tmp_path / "data.npz")
    with pytest.raises(CxrlabError, match=message) as info:
        list_source(str(path))
    assert "\n" not in str(info.value) and "data.npz" in str(info.value)


def test_npz_test_label_train_never_saw_is_one_line(tmp_path):
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        train_images=rng.integers(0, 255, (8, 28, 28), dtype=np.uint8),
        train_labels=np.arange(8) % 2,
        test_images=rng.integers(0, 255, (4, 28, 28), dtype=np.uint8),
        test_labels=np.array([0, 1, 2, 1]),
    )
    with pytest.raises(CxrlabError, match="test_labels holds class 2, which train_labels never does"):
        load_dataset(str(path), 28, show_progress=False)


# --- names and folders that cannot be read -------------------------------------------------------


def test_an_unlistable_class_folder_is_not_called_empty(tmp_path, monkeypatch):
    root = _small_root(tmp_path)
    locked = root / "train" / "NORMAL"
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    # As root no permission bit stops a read, so the refusal the kernel would give is staged.
    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(CxrlabError, match=r"cannot list folder .*NORMAL: Permission denied") as info:
        list_source(str(root))
    assert "no images" not in str(info.value)


def test_a_file_name_that_is_not_utf8_is_one_line(tmp_path):
    root = _small_root(tmp_path)
    first = next((root / "train" / "NORMAL").iterdir())
    name = os.fsencode(root / "train" / "NORMAL") + b"/R\xf6ntgen-01.jpeg"  # Latin-1, not UTF-8
    try:
        with open(name, "wb") as f:
            f.write(first.read_bytes())
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    with pytest.raises(CxrlabError, match=r"R\\xf6ntgen-01\.jpeg is not UTF-8") as info:
        list_source(str(root))
    assert "\n" not in str(info.value)
    str(info.value).encode("utf-8")  # the message itself prints anywhere


# --- sizes that cannot fit -------------------------------------------------------------------------


def test_a_batch_that_cannot_fit_in_memory_is_refused_with_the_figure(monkeypatch):
    from cxrlab.data import batches

    monkeypatch.setattr(batches, "available_memory", lambda: 2 * 10**9)
    with pytest.raises(CxrlabError, match=r"32 images at 4096 px needs at least 9\.1 GB .* 2\.0 GB is available"):
        batches.check_batch_memory(32, 4096)
    batches.check_batch_memory(32, 224)  # 27 MB: fits


def test_a_cache_that_cannot_fit_on_disk_is_refused_with_the_figure(tiny_root, tmp_path, monkeypatch):
    from collections import namedtuple

    from cxrlab.core.errors import StorageError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    cache = tmp_path / "cache"
    with pytest.raises(StorageError, match=r"80 images at 1024 px needs 83\.9 MB .* has 1\.0 MB free"):
        load_dataset(str(tiny_root), 1024, cache_dir=str(cache), show_progress=False)
    assert not list(cache.rglob("*.npy")) and not list(cache.rglob("*.tmp"))
