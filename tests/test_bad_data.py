"""Messy data, as a table: every case names what a user should see.

Each case builds a small dataset root (train/ with 8 NORMAL and 8 PNEUMONIA 32-px images)
plus one oddity, then runs the real command line in-process (``cxrlab.cli.main`` with
``sys.argv`` set, so ``CxrlabError`` becomes exit code 2 exactly as in a shell) and checks
the outcome:

* ``BAD``: an image that cannot be decoded. ``cxrlab train`` stops with exit code 2 and one
  line naming the file; ``data inspect --json`` lists it as unreadable; with
  ``--on-bad-image skip`` the run finishes and ``config.yaml`` records the skip.
* ``ERROR``: a layout or file the run cannot use. Both ``train`` and ``data inspect`` stop
  with exit code 2 and one line naming the file or folder.
* ``IGNORED``: not data (``.DS_Store``, link loops, ...). The run uses the 16 images and
  nothing else; ``data inspect`` reports what it passed over.
* ``NOTE``: usable but worth knowing; the run finishes and records the note in
  ``config.yaml``, and ``data inspect`` prints it.
* ``DECODED``: an unusual but valid image; it decodes to the right pixels, and (where the
  case says so) a run uses it under its own name and label.
* ``ACCEPTED``: an unusual but valid layout; the run uses it as a user would mean it.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cxrlab.data.images import decode_file
from cxrlab.testing import CliResult, make_class_folders
from cxrlab.training.records import read_csv

SIZE = 32
BASE_IMAGES = 16  # 8 NORMAL + 8 PNEUMONIA in train/

BAD, ERROR, IGNORED, NOTE, DECODED, ACCEPTED = "bad", "error", "ignored", "note", "decoded", "accepted"


# --- making data ----------------------------------------------------------------------------


def base_root(tmp: Path) -> Path:
    root = tmp / "data"
    make_class_folders(root / "train", {"NORMAL": 8, "PNEUMONIA": 8}, size=SIZE)
    return root


def gradient(height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """A uint8 image whose every pixel differs from its neighbours: 0 top left, 255 bottom right."""
    y, x = np.mgrid[0:height, 0:width]
    return np.round(255 * (x + y) / (height + width - 2)).astype(np.uint8)


def encoded(array: np.ndarray, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **save)  # the mode follows the array: (H, W, 4) uint8 is RGBA
    return buffer.getvalue()


def add_file(name: str, data: bytes, folder: str = "train/NORMAL") -> Callable[[Path], tuple[Path, str]]:
    def make(tmp: Path) -> tuple[Path, str]:
        root = base_root(tmp)
        (root / folder / name).write_bytes(data)
        return root, name

    return make


def write_dicom(path: Path, pixels: np.ndarray, photometric: str) -> None:
    pytest.importorskip("pydicom")  # an optional extra: cxrlab[dicom]
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def bone_phantom() -> np.ndarray:
    """12-bit values: a left half of 100 and a right half of 4000."""
    pixels = np.full((SIZE, SIZE), 4000, dtype=np.uint16)
    pixels[:, : SIZE // 2] = 100
    return pixels


def add_dicom(name: str, photometric: str, pixels: Callable[[], np.ndarray] = bone_phantom):
    def make(tmp: Path) -> tuple[Path, str]:
        root = base_root(tmp)
        write_dicom(root / "train" / "NORMAL" / name, pixels(), photometric)
        return root, name

    return make


def npz_file(**arrays) -> Callable[[Path], tuple[Path, str]]:
    def make(tmp: Path) -> tuple[Path, str]:
        path = tmp / "pneumoniamnist.npz"
        np.savez(path, **{k: v() if callable(v) else v for k, v in arrays.items()})
        return path, path.name

    return make


def npz_images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def npz_labels(n: int) -> np.ndarray:
    return (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)


def npy_as_npz(tmp: Path) -> tuple[Path, str]:
    path = tmp / "images.npz"
    with open(path, "wb") as f:
        np.save(f, npz_images(4))
    return path, path.name


def three_classes(tmp: Path, test_classes: dict[str, int]) -> Path:
    root = tmp / "data"
    make_class_folders(root / "train", {"NORMAL": 8, "PNEUMONIA": 8, "COVID": 8}, size=SIZE)
    make_class_folders(root / "test", test_classes, size=SIZE, start=500, seed=1)
    return root


def class_missing_from_test(tmp: Path) -> tuple[Path, str]:
    return three_classes(tmp, {"NORMAL": 4, "PNEUMONIA": 4}), "COVID"


def empty_class_in_test(tmp: Path) -> tuple[Path, str]:
    root = three_classes(tmp, {"NORMAL": 4, "PNEUMONIA": 4})
    (root / "test" / "COVID").mkdir()
    return root, "COVID"


def class_only_in_test(tmp: Path) -> tuple[Path, str]:
    root = base_root(tmp)
    make_class_folders(root / "test", {"NORMAL": 4, "PNEUMONIA": 4, "COVID": 4}, size=SIZE, start=500)
    return root, "test/COVID"


def empty_class_in_train(tmp: Path) -> tuple[Path, str]:
    root = base_root(tmp)
    (root / "train" / "COVID").mkdir()
    return root, "COVID"


def one_class_in_train(tmp: Path) -> tuple[Path, str]:
    root = tmp / "data"
    make_class_folders(root / "train", {"NORMAL": 8}, size=SIZE)
    return root, "train/"


def case_twins_in_train(tmp: Path) -> tuple[Path, str]:
    root = base_root(tmp)
    make_class_folders(root / "train", {"normal": 2}, size=SIZE, start=900)
    return root, "normal"


def other_case_in_test(tmp: Path) -> tuple[Path, str]:
    root = base_root(tmp)
    make_class_folders(root / "test", {"normal": 4, "Pneumonia": 4}, size=SIZE, start=500, seed=1)
    return root, "normal"


def symlink_loop(tmp: Path) -> tuple[Path, str]:
    root = base_root(tmp)
    os.symlink(".", root / "train" / "NORMAL" / "again")
    return root, "again"


def symlink_to_split(tmp: Path) -> tuple[Path, str]:
    # A link up to train/ would otherwise list PNEUMONIA's images again, labelled NORMAL.
    root = base_root(tmp)
    os.symlink("..", root / "train" / "NORMAL" / "up")
    return root, "up"


def dangling_symlink(tmp: Path) -> tuple[Path, str]:
    root = base_root(tmp)
    os.symlink(tmp / "gone.jpeg", root / "train" / "NORMAL" / "gone.jpeg")
    return root, "gone.jpeg"


def macosx_folder(tmp: Path) -> tuple[Path, str]:
    root = base_root(tmp)
    folder = root / "train" / "__MACOSX" / "NORMAL"
    folder.mkdir(parents=True)
    (folder / "._IM-0000-0001.jpeg").write_bytes(b"\0\x05\x16\x07" + b"\0" * 60)
    return root, "__MACOSX"


def link_into_sibling(tmp: Path) -> tuple[Path, str]:
    # Followed, the link would list every PNEUMONIA image a second time, labelled NORMAL.
    root = base_root(tmp)
    os.symlink("../PNEUMONIA", root / "train" / "NORMAL" / "more")
    return root, "more"


def class_folder_linked_to_another(tmp: Path) -> tuple[Path, str]:
    root = base_root(tmp)
    os.symlink("NORMAL", root / "train" / "COVID")
    return root, "COVID"


def exif_rotated(tmp: Path) -> tuple[Path, str]:
    # Stored 64 x 32 with the top half white; orientation 6 means "rotate 90 degrees
    # clockwise to display", so the displayed image is 32 x 64 with the right half white.
    stored = np.zeros((32, 64), dtype=np.uint8)
    stored[:16] = 255
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    root = base_root(tmp)
    image.save(root / "train" / "NORMAL" / "phone-photo.jpeg", quality=95, exif=exif.tobytes())
    return root, "phone-photo.jpeg"


def valid_jpeg(array: np.ndarray | None = None) -> bytes:
    return encoded(gradient() if array is None else array, "JPEG", quality=95)


# --- checking decoded pixels -------------------------------------------------------------------


def close_to_gradient(tolerance: int) -> Callable[[np.ndarray], None]:
    def check(pixels: np.ndarray) -> None:
        assert np.abs(pixels.astype(int) - gradient()).max() <= tolerance

    return check


def stretched_16bit(pixels: np.ndarray) -> None:
    # 12 bits used out of 16 (values 1000..3000): the used range is stretched to 0..255.
    source = sixteen_bit().astype(np.float64)
    expected = np.round((source - 1000) * 255 / 2000).astype(np.uint8)
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.array_equal(pixels, expected)


def sixteen_bit() -> np.ndarray:
    return (1000 + gradient().astype(np.uint32) * 2000 // 255).astype(np.uint16)


def rgba_over_black(pixels: np.ndarray) -> None:
    assert np.array_equal(pixels[8:], gradient()[8:]), "opaque pixels must keep their grey value"
    assert pixels[:8].max() == 0, "transparent pixels are background"


def rgba() -> np.ndarray:
    array = np.repeat(gradient()[..., None], 4, axis=2)
    array[..., 3] = 255
    array[:8, :, 3] = 0
    array[:8, :, :3] = 200  # colour under full transparency must not show
    return array


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient()).convert("RGB").convert("CMYK").save(buffer, "JPEG", quality=100)
    return buffer.getvalue()


def right_half_white(pixels: np.ndarray) -> None:
    assert pixels[:, SIZE // 2 + 2 :].min() > 200 and pixels[:, : SIZE // 2 - 2].max() < 55


def bone_bright_left(pixels: np.ndarray) -> None:
    # MONOCHROME1: low stored values are bright (bone); shown inverted to match the rest.
    assert pixels[:, : SIZE // 2 - 1].min() == 255 and pixels[:, SIZE // 2 + 1 :].max() == 0


def bone_bright_right(pixels: np.ndarray) -> None:
    assert pixels[:, : SIZE // 2 - 1].max() == 0 and pixels[:, SIZE // 2 + 1 :].min() == 255


def lower_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow refuses images over 2 x MAX_IMAGE_PIXELS and warns over MAX_IMAGE_PIXELS; the
    # 32-px images stay under 3000 pixels, the "huge" ones do not.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)


# --- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], tuple[Path, str]]  # tmp folder -> (--data argument, the name the outcome mentions)
    outcome: str
    check: Callable[[np.ndarray], None] = lambda pixels: None  # DECODED: the 32-px pixels of the file
    run: bool = False  # DECODED: also train on it and find it in split.csv
    setup: Callable[[pytest.MonkeyPatch], None] | None = None
    reason: str = ""  # BAD: words the reason must hold


_JPEG = valid_jpeg()
_PNG = encoded(gradient(), "PNG")

CASES = [
    Case(
        "corrupt jpeg",
        add_file("IM-0900-0001.jpeg", _JPEG[:200] + b"\x00garbage" * 40),
        BAD,
        reason="not a readable image",
    ),
    Case("truncated jpeg", add_file("IM-0901-0001.jpeg", _JPEG[: len(_JPEG) // 2]), BAD, reason="truncated"),
    Case("truncated png", add_file("IM-0902-0001.png", _PNG[: len(_PNG) // 2]), BAD, reason="truncated"),
    Case("zero-byte file", add_file("IM-0903-0001.jpeg", b""), BAD, reason="empty"),
    Case(
        "text file named .jpeg",
        add_file("IM-0904-0001.jpeg", b"<html>not found</html>\n"),
        BAD,
        reason="not an image in a known format",
    ),
    Case(
        "corrupt dicom",
        add_file("IM-0905-0001.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00garbage" * 8),
        BAD,
        reason="not a readable image",
    ),
    Case(
        "huge image (bomb error)",
        add_file("IM-0906-0001.png", encoded(np.zeros((100, 100), np.uint8), "PNG")),
        BAD,
        setup=lower_pixel_limit,
        reason="too large",
    ),
    Case(
        "huge image (bomb warning)",
        add_file("IM-0907-0001.jpeg", encoded(np.zeros((60, 60), np.uint8), "JPEG")),
        BAD,
        setup=lower_pixel_limit,
        reason="too large",
    ),
    Case(
        "huge dicom",
        add_dicom("IM-0908-0001.dcm", "MONOCHROME2", lambda: np.zeros((100, 100), np.uint16)),
        BAD,
        setup=lower_pixel_limit,
        reason="too large",
    ),
    Case("dangling symlink", dangling_symlink, BAD, reason="cannot open"),
    Case(
        "corrupt file with [brackets], spaces, non-ASCII",
        add_file("[scan] röntgen 肺 1.jpeg", b"\xff\xd8junk"),
        BAD,
        reason="not an image in a known format",
    ),
    Case(".DS_Store beside images", add_file(".DS_Store", b"\0\0\0\1Bud1" + b"\0" * 50), IGNORED),
    Case("Thumbs.db beside images", add_file("Thumbs.db", b"\xd0\xcf\x11\xe0" + b"\0" * 60), IGNORED),
    Case("AppleDouble ._ file", add_file("._IM-0000-0001.jpeg", b"\0\x05\x16\x07" + b"\0" * 60), IGNORED),
    Case("notes.txt in a class folder", add_file("notes.txt", b"scanned 2019\n"), IGNORED),
    Case("__MACOSX folder in train/", macosx_folder, IGNORED),
    Case("symlink loop to its own folder", symlink_loop, IGNORED),
    Case("symlink up to the split folder", symlink_to_split, IGNORED),
    Case("class folder in test/ only", class_only_in_test, ERROR),
    Case("class folders differing in case in train/", case_twins_in_train, ERROR),
    Case("empty class folder in train/", empty_class_in_train, ERROR),
    Case("one class in train/", one_class_in_train, ERROR),
    Case("npz without train_labels", npz_file(train_images=lambda: npz_images(4)), ERROR),
    Case(
        "npz with mismatched lengths",
        npz_file(train_images=lambda: npz_images(6), train_labels=lambda: npz_labels(5)),
        ERROR,
    ),
    Case(
        "npz with val_images but no val_labels",
        npz_file(
            train_images=lambda: npz_images(6), train_labels=lambda: npz_labels(6), val_images=lambda: npz_images(2)
        ),
        ERROR,
    ),
    Case(
        "npz holding a pickled object array",
        npz_file(train_images=lambda: np.array([{"a": 1}, {"b": 2}], dtype=object), train_labels=lambda: npz_labels(2)),
        ERROR,
    ),
    Case("plain .npy named .npz", npy_as_npz, ERROR),
    Case(
        "npz of images without pixels (N, 0, 0)",
        npz_file(train_images=lambda: np.zeros((4, 0, 0), np.uint8), train_labels=lambda: npz_labels(4)),
        ERROR,
    ),
    Case(
        "npz whose labels skip a class (0 and 2)",
        npz_file(train_images=lambda: npz_images(4), train_labels=lambda: np.array([0, 2, 0, 2], np.uint8)),
        ERROR,
    ),
    Case(
        "npz whose test labels hold a class train lacks",
        npz_file(
            train_images=lambda: npz_images(4),
            train_labels=lambda: npz_labels(4),
            test_images=lambda: npz_images(2),
            test_labels=lambda: np.array([1, 3], np.uint8),
        ),
        ERROR,
    ),
    Case("symlink from a class folder into its sibling", link_into_sibling, ERROR),
    Case("class folder that is a link to another", class_folder_linked_to_another, ERROR),
    Case("class folder in train/ but not in test/", class_missing_from_test, NOTE),
    Case("empty class folder in test/", empty_class_in_test, NOTE),
    Case("class folders in other letter case in test/", other_case_in_test, ACCEPTED),
    Case("CMYK jpeg", add_file("IM-0910-0001.jpeg", cmyk_jpeg()), DECODED, check=close_to_gradient(6)),
    Case("16-bit png", add_file("IM-0911-0001.png", encoded(sixteen_bit(), "PNG")), DECODED, check=stretched_16bit),
    Case("RGBA png", add_file("IM-0912-0001.png", encoded(rgba(), "PNG")), DECODED, check=rgba_over_black),
    Case("EXIF-rotated jpeg", exif_rotated, DECODED, check=right_half_white),
    Case("png content named .jpeg", add_file("IM-0913-0001.jpeg", _PNG), DECODED, check=close_to_gradient(0)),
    Case(
        "name with spaces and non-ASCII letters",
        add_file("Aufnahme Müller 肺 01.jpeg", _JPEG),
        DECODED,
        check=close_to_gradient(8),
        run=True,
    ),
    Case("dicom MONOCHROME1", add_dicom("IM-0914-0001.dcm", "MONOCHROME1"), DECODED, check=bone_bright_left, run=True),
    Case("dicom MONOCHROME2", add_dicom("IM-0915-0001.dcm", "MONOCHROME2"), DECODED, check=bone_bright_right),
]


# --- running the command line ------------------------------------------------------------------


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--model",
        "scratch_cnn",
        "--mode",
        "scratch",
        "--epochs",
        "1",
        "--image-size",
        str(SIZE),
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def assert_one_line_error(result: CliResult, name: str) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert name in lines[0], lines[0]
    assert "Traceback" not in result.err + result.out


def only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def finished_run(result: CliResult, out: Path) -> Path:
    assert result.code == 0, result.err
    run_dir = only_run(out)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    return run_dir


def run_paths(run_dir: Path) -> list[str]:
    return [row["path"] for row in read_csv(run_dir / "split.csv")]


def inspect_json(cli, data: Path) -> dict:
    result = cli("data", "inspect", str(data), "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_data(case: Case, tmp_path, cli, monkeypatch):
    if case.setup:
        case.setup(monkeypatch)
    data, name = case.make(tmp_path)
    out = tmp_path / "runs"

    if case.outcome == BAD:
        stopped = cli(*train_args(data, out))
        assert_one_line_error(stopped, name)
        assert case.reason in stopped.err.lower() and "--on-bad-image skip" in stopped.err
        assert not out.exists() or not any(out.iterdir()), "a run stopped by bad data leaves no run directory"

        summary = inspect_json(cli, data)
        assert [Path(u["path"]).name for u in summary["unreadable"]] == [name]
        assert case.reason in summary["unreadable"][0]["reason"].lower()
        shown = cli("data", "inspect", str(data))  # the table a person reads names the file as it is
        assert shown.code == 0 and "1 unreadable images" in shown.out
        assert "".join(name.split()) in "".join(shown.out.split())

        run_dir = finished_run(cli(*train_args(data, out, "--on-bad-image", "skip")), out)
        record = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        skipped = record["data_info"]["skipped_images"]
        assert [Path(s["path"]).name for s in skipped] == [name] and case.reason in skipped[0]["reason"].lower()
        paths = run_paths(run_dir)
        assert len(paths) == BASE_IMAGES and not any(Path(p).name == name for p in paths)

    elif case.outcome == ERROR:
        assert_one_line_error(cli(*train_args(data, out)), name)
        assert_one_line_error(cli(*train_args(data, out, "--on-bad-image", "skip")), name)  # not an image to skip
        assert not out.exists() or not any(out.iterdir())
        assert_one_line_error(cli("data", "inspect", str(data), "--json"), name)

    elif case.outcome == IGNORED:
        summary = inspect_json(cli, data)
        assert summary["images"] == BASE_IMAGES and summary["classes"] == ["NORMAL", "PNEUMONIA"]
        assert summary["unreadable"] == []
        reported = [Path(p).name for p in summary["ignored_files"]] + summary["notes"]
        if name != "__MACOSX":  # a folder that is never a class is passed over silently
            assert any(name in entry for entry in reported), reported
        run_dir = finished_run(cli(*train_args(data, out)), out)
        paths = run_paths(run_dir)
        assert len(paths) == BASE_IMAGES and not any(f"/{name}" in p for p in paths)
        labels = {Path(row["path"]).parent.name: row["label"] for row in read_csv(run_dir / "split.csv")}
        assert labels == {"NORMAL": "NORMAL", "PNEUMONIA": "PNEUMONIA"}, "an image got another folder's label"
        record = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        assert record["data_info"]["skipped_images"] == []

    elif case.outcome == NOTE:
        summary = inspect_json(cli, data)
        assert any(name in note for note in summary["notes"]), summary["notes"]
        run_dir = finished_run(cli(*train_args(data, out)), out)
        record = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        assert any(name in note for note in record["data_info"]["split_notes"])
        assert record["data_info"]["classes"] == ["COVID", "NORMAL", "PNEUMONIA"]

    elif case.outcome == DECODED:
        summary = inspect_json(cli, data)
        assert summary["unreadable"] == [] and summary["images"] == BASE_IMAGES + 1
        path = next(Path(data).rglob(name))
        pixels, _digest, reason = decode_file(str(path), SIZE)
        assert reason == "" and pixels.shape == (SIZE, SIZE) and pixels.dtype == np.uint8
        case.check(pixels)
        if case.run:
            rows = read_csv(finished_run(cli(*train_args(data, out)), out) / "split.csv")
            assert [r["label"] for r in rows if Path(r["path"]).name == name] == ["NORMAL"]

    elif case.outcome == ACCEPTED:  # test/normal and test/Pneumonia are train's NORMAL and PNEUMONIA
        summary = inspect_json(cli, data)
        assert summary["classes"] == ["NORMAL", "PNEUMONIA"] and summary["splits"]["test"]["images"] == 8
        run_dir = finished_run(cli(*train_args(data, out)), out)
        record = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        assert record["data_info"]["classes"] == ["NORMAL", "PNEUMONIA"]
        rows = read_csv(run_dir / "split.csv")
        tested = {(Path(r["path"]).parent.name, r["label"]) for r in rows if r["split"] == "test"}
        assert tested == {("normal", "NORMAL"), ("Pneumonia", "PNEUMONIA")}

    else:  # pragma: no cover - a typo in the table
        raise AssertionError(case.outcome)


def test_the_table_covers_every_outcome():
    assert len(CASES) >= 20
    assert {c.outcome for c in CASES} == {BAD, ERROR, IGNORED, NOTE, DECODED, ACCEPTED}


def test_console_script_exits_2_with_one_line(tmp_path):
    """The installed entry point, in a real process: exit code 2, one line, no traceback."""
    import subprocess

    data, name = npz_file(train_images=lambda: npz_images(4))(tmp_path)
    process = subprocess.run(
        [sys.executable, "-m", "cxrlab", "data", "inspect", str(data)], capture_output=True, text=True, timeout=120
    )
    assert process.returncode == 2
    assert len(process.stderr.strip().splitlines()) == 1 and name in process.stderr
    assert "Traceback" not in process.stderr
