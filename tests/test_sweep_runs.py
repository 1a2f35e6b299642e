"""Sweeps of tiny runs in this process: run directories, the results table, reuse of
finished runs, shared frozen features, diverged runs, and local worker processes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import optuna
import pytest

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import read_json, read_yaml
from cxrlab.study.sweep import run_sweep
from cxrlab.study.trials import RUN_ID


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def trials(study_dir: Path, name: str) -> list:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'study.db'}").get_trials()


def study_attrs(study_dir: Path, name: str) -> dict:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'study.db'}").user_attrs


def test_sweep_writes_one_run_dir_per_run_and_a_row_per_setting(tmp_path, tiny_root):
    # Two settings at two seeds, plus one that diverges (SGD at lr 1e6 blows up in epoch 1).
    study = write(
        tmp_path / "tiny.yaml",
        f"""
name: tiny
data: {tiny_root}
repeats: 2
defaults: {{batch_size: 16, epochs: 1}}
runs:
  - {{model: scratch_cnn, mode: scratch, lr: 1.0e-3}}
  - {{model: scratch_cnn, mode: scratch, lr: 3.0e-3}}
  - {{model: scratch_cnn, mode: scratch, lr: 1.0e+6, optimizer: sgd, epochs: 2}}
""",
    )
    study_dir = run_sweep(study, overrides=["image_size=32"], out=tmp_path / "out", show_progress=False)

    assert study_dir == tmp_path / "out" / "tiny"
    settings = [
        "scratch_cnn-scratch-lr=1e-3",
        "scratch_cnn-scratch-lr=3e-3",
        "scratch_cnn-scratch-lr=1e6-optimizer=sgd-ep=2",
    ]
    expected = {f"{s}-seed={seed}" for s in settings for seed in (0, 1)}
    assert {p.name for p in (study_dir / "runs").iterdir()} == expected
    for run_id in expected:
        status = read_json(study_dir / "runs" / run_id / "status.json")["status"]
        assert status == ("diverged" if "sgd" in run_id else "finished")
        config = read_yaml(study_dir / "runs" / run_id / "config.yaml")
        assert config["image_size"] == 32 and config["seed"] == int(run_id[-1])
    assert read_yaml(study_dir / "overrides.yaml") == {"set": ["image_size=32"], "values": {"image_size": 32}}
    assert len(read_yaml(study_dir / "study.yaml")["runs"]) == 6

    # The diverged run is recorded as done (objective inf), not as a failure to redo.
    done = trials(study_dir, "tiny")
    assert sorted(t.user_attrs[RUN_ID] for t in done) == sorted(expected)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    assert {t.value for t in done if "sgd" in t.user_attrs[RUN_ID]} == {float("inf")}

    with open(study_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["setting"] for r in rows][-1] == settings[2], "a diverged setting sorts last"
    finished = [r for r in rows if r["status"] == "finished"]
    assert len(rows) == 3 and len(finished) == 2
    assert float(finished[0]["val_loss"]) <= float(finished[1]["val_loss"]), "sorted by validation loss"
    assert all(r["n"] == "2" and r["image_size"] == "32" for r in rows)
    assert rows[2]["status"] == "diverged" and rows[2]["test_accuracy"] == ""
    table = (study_dir / "results.md").read_text()
    body = [line for line in table.splitlines() if line.startswith("| scratch_cnn")]
    assert len(body) == 3 and "diverged" in body[-1]
    assert all(" ± " in line for line in body[:2]), "two seeds: mean ± std"

    # A rerun keeps every run: nothing is trained again.
    stamps = {p: p.stat().st_mtime_ns for p in (study_dir / "runs").rglob("*") if p.is_file()}
    assert run_sweep(study, overrides=["image_size=32"], out=tmp_path / "out", show_progress=False) == study_dir
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert len(trials(study_dir, "tiny")) == 6

    # Other settings than the recorded plan are refused, not silently mixed in: the key that
    # differs is named, and nothing is run or queued.
    with pytest.raises(CxrlabError, match=r"was planned with other settings; .* image_size \(here 48; recorded 32\)"):
        run_sweep(study, overrides=["image_size=48"], out=tmp_path / "out", show_progress=False)
    other_data = tmp_path / "other-data"
    shutil.copytree(tiny_root, other_data)
    next(other_data.rglob("*.jpeg")).unlink()
    with pytest.raises(CxrlabError, match=r"differs in data \(here [0-9a-f]{16}, recorded [0-9a-f]{16}\)"):
        run_sweep(study, data=str(other_data), overrides=["image_size=32"], out=tmp_path / "out", show_progress=False)
    assert len(trials(study_dir, "tiny")) == 6
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # A finished run whose directory was deleted is run again, and only that one.
    lost = study_dir / "runs" / "scratch_cnn-scratch-lr=3e-3-seed=1"
    shutil.rmtree(lost)
    run_sweep(study, overrides=["image_size=32"], out=tmp_path / "out", show_progress=False)
    assert read_json(lost / "status.json")["status"] == "finished"
    assert {p: p.stat().st_mtime_ns for p in stamps if lost not in p.parents} == {
        p: t for p, t in stamps.items() if lost not in p.parents
    }
    again = trials(study_dir, "tiny")
    marked = [int(key.split(":")[1]) for key in study_attrs(study_dir, "tiny") if key.startswith("lost_trial:")]
    assert [t.user_attrs[RUN_ID] for t in again if t.number in marked] == [lost.name]
    assert sorted(t.user_attrs[RUN_ID] for t in again if t.number not in marked) == sorted(expected)

    # Each trial carries its run's settings for the dashboard: what varies is a parameter.
    assert {frozenset(t.params) for t in again} == {frozenset({"lr", "optimizer", "epochs"})}
    assert {t.params["optimizer"] for t in again} == {None, "sgd"}
    assert {t.params["epochs"] for t in again} == {1, 2}


def test_frozen_runs_of_one_backbone_compute_its_features_once(tmp_path, tiny_root, monkeypatch):
    import cxrlab.training.features as features

    calls = []
    compute = features.compute_features

    def counting(*args, **kwargs):
        calls.append(kwargs.get("label"))
        return compute(*args, **kwargs)

    monkeypatch.setattr(features, "compute_features", counting)
    features.clear_memory_cache()
    study = write(
        tmp_path / "frozen.yaml",
        f"""
name: frozen
data: {tiny_root}
repeats: 2
defaults: {{image_size: 32, batch_size: 16, epochs: 2, cache_dir: {tmp_path / "cache"}}}
grids:
  - {{model: efficientnet_lite0, mode: frozen, lr: [1.0e-3, 1.0e-2]}}
""",
    )
    study_dir = run_sweep(study, out=tmp_path, show_progress=False)
    runs = sorted((study_dir / "runs").iterdir())
    assert len(runs) == 4 and all(read_json(r / "status.json")["status"] == "finished" for r in runs)
    # One backbone pass per split for all four runs (two learning rates, two seeds).
    assert sorted(calls) == ["test", "train", "val"]


@pytest.mark.slow
def test_two_local_workers_run_each_run_once(tmp_path, tiny_root):
    study = write(
        tmp_path / "pair.yaml",
        f"""
name: pair
data: {tiny_root}
defaults: {{image_size: 32, batch_size: 16, epochs: 1}}
grids:
  - {{model: scratch_cnn, mode: scratch, lr: [1.0e-3, 2.0e-3, 3.0e-3, 4.0e-3]}}
""",
    )
    study_dir = run_sweep(study, workers=2, out=tmp_path, show_progress=False)
    runs = {p.name for p in (study_dir / "runs").iterdir()}
    assert len(runs) == 4
    done = trials(study_dir, "pair")
    assert sorted(t.user_attrs[RUN_ID] for t in done) == sorted(runs)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    # optuna-dashboard's parameter importance works on the queued runs' settings.
    study = optuna.load_study(study_name="pair", storage=f"sqlite:///{study_dir / 'study.db'}")
    assert optuna.importance.get_param_importances(study) == {"lr": 1.0}
    for run in runs:
        history = (study_dir / "runs" / run / "history.csv").read_text().splitlines()
        assert len(history) == 2, "one epoch, trained once"
    assert (
        len([line for line in (study_dir / "results.md").read_text().splitlines() if line.startswith("| scratch")]) == 4
    )


def test_search_block_spends_its_budget_on_validation_loss(tmp_path, tiny_root):
    study = write(
        tmp_path / "tpe.yaml",
        f"""
name: tpe
data: {tiny_root}
defaults: {{image_size: 32, batch_size: 16, epochs: 1}}
search:
  - model: scratch_cnn
    mode: scratch
    trials: 3
    space:
      lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}
""",
    )
    study_dir = run_sweep(study, out=tmp_path, show_progress=False)
    done = trials(study_dir, "tpe/scratch_cnn-scratch-search")
    assert len(done) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    runs = sorted(p.name for p in (study_dir / "runs").iterdir())
    assert len(runs) == 3 and all(r.startswith("scratch_cnn-scratch-search-t00") for r in runs)
    for trial in done:
        (run_id,) = trial.user_attrs["run_ids"]
        metrics = read_json(study_dir / "runs" / run_id / "metrics.json")
        assert trial.value == pytest.approx(metrics["val_loss"])  # never a test number
        assert read_yaml(study_dir / "runs" / run_id / "config.yaml")["lr"] == pytest.approx(trial.params["lr"])
    # The budget is spent: a rerun adds no trial.
    run_sweep(study, out=tmp_path, show_progress=False)
    assert len(trials(study_dir, "tpe/scratch_cnn-scratch-search")) == 3


@pytest.mark.slow
def test_two_sweeps_that_disagree_on_settings_cannot_share_a_study(tmp_path, tiny_root):
    import subprocess
    import sys

    study = write(
        tmp_path / "clash.yaml",
        f"""
name: clash
data: {tiny_root}
defaults: {{image_size: 32, batch_size: 16, epochs: 1}}
grids:
  - {{model: scratch_cnn, mode: scratch, lr: [1.0e-3, 2.0e-3]}}
""",
    )
    sweeps = [
        subprocess.Popen(
            [sys.executable, "-m", "cxrlab", "sweep", str(study), "--set", f"weight_decay={wd}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for wd in ("1.0e-4", "1.0e-2")
    ]
    results = [(sweep.wait(timeout=300), sweep.stderr.read()) for sweep in sweeps]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    (refusal,) = [err for code, err in results if code == 2]
    lines = [line for line in refusal.splitlines() if line.strip()]
    assert len(lines) == 1 and "was planned with other settings" in lines[0] and "weight_decay (here " in lines[0]
    # The study holds the winner's settings only.
    study_dir = tmp_path / "runs" / "clash"
    recorded = {read_yaml(p / "config.yaml")["weight_decay"] for p in (study_dir / "runs").iterdir()}
    assert len(recorded) == 1
    assert read_yaml(study_dir / "study.yaml")["overrides"]["weight_decay"] in recorded


def test_external_sets_can_be_replaced_added_and_dropped_from_the_command_line(tmp_path):
    from cxrlab.study.spec import load_plan

    study = write(tmp_path / "s.yaml", "data: d\nexternal: {official: a}\nruns:\n  - {model: scratch_cnn}\n")
    assert load_plan(study, external=["official=b", "more=c"]).external == {"official": "b", "more": "c"}
    plan = load_plan(study, external=["official="])
    assert plan.external == {} and plan.runs[0].settings["external"] == {}
    with pytest.raises(CxrlabError, match=r"^--external official: write NAME=PATH"):
        load_plan(study, external=["official"])
