"""The report's statistics on crafted run directories: what the intervals resample, the families
of tests and their adjustment, verdicts that never contradict the numbers beside them (the
9/2 discordant case), the one selection rule, and external sets beside the internal test.

Each test writes run directories through the typed records (RunConfig, RunMetrics,
EpochRecord) with predictions chosen image by image, so the expected counts are known.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from cxrlab.core.summary import classification_report
from cxrlab.report.analysis import best_run
from cxrlab.report.render import write_report
from cxrlab.report.tables import results_rows, write_results
from cxrlab.training.records import DataInfo, EpochRecord, RunConfig, list_runs
from cxrlab.training.run_metrics import ExternalScores, RunMetrics
from cxrlab.training.rundir import RunWriter

CLASSES = ["NORMAL", "PNEUMONIA"]
N_BOOT = 400


def image_names(labels: np.ndarray, per_patient: int = 1, prefix: str = "") -> list[str]:
    """Kermany-style file names (patients named) when ``per_patient`` > 1, else plain names
    that name no patient."""
    names = []
    for i, label in enumerate(labels):
        if per_patient > 1:
            patient = i // per_patient
            names.append(f"/data/{prefix}person{patient}_{'bacteria' if label else 'normal'}_{i}.jpeg")
        else:
            names.append(f"/data/{prefix}image{i:04d}.png")
    return names


def probabilities(labels: np.ndarray, correct: np.ndarray, seed: int) -> np.ndarray:
    """p(PNEUMONIA) on the right side of 0.5 where ``correct``, the wrong side elsewhere."""
    rng = np.random.default_rng(seed)
    sure = rng.uniform(0.6, 0.95, len(labels))
    says_sick = np.where(correct, labels == 1, labels == 0)
    p = np.where(says_sick, sure, 1 - sure)
    return np.stack([1 - p, p], axis=1)


def craft_run(
    runs: Path,
    name: str,
    model: str,
    mode: str,
    test: tuple[list[str], np.ndarray, np.ndarray],
    val_loss: float,
    val_auc: float = 0.9,
    external: dict[str, tuple[list[str], np.ndarray, np.ndarray, str]] | None = None,
    seconds: float = 60.0,
    legacy_val_accuracy: float | None = None,
    lr: float = 1e-3,
) -> Path:
    """A finished run directory with these test (and external) predictions, at threshold 0.5."""
    paths, labels, probs = test
    report = classification_report(labels, probs, CLASSES, 0.5, 1)
    scores = {}
    for set_name, (_, set_labels, set_probs, role) in (external or {}).items():
        r = classification_report(set_labels, set_probs, CLASSES, 0.5, 1)
        scores[set_name] = ExternalScores(
            location=f"/data/{set_name}", role=role, n=len(set_labels), loss=r["loss"], accuracy=r["accuracy"],
            sensitivity=r["sensitivity"], specificity=r["specificity"], roc_auc=r["roc_auc"], ece=r["ece"],
            confusion_matrix=r["confusion_matrix"], threshold=0.5,
        )  # fmt: skip
    metrics = RunMetrics(
        test_loss=report["loss"], test_accuracy=report["accuracy"], balanced_accuracy=report["balanced_accuracy"],
        sensitivity=report["sensitivity"], specificity=report["specificity"], precision=report["precision"],
        f1=report["f1"], roc_auc=report["roc_auc"], ece=report["ece"], confusion_matrix=report["confusion_matrix"],
        per_class=report["per_class"], threshold=0.5, positive_class="PNEUMONIA", threshold_rule="0.5",
        val_loss=val_loss, val_accuracy_argmax=0.9, val_roc_auc=val_auc, val_accuracy=legacy_val_accuracy,
        train_accuracy_at_best=0.95, train_seconds=seconds, best_epoch=2, epochs_run=2, n_train=200, n_val=40,
        n_test=len(labels), classes=CLASSES, mode=mode, model=model, weights=None, tta=0, external=scores,
    )  # fmt: skip
    config = RunConfig(
        data="/data", model=model, mode=mode, weights="none", lr=lr, epochs=2, weight_decay=1e-4,
        optimizer="adamw", scheduler="cosine", warmup=0.0, augment="none", head_epochs=0, head_lr=1e-3,
        threshold="0.5", name=name, out=str(runs),
        data_info=DataInfo(
            location="/data", kind="root", classes=CLASSES, fingerprint="crafted", split_fingerprint="crafted",
            n={"train": 200, "val": 40, "test": len(labels)},
            split_notes=[f"test split carved from train by patient: {len(labels)} images (seed 0)"],
        ),
        weights_id="none",
    )  # fmt: skip
    writer = RunWriter(runs / name)
    writer.config(config.model_dump(mode="json"))
    writer.history(
        [
            EpochRecord(epoch=e, phase="network", train_loss=0.5 / e, train_acc=0.9, val_loss=val_loss + 0.1 * (2 - e),
                        val_acc=0.88, lr=1e-3, seconds=seconds / 2,
                        cpu_seconds=seconds / 2)
            for e in (1, 2)
        ]
    )  # fmt: skip
    splits = ["test"] * len(paths)
    all_paths, all_labels, all_probs = list(paths), [labels], [probs]
    for set_name, (set_paths, set_labels, set_probs, _) in (external or {}).items():
        splits += [f"external:{set_name}"] * len(set_paths)
        all_paths += set_paths
        all_labels.append(set_labels)
        all_probs.append(set_probs)
    writer.predictions(all_paths, splits, np.concatenate(all_labels), np.concatenate(all_probs), CLASSES)
    writer.metrics(metrics)
    writer.status("finished")
    return runs / name


def discordant(n: int, a_only: int, b_only: int, both_wrong: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of runs A and B on ``n`` images: ``a_only`` right only for A, ``b_only`` only for B."""
    a = np.ones(n, dtype=bool)
    b = np.ones(n, dtype=bool)
    b[:a_only] = False
    a[a_only : a_only + b_only] = False
    a[a_only + b_only : a_only + b_only + both_wrong] = False
    b[a_only + b_only : a_only + b_only + both_wrong] = False
    return a, b


# --- sentences that agree with their numbers ----------------------------------------------------------

CI = re.compile(r"\(95% CI ([+-]?\d+\.\d+) to ([+-]?\d+\.\d+)\)")
P = re.compile(r"p (?:= |< )(\d\.\d+)")


def check_sentence(sentence: str) -> None:
    """A verdict must agree with the interval and the (adjusted) p-value it quotes: a claimed
    difference has an interval that excludes zero and a final p below 0.05; "within the noise"
    has an interval that holds zero and a final p of 0.05 or more; a disagreement is named."""
    intervals = [(float(a), float(b)) for a, b in CI.findall(sentence)]
    p_values = [float(p) for p in P.findall(sentence)]
    if not intervals or not p_values:
        return
    low, high = intervals[0]
    final_p = p_values[-1]  # the adjusted value, where there is one, comes last
    excludes_zero = low > 0 or high < 0
    if " is better at 5%" in sentence:
        assert excludes_zero and final_p < 0.05, sentence
        if ": the baseline is better" in sentence:
            assert high < 0, sentence
    elif "within the noise" in sentence:
        assert not excludes_zero and final_p >= 0.05, sentence
    elif "the 95% interval excludes zero, but the test does not reach 5%" in sentence:
        assert excludes_zero and final_p >= 0.05, sentence
    elif "but the 95% interval includes zero" in sentence:
        assert not excludes_zero and final_p < 0.05, sentence
    else:
        raise AssertionError(f"a sentence with an interval and a p-value but no verdict: {sentence}")


def findings_of(markdown: str) -> list[str]:
    return [line[2:] for line in markdown.splitlines() if line.startswith("- ")]


def check_findings(markdown: str) -> None:
    """Every sentence of every finding, checked against its own numbers."""
    for finding in findings_of(markdown):
        for sentence in finding.split(". "):
            check_sentence(sentence)


def test_the_nine_two_discordant_case_claims_nothing(tmp_path):
    # Fine-tune alone right on 9 images, the baseline alone on 2: McNemar's exact p = 0.065
    # while the bootstrap interval of the difference can exclude zero. The report must not
    # call it a difference, and must say why.
    runs = tmp_path / "study" / "runs"
    n = 300
    labels = np.arange(n) % 2
    tuned, scratch = discordant(n, 9, 2)
    paths = image_names(labels)
    craft_run(runs, "tuned", "efficientnet_lite0", "finetune", (paths, labels, probabilities(labels, tuned, 1)), 0.30)
    craft_run(runs, "scratch", "scratch_cnn", "scratch", (paths, labels, probabilities(labels, scratch, 2)), 0.40)
    markdown = write_report(tmp_path / "study", n_boot=N_BOOT)[0].read_text(encoding="utf-8")
    sentences = findings_of(markdown)
    (against,) = [s for s in sentences if s.startswith("efficientnet_lite0, fine-tune: ")]
    assert f"{binomtest(9, 11).pvalue:.3f}" == "0.065"
    assert "McNemar's exact test, p = 0.065" in against
    assert "no difference is claimed" in against or "within the noise" in against
    assert "is better" not in against
    assert "0 of 1 transfer-learning runs beat the baseline" in markdown
    check_findings(markdown)
    # Each image is its own patient here (the names name none), and the report says so.
    assert "intervals resample images" in markdown and "each its own unit" in markdown


def test_patients_are_the_unit_and_holm_counts_the_family(tmp_path):
    # 240 images of 80 patients (3 each). Three transfer-learning runs against the baseline:
    # a family of three tests, adjusted together.
    runs = tmp_path / "study" / "runs"
    n = 240
    labels = (np.arange(n) // 3) % 2
    paths = image_names(labels, per_patient=3)
    base = np.ones(n, dtype=bool)
    base[::4] = False  # 75% right
    rng = np.random.default_rng(5)
    craft_run(runs, "scratch", "scratch_cnn", "scratch", (paths, labels, probabilities(labels, base, 0)), 0.5)
    for i, (mode, fix) in enumerate((("finetune", 0.9), ("frozen", 0.5), ("gradual", 0.1))):
        better = base | (rng.random(n) < fix)
        probs = probabilities(labels, better, i + 10)
        craft_run(runs, f"lite-{mode}", "efficientnet_lite0", mode, (paths, labels, probs), 0.2 + 0.05 * i)
    markdown = write_report(tmp_path / "study", n_boot=N_BOOT)[0].read_text(encoding="utf-8")
    assert "intervals resample patients: 240 images of 80 patients" in markdown
    assert "| against the baseline | " in markdown
    family = next(line for line in markdown.splitlines() if line.startswith("| against the baseline"))
    assert "| 3 | Holm |" in family
    assert "Holm-adjusted over 3 tests" in markdown and "after Holm's adjustment over 3 tests" in markdown
    # The mode comparisons of one model: three pairs, one family.
    modes = next(line for line in markdown.splitlines() if line.startswith("| mode comparisons"))
    assert "| 3 | Holm |" in modes
    check_findings(markdown)
    # The tally counts only what the adjusted test and the interval both support.
    tally = next(s for s in findings_of(markdown) if "transfer-learning runs beat the baseline" in s)
    claimed = sum(1 for s in findings_of(markdown) if s.startswith("efficientnet_lite0") and "is better at 5%" in s)
    assert tally.startswith(f"On the internal test split, {claimed} of 3 transfer-learning runs beat the baseline")
    assert "## Statistics: units, tests and adjustment" in markdown


def test_runs_are_chosen_by_validation_loss_then_auc(tmp_path):
    runs_dir = tmp_path / "runs"
    labels = np.arange(40) % 2
    paths = image_names(labels)
    right = np.ones(40, dtype=bool)
    probs = probabilities(labels, right, 0)
    # The in-sample validation accuracy of older records would pick "a"; the rule picks "b".
    craft_run(
        runs_dir, "a", "scratch_cnn", "scratch", (paths, labels, probs), 0.40, 0.95, legacy_val_accuracy=1.0, lr=1e-2
    )
    craft_run(
        runs_dir, "b", "scratch_cnn", "scratch", (paths, labels, probs), 0.30, 0.80, legacy_val_accuracy=0.7, lr=1e-3
    )
    craft_run(
        runs_dir, "c", "scratch_cnn", "scratch", (paths, labels, probs), 0.30, 0.90, legacy_val_accuracy=0.6, lr=1e-4
    )
    runs = list_runs(runs_dir)
    assert best_run(runs).run_id == "c"  # b and c tie on loss; c has the higher validation AUC
    assert [r.setting for r in results_rows(runs)] == ["c", "b", "a"]


def test_external_sets_stand_beside_the_internal_test(tmp_path):
    study = tmp_path / "study"
    runs = study / "runs"
    n, m = 200, 120
    labels, shifted = np.arange(n) % 2, np.arange(m) % 2
    paths = image_names(labels, per_patient=2)
    shifted_paths = image_names(shifted, per_patient=2, prefix="shifted/")
    official_paths = image_names(shifted, prefix="official/")
    base, base_shift = np.arange(n) % 4 != 0, np.arange(m) % 3 != 0  # 75% and 67% right
    for i, (name, model, mode, fix) in enumerate(
        (
            ("scratch", "scratch_cnn", "scratch", 0.0),
            ("lite-finetune", "efficientnet_lite0", "finetune", 0.9),
            ("lite-frozen", "efficientnet_lite0", "frozen", 0.4),
        )
    ):
        rng = np.random.default_rng(i)
        right, right_shift = base | (rng.random(n) < fix), base_shift | (rng.random(m) < fix / 3)
        external = {
            "shifted": (shifted_paths, shifted, probabilities(shifted, right_shift, i + 20), "validation"),
            "official": (official_paths, shifted, probabilities(shifted, right_shift, i + 30), "test"),
        }
        craft_run(runs, name, model, mode, (paths, labels, probabilities(labels, right, i)), 0.3 - 0.05 * i,
                  external=external)  # fmt: skip
    markdown = write_report(study, n_boot=N_BOOT)[0].read_text(encoding="utf-8")
    assert "## G. External sets" in markdown
    assert (study / "report_files" / "on-the-line-shifted.png").is_file()
    assert (study / "report_files" / "on-the-line-official.png").is_file()
    # A set that chose something is a validation set wherever it is named in a sentence.
    unlabelled = re.findall(r".{30}(?<![/-])shifted(?![/.-])(?! \(validation set\)).{30}", markdown)
    assert not unlabelled
    assert "shifted (validation set)" in markdown and "official (external test set)" in markdown
    # Side by side: the runs table has each set's accuracy; the pair tables a row per set.
    header = next(line for line in markdown.splitlines() if line.startswith("| run | test accuracy @thr"))
    assert "shifted (validation set): accuracy @thr (95% CI)" in header
    assert "official (external test set): accuracy @thr (95% CI)" in header
    assert "| official (external test set) |" in markdown
    # Each conclusion says whether it holds there, and each set has its own tally.
    assert re.search(r"the internal test's conclusion (holds|does not hold|reverses)", markdown)
    assert re.search(r"On official \(external test set\), \d of 2 transfer-learning runs beat the baseline", markdown)
    assert re.search(r"On shifted \(validation set\), \d of 2 transfer-learning runs beat the baseline", markdown)
    check_findings(markdown)
    # results.md: the external accuracies beside the internal one, each with its rule.
    write_results(results_rows(list_runs(runs)), study)
    table = (study / "results.md").read_text()
    assert "| test acc @thr | shifted (validation set) acc @thr | official acc @thr |" in table
    assert "val acc @argmax" in table and "shifted (validation set): an external set" in table
