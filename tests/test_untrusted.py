"""Untrusted files run no code, and user text cannot write outside the output folder.

The hostile files carry a pickle whose ``__reduce__`` would create a marker folder when
unpickled (a control test shows that it does, with plain ``pickle``). Weights files,
run checkpoints (model.pt, last.pt) and .npz data are refused with one line and exit code
2, and the marker never appears. YAML is read with a safe loader: ``!!python`` tags in a run's
config.yaml or a study file are refused the same way. Run names with slashes or ``..``
are refused, and the folder names made from user text stay inside the output folder.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import read_yaml
from cxrlab.testing import CliResult
from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.records import load_run
from cxrlab.training.rundir import safe_run_id


class MakesFolder:
    """Unpickling this calls os.mkdir(marker): code that a loader must never run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code-ran"


def assert_refused(result: CliResult, name: str, marker: Path) -> None:
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], result.err
    assert "Traceback" not in result.err
    assert not marker.exists(), "the file's code ran"


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
        "32",
        "--batch-size",
        "16",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def test_the_payload_runs_code_when_unpickled_plainly(marker):
    """The control: without the safe loaders, these files would run code."""
    pickle.loads(pickle.dumps(MakesFolder(marker)))
    assert marker.is_dir()


@pytest.mark.parametrize("kind", ["torch.save", "pickle.dump"])
def test_weights_file_with_code_is_refused(kind, tiny_root, tmp_path, marker, cli):
    weights = tmp_path / "pretrained.pth"
    payload = {"state_dict": {"backbone.conv.weight": torch.zeros(1), "hook": MakesFolder(marker)}}
    if kind == "torch.save":
        torch.save(payload, weights)
    else:
        weights.write_bytes(pickle.dumps(payload))
    out = tmp_path / "runs"
    result = cli(*train_args(tiny_root, out, "--weights", str(weights)))
    assert_refused(result, "pretrained.pth", marker)
    assert "refused to load" in result.err and "weights_only=True" in result.err
    assert not out.exists() or not list(out.iterdir())


def test_safetensors_junk_is_one_line(tiny_root, tmp_path, cli, marker):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not a safetensors file" * 4)
    assert_refused(
        cli(*train_args(tiny_root, tmp_path / "runs", "--weights", str(weights))), "model.safetensors", marker
    )


def test_plain_weights_files_do_load(tiny_root, tmp_path, cli):
    """The control: a genuine state dict (torch.save or safetensors) is accepted."""
    from safetensors.torch import save_file

    from cxrlab.models.registry import build_model

    state = build_model("scratch_cnn").state_dict()
    torch.save(state, tmp_path / "good.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "good.safetensors"))
    for name in ("good.pt", "good.safetensors"):
        result = cli(*train_args(tiny_root, tmp_path / "runs", "--weights", str(tmp_path / name), "--name", name))
        assert result.code == 0, result.err
        assert load_run(tmp_path / "runs" / safe_run_id(name)).config.weights_id.startswith("file:")


@pytest.fixture
def finished_run(tiny_root, tmp_path) -> Path:
    return fit(
        TrainConfig(
            data=str(tiny_root),
            model="scratch_cnn",
            mode="scratch",
            epochs=1,
            image_size=32,
            batch_size=16,
            out=str(tmp_path / "runs"),
            name="done",
        ),
        show_progress=False,
        log=lambda line: None,
    )


def test_a_run_checkpoint_with_code_is_refused(finished_run, tiny_root, marker, cli):
    torch.save({"state_dict": {"x": MakesFolder(marker)}, "meta": {}}, finished_run / "model.pt")
    image = next((tiny_root / "train" / "NORMAL").iterdir())
    assert_refused(cli("predict", str(finished_run), str(image)), "model.pt", marker)
    with pytest.raises(CxrlabError, match="refused to load"):
        load_run(finished_run).load_model()
    assert not marker.exists()


def test_a_resume_checkpoint_with_code_is_refused(finished_run, marker, cli):
    (finished_run / "status.json").write_text(json.dumps({"status": "running"}))
    torch.save({"phase": 0, "epochs_done": 1, "model": MakesFolder(marker)}, finished_run / "last.pt")
    assert_refused(cli("train", "--resume", str(finished_run), "--quiet"), "last.pt", marker)


def test_npz_data_with_code_is_refused(tmp_path, marker, cli):
    data = tmp_path / "pneumoniamnist.npz"
    np.savez(data, train_images=np.array([MakesFolder(marker)], dtype=object), train_labels=np.zeros(1, np.uint8))
    assert_refused(cli("data", "inspect", str(data), "--json"), "pneumoniamnist.npz", marker)
    assert_refused(cli(*train_args(data, tmp_path / "runs")), "pneumoniamnist.npz", marker)


def _python_tag(marker: Path) -> str:
    return f"!!python/object/apply:os.mkdir [{str(marker)!r}]"


def test_yaml_with_python_tags_is_refused(tmp_path, marker):
    path = tmp_path / "settings.yaml"
    path.write_text(f"lr: 0.001\nhook: {_python_tag(marker)}\n")
    with pytest.raises(CxrlabError, match=r"settings.yaml \(line 2\).*plain YAML"):
        read_yaml(path)
    assert not marker.exists()
    path.write_text("lr: [0.001\nepochs: 3\n")
    with pytest.raises(CxrlabError, match=r"settings\.yaml.*fix the YAML syntax"):
        read_yaml(path)


def test_a_run_config_with_python_tags_is_refused(finished_run, marker, cli):
    (finished_run / "status.json").write_text(json.dumps({"status": "running"}))
    config = finished_run / "config.yaml"
    config.write_text(config.read_text() + f"hook: {_python_tag(marker)}\n")
    assert_refused(cli("train", "--resume", str(finished_run), "--quiet"), "config.yaml", marker)
    with pytest.raises(CxrlabError, match=r"config\.yaml"):
        load_run(finished_run, require_finished=False)
    assert not marker.exists()


def test_a_study_file_with_python_tags_is_refused(tiny_root, tmp_path, marker, cli):
    study = tmp_path / "study.yaml"
    study.write_text(
        f"name: hostile\ndata: {tiny_root}\ndefaults: {_python_tag(marker)}\n"
        "runs:\n  - {model: scratch_cnn, mode: scratch}\n"
    )
    assert_refused(cli("sweep", str(study)), "study.yaml", marker)


@pytest.mark.parametrize("name", ["../../escaped", "../escaped", "a/b", "/tmp/escaped", "..", ".", "a\\b", "x\x00y"])
def test_run_names_cannot_leave_the_output_folder(name, tiny_root, tmp_path, cli):
    out = tmp_path / "deep" / "runs"
    result = cli(*train_args(tiny_root, out, "--name", name))
    assert result.code == 2 and "--name" in result.err and len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "deep" / "escaped").exists()
    assert not out.exists() or not list(out.iterdir())
    with pytest.raises(ValueError):
        TrainConfig(data=str(tiny_root), model="scratch_cnn", name=name)


@pytest.mark.parametrize(
    "text",
    [
        "../../x",
        "a/../../b",
        "..",
        "...",
        "/etc/passwd",
        "C:\\Windows\\x",
        "~/x",
        "name with spaces",
        "ünïcödé",
        "x\x00y",
        "-" * 300,
        "$(touch x)",
        "",
    ],
)
def test_run_ids_made_from_user_text_stay_inside(text, tmp_path):
    run_id = safe_run_id(text)
    assert run_id and run_id not in (".", "..") and len(run_id) <= 120
    assert "/" not in run_id and "\\" not in run_id and "\x00" not in run_id
    assert (tmp_path / run_id).resolve().parent == tmp_path.resolve()


def test_a_study_name_cannot_leave_the_output_folder(tiny_root, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "study.yaml"
    study.write_text(f"name: ../../escaped\ndata: {tiny_root}\nruns:\n  - {{model: scratch_cnn, mode: scratch}}\n")
    result = cli("sweep", str(study))
    assert result.code == 2 and "name" in result.err and "Traceback" not in result.err
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "escaped").exists()
