"""`cxrlab compare`: intervals and paired tests of real tiny runs, and refusal of unpaired runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cxrlab import cli
from cxrlab.core.errors import CxrlabError
from cxrlab.data.patients import patient_id
from cxrlab.report.analysis import curve_stability, generalisation_gap, run_labels
from cxrlab.report.compare import compare_runs, comparison_markdown
from cxrlab.report.scored import scored_set
from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.records import EpochRecord, load_run

NAMES = ["scratch_cnn-scratch-lr=1e-3", "efficientnet_lite0-frozen", "efficientnet_lite0-finetune"]


@pytest.fixture(scope="module")
def run_dirs(tiny_study) -> list[str]:
    study = tiny_study
    return [str(study / "runs" / name) for name in NAMES]


def test_compare_rows_pairs_and_files(run_dirs, tmp_path):
    result = compare_runs(run_dirs, out_dir=str(tmp_path / "cmp"), n_boot=500)
    runs = [load_run(d) for d in run_dirs]
    assert [row["run"] for row in result["runs"]] == NAMES
    for row, run in zip(result["runs"], runs):
        # Recomputed from predictions.csv, the point estimates are the ones the run recorded.
        test = row["test"]
        assert test["accuracy"]["estimate"] == pytest.approx(run.metrics.test_accuracy)
        assert test["roc_auc"]["estimate"] == pytest.approx(run.metrics.roc_auc, abs=1e-6)
        assert test["sensitivity"]["estimate"] == pytest.approx(run.metrics.sensitivity)
        assert test["loss"] == pytest.approx(run.metrics.test_loss, abs=1e-4)
        assert test["accuracy"]["low"] <= test["accuracy"]["estimate"] <= test["accuracy"]["high"]
        assert test["sensitivity"]["low"] <= test["sensitivity"]["estimate"] <= test["sensitivity"]["high"]
        assert row["train_seconds"] == run.metrics.train_seconds
        assert test["n"] == run.metrics.n_test
        # The synthetic images come two per patient: the intervals resample patients.
        patients = {patient_id(path) for path in scored_set(run).paths}
        assert test["unit"] == "patient" and test["n_patients"] == len(patients) < test["n"]
    assert len(result["pairs"]) == 3
    p_values = []
    for pair in result["pairs"]:
        a, b = (
            scored_set(load_run(Path(run_dirs[0]).parent / pair["a"])),
            scored_set(load_run(Path(run_dirs[0]).parent / pair["b"])),
        )
        order = [b.paths.index(p) for p in a.paths]
        a_only = int((a.correct & ~b.correct[order]).sum())
        b_only = int((~a.correct & b.correct[order]).sum())
        test = pair["results"]["test"]
        assert (test["a_only"], test["b_only"]) == (a_only, b_only)
        assert test["unit"] == "patient" and test["adjustment"]["size"] == 3
        p_values.append(test["p_value"])
        difference = (a_only - b_only) / len(a.paths)
        assert test["accuracy_difference"]["estimate"] == pytest.approx(difference)
    # One family: Holm's adjustment of the three p-values.
    adjusted = [pair["results"]["test"]["adjustment"]["p_adjusted"] for pair in result["pairs"]]
    order = np.argsort(p_values)
    expected = np.minimum(1, np.maximum.accumulate(np.array(p_values)[order] * [3, 2, 1]))
    assert np.array(adjusted)[order] == pytest.approx(expected)
    out = tmp_path / "cmp"
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["runs"][1]["test"]["accuracy"] == result["runs"][1]["test"]["accuracy"]
    markdown = (out / "comparison.md").read_text()
    assert markdown == comparison_markdown(result)
    for name in result["figures"]:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
        assert f"]({name})" in markdown
    assert {"curves.png", "roc.png", "precision_recall.png", "calibration.png", "training_time.png"} <= set(
        result["figures"]
    )


def test_comparison_markdown_reads_as_a_table(run_dirs):
    result = compare_runs(run_dirs[:2], n_boot=200)
    markdown = comparison_markdown(result)
    assert f"on {result['n_test']} test images" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| run |"))
    assert "test accuracy @thr (95% CI)" in header and "McNemar" not in header
    assert "| A | B | set | A right, B wrong |" in markdown
    label = result["runs"][1]["label"]
    assert f"| {label} |" in markdown
    assert "McNemar's exact test clustered by patient" in markdown and "intervals resample patients" in markdown


def test_runs_scored_on_other_test_images_are_refused(run_dirs, tmp_path, monkeypatch, capsys):
    from cxrlab.testing import make_dataset_root

    data = make_dataset_root(tmp_path / "data", n_train=40)
    other = fit(
        TrainConfig(
            data=str(data),
            model="scratch_cnn",
            mode="scratch",
            epochs=1,
            image_size=32,
            batch_size=16,
            split_seed=7,
            out=str(tmp_path / "runs"),
        ),
        show_progress=False,
        log=lambda line: None,
    )
    with pytest.raises(CxrlabError, match="different test images"):
        compare_runs([run_dirs[0], str(other)])
    # From the command line: one line, exit code 2, nothing written.
    monkeypatch.setattr(sys, "argv", ["cxrlab", "compare", run_dirs[0], str(other), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error:") and "different test images" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_generalisation_gap_and_curve_stability_from_the_history():
    val_losses = [1.0, 0.6, 0.5, 0.7, 0.4, 0.45]
    history = [
        EpochRecord(
            epoch=i + 1,
            phase="network",
            train_loss=v,
            train_acc=0.5 + 0.08 * i,
            val_loss=v,
            val_acc=0.5 + 0.05 * i,
            lr=1e-3,
            seconds=1.0,
        )
        for i, v in enumerate(val_losses)
    ]
    assert generalisation_gap(history, best_epoch=5) == pytest.approx((0.5 + 0.32) - (0.5 + 0.20))
    # Five steps; the last half is the last three: |0.2|, |-0.3|, |0.05|.
    assert curve_stability(history) == pytest.approx(np.mean([0.2, 0.3, 0.05]))
    assert curve_stability(history[:1]) is None
    assert generalisation_gap(history, best_epoch=99) is None


def test_labels_tell_runs_of_one_model_and_mode_apart(run_dirs, tiny_study):
    study = tiny_study
    runs = [
        load_run(study / "runs" / name)
        for name in ["scratch_cnn-scratch-lr=1e-3", "scratch_cnn-scratch-lr=3e-3", "efficientnet_lite0-frozen"]
    ]
    assert run_labels(runs) == [
        "scratch_cnn, from scratch lr=1e-3",
        "scratch_cnn, from scratch lr=3e-3",
        "efficientnet_lite0, fixed feature extractor",
    ]
    assert run_labels([runs[0], runs[0]]) == [f"scratch_cnn, from scratch ({runs[0].run_id})"] * 2
