"""The study commands as a user meets them: the shipped studies listed and copied, dry runs
with estimates, --name and --json, and a study in a log file that says where it is."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def test_studies_lists_the_shipped_studies_with_runs_and_time(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("studies")
    assert result.code == 0, result.err
    for name, runs in (("offline", 6), ("pneumonia", 10)):
        assert f"{name}: {runs} runs, about " in result.out
    assert "per-image costs measured" in result.out and "is not here" in result.out
    listed = json.loads(cli("studies", "--json").out)
    shipped = sorted(path.stem for path in (Path(__file__).parents[1] / "src" / "cxrlab" / "studies").glob("*.yaml"))
    assert {"offline", "pneumonia", "recipe"} <= set(shipped)
    assert [entry["name"] for entry in listed] == shipped
    assert all(entry["seconds"] > 0 and entry["description"] for entry in listed)


def test_studies_copy_writes_an_editable_copy_and_never_overwrites(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("studies", "copy", "offline")
    assert result.code == 0 and result.out.strip() == "offline.yaml"
    assert yaml.safe_load(Path("offline.yaml").read_text())["name"] == "offline"
    again = cli("studies", "copy", "offline")
    assert again.code == 2 and "already exists" in again.err
    assert cli("studies", "copy", "nope").code == 2


def test_dry_run_prints_the_runs_after_set_and_an_estimate_from_anywhere(cli, tmp_path, tiny_root, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: studies/offline.yaml is the shipped one
    result = cli("study", "studies/offline.yaml", "--data", str(tiny_root), "--set", "epochs=1", "--dry-run")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("study offline (") and lines[0].endswith("-> runs/offline: 5 runs")
    # --set epochs=1 renames the runs it changes, and the two settings it makes equal are one.
    assert "  efficientnet_lite0-finetune-lr=1e-4-ep=1-wd=1e-5-bs=32-seed=0  (" in result.out
    assert not any("ep=4" in line or "ep=3" in line for line in lines if line.startswith("  "))
    assert any(line.startswith("note: ") and "are one setting after --set" in line for line in lines)
    assert lines[-1].startswith("about ")
    # The estimate counts the images the runs train on: 80 less the carved val and test
    # (58 in the real split, which groups by patient).
    n_train = int(re.search(r"over (\d+) training images", lines[-1]).group(1))
    assert abs(n_train - 58) <= 6, lines[-1]
    assert not (tmp_path / "runs").exists(), "a dry run makes nothing"

    plan = json.loads(cli("sweep", "offline", "--data", str(tiny_root), "--dry-run", "--json").out)
    assert plan["study"] == "offline" and len(plan["runs"]) == 6 and plan["data_found"]
    assert all(run["seconds"] > 0 for run in plan["runs"]) and plan["seconds"] == pytest.approx(
        sum(run["seconds"] for run in plan["runs"])
    )


@pytest.mark.slow
def test_study_in_a_log_file_says_where_it_is_and_names_its_own_directory(tmp_path, tiny_root):
    study = tmp_path / "small.yaml"
    study.write_text(f"""
name: small
data: {tiny_root}
defaults: {{image_size: 32, batch_size: 16, augment: none}}
runs:
  - {{model: scratch_cnn, mode: scratch, lr: 1.0e-3, epochs: 2}}
  - {{model: scratch_cnn, mode: scratch, lr: 3.0e-3, epochs: 3}}
""")
    log = tmp_path / "study.log"
    with open(log, "w") as output:  # no terminal: a log file, as under nohup
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "cxrlab",
                "study",
                str(study),
                "--set",
                "epochs=1",
                "--name",
                "small-ep1",
                "--json",
                "--workers",
                "1",
                "--table",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=output,
            text=True,
            timeout=600,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    summary = json.loads(done.stdout)
    assert summary["study_dir"] == "runs/small-ep1" and [Path(p).name for p in summary["report"]] == [
        "report.md",
        "report.html",
    ]
    assert {row["setting"] for row in summary["settings"]} == {
        "scratch_cnn-scratch-lr=1e-3-ep=1",
        "scratch_cnn-scratch-lr=3e-3-ep=1",
    }
    assert all(row["status"] == "finished" and row["val_loss"] > 0 for row in summary["settings"])
    assert not (tmp_path / "runs" / "small").exists(), "--name kept the original study's directory free"
    # One line when each run starts and one per epoch, with the study's state on it.
    assert "scratch_cnn-scratch-lr=1e-3-ep=1-seed=0: run 1 of 2, about " in text
    assert "scratch_cnn-scratch-lr=3e-3-ep=1-seed=0: run 2 of 2, about " in text
    epoch_lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and all("| epoch 1 of 1, " in line and " left" in line for line in epoch_lines)
    assert "1 of 2 runs done" in epoch_lines[1]
    assert "\x1b[" not in text, "no terminal control codes in a log file"
