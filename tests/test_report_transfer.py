"""Section F of the report, what transferred, from a study of real tiny runs: a pretrained
fine-tune, two freeze depths, the fixed feature extractor, a partial transfer, a weight-
statistics init, a small CNN from scratch, and half the training split for two of them."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from cxrlab.core.text import seconds
from cxrlab.evaluate import stats
from cxrlab.report.analysis import Estimate, run_analysis
from cxrlab.report.document import Report, Section, markdown_text
from cxrlab.report.formatting import p_value, percent_ci
from cxrlab.report.render import write_report
from cxrlab.report.scored import aligned, scored_set
from cxrlab.report.sections.transfer import section_transfer
from cxrlab.report.study_results import StudyResults
from cxrlab.report.transfer_figures import FULL_FINETUNE, Line, Point, freeze_depth_figure
from cxrlab.report.transfer_runs import TransferResults
from cxrlab.training.records import list_runs

# Nine tiny runs and their report: 61-73 s with -n 2 on two cores shared with a training job.
pytestmark = pytest.mark.slow
N_BOOT = 200
RUNS = [
    dict(model="scratch_cnn", mode="scratch", epochs=2, lr=1e-3, name="scratch"),
    dict(model="scratch_cnn", mode="scratch", epochs=2, lr=1e-3, train_fraction=0.5, name="scratch-half"),
    dict(model="efficientnet_lite0", mode="finetune", epochs=2, name="finetune"),
    dict(model="efficientnet_lite0", mode="finetune", epochs=2, train_fraction=0.5, name="finetune-half"),
    dict(model="efficientnet_lite0", mode="frozen", epochs=2, name="frozen"),
    dict(model="efficientnet_lite0", mode="finetune", epochs=2, freeze_blocks=4, augment="none", name="freeze4"),
    dict(model="efficientnet_lite0", mode="finetune", epochs=2, freeze_blocks=6, augment="none", name="freeze6"),
    dict(model="efficientnet_lite0", mode="finetune", epochs=2, transfer_blocks=2, name="transfer2"),
    dict(model="efficientnet_lite0", mode="finetune", epochs=2, weights="imagenet-stats", name="stats"),
]
COMPARED = ["transfer2", "stats"]  # with the deep freeze validation chooses: the family of three


@pytest.fixture(scope="session")
def transfer_study(tmp_path_factory, build_study) -> Path:
    """The study, fitted and reported once per test session (parallel workers share it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    with FileLock(str(root / "transfer-study.lock")):
        study = build_study(root / "transfer-study", RUNS)
        if not (study / "report.md").exists():
            write_report(study, n_boot=N_BOOT)
    return study


def section_f(markdown: str) -> str:
    """Section F's Markdown, up to the next section's anchor."""
    return markdown.split("## F. What transferred", 1)[1].split('<a id="', 1)[0]


@pytest.fixture(scope="session")
def runs(transfer_study):
    return {r.run_id: r for r in list_runs(transfer_study / "runs")}


def test_section_f_has_every_part_and_its_figures(transfer_study):
    markdown = (transfer_study / "report.md").read_text(encoding="utf-8")
    assert "## F. What transferred" in markdown and "[F. What transferred](#transfer)" in markdown
    section = section_f(markdown)
    for heading in (
        "Freeze depth: efficientnet_lite0",
        "Partial transfer and weight statistics against pretrained and scratch",
        "Convergence",
        "Data size",
        "Layer similarity",
    ):
        assert re.search(rf"^### {re.escape(heading)}$", section, re.M), heading
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
    assert {Path(link).name for link in links} == {
        "transfer-freeze-depth-efficientnet_lite0.png",
        "transfer-convergence.png",
        "transfer-data-size.png",
    }
    for link in links:
        assert (transfer_study / link).read_bytes()[:4] == b"\x89PNG", link
    html = (transfer_study / "report.html").read_text(encoding="utf-8")
    assert "F. What transferred" in html and "data:image/png;base64," in html


def test_freeze_depth_rows_carry_intervals_and_validation_chooses_the_deep_freeze(transfer_study, runs):
    section = section_f((transfer_study / "report.md").read_text(encoding="utf-8"))
    for name, depth in (
        ("finetune", "none (full fine-tune)"),
        ("freeze4", "4"),
        ("freeze6", "6"),
        ("frozen", "7 (frozen mode)"),
    ):
        run = runs[name]
        accuracy = percent_ci(run_analysis(run, n_boot=N_BOOT).test.accuracy)
        assert re.search(rf"^\| {re.escape(depth)} \| [^|]+ \| {re.escape(accuracy)} \|", section, re.M), name
        assert "(" in accuracy  # a patient-level interval, not a bare number
    # Both depths freeze at least half of Lite0's 7 stages; the lower validation loss (then
    # the higher validation AUC) chooses, never the test split.
    deep = min(("freeze4", "freeze6"), key=lambda n: (runs[n].scores.val_loss, -runs[n].scores.val_roc_auc, n))
    k = runs[deep].config.freeze_blocks
    assert f"(K ≥ 4), validation loss chose K = {k} ({runs[deep].scores.val_loss:.4f})" in section


def test_each_start_is_compared_with_the_pretrained_fine_tune_in_one_holm_family(transfer_study, runs):
    markdown = (transfer_study / "report.md").read_text(encoding="utf-8")
    section = section_f(markdown)
    deep = min(("freeze4", "freeze6"), key=lambda n: (runs[n].scores.val_loss, -runs[n].scores.val_roc_auc, n))
    reference = scored_set(runs["finetune"])
    p_values = {}
    for name in [deep, *COMPARED]:
        mine = scored_set(runs[name])
        order = aligned(mine, reference, name, "finetune")
        p_values[name] = stats.clustered_mcnemar(mine.correct, reference.correct[order], mine.clusters).p_value
    adjusted = dict(zip(p_values, stats.holm(list(p_values.values()))))
    table = section.split("**Each against the pretrained fine-tune", 1)[1].split("###", 1)[0]
    assert "Holm's adjustment over the 3 comparisons of the family" in table
    rows = [line for line in table.splitlines() if line.startswith("| efficientnet_lite0:")]
    assert len(rows) == 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = {"stem and first 2 stages transferred": "transfer2", "weight statistics only": "stats"}
        run = next((n for text, n in name.items() if text in cells[0]), deep)
        assert cells[1] == "efficientnet_lite0: pretrained, fine-tuned"
        assert cells[5] == p_value(p_values[run]) and cells[6] == f"{p_value(adjusted[run])} (of 3)"
        # The verdict follows the adjusted test and the interval, not the point estimate alone.
        says_differs = "better" in cells[8]
        low, high = (float(v) for v in re.findall(r"[+-]\d+\.\d", cells[7])[1:3])
        assert says_differs == (adjusted[run] < 0.05 and (low > 0 or high < 0))
    assert "The family of comparisons with the pretrained fine-tune holds 3 tests on the internal test split" in section
    assert re.search(r"\| against the pretrained fine-tune \| [^|]+ \| internal test \| 3 \| Holm \|", markdown)
    # The table of starts shows the from-scratch baseline beside them, with its interval.
    baseline = percent_ci(run_analysis(runs["scratch"], n_boot=N_BOOT).test.accuracy)
    assert f"| scratch_cnn: random init, from scratch | {baseline} |" in section


def test_convergence_and_data_size_read_the_runs_records(transfer_study, runs):
    section = section_f((transfer_study / "report.md").read_text(encoding="utf-8"))
    stats_run = runs["stats"].scores
    assert re.search(
        rf"^\| efficientnet_lite0: weight statistics only \(imagenet-stats\) \| 2 \| {stats_run.best_epoch} \| "
        rf"{stats_run.converged_epoch} \| {re.escape(seconds(stats_run.converged_seconds))} \| "
        rf"{stats_run.converged_auc_epoch} \| {re.escape(seconds(stats_run.converged_auc_seconds))} \|",
        section,
        re.M,
    )
    for name, line in (
        ("finetune-half", "efficientnet_lite0, pretrained, fine-tuned"),
        ("scratch-half", "scratch_cnn, random init, from scratch"),
    ):
        run = runs[name]
        assert run.scores.n_train < runs[name.removesuffix("-half")].scores.n_train
        accuracy = percent_ci(run_analysis(run, n_boot=N_BOOT).test.accuracy)
        assert f"| {line} | 0.5 | {run.scores.n_train} | {accuracy} |" in section


def test_layer_similarity_the_report_asks_for_is_shown_once_written(transfer_study, tmp_path, cli):
    study = shutil.copytree(transfer_study, tmp_path / "study", ignore=shutil.ignore_patterns("*.lock"))
    section = section_f((study / "report.md").read_text(encoding="utf-8"))
    assert "The study directory holds no layer similarity" in section
    # The report's command, run on the copy: it writes into the study, and the report reads it.
    command = re.search(r"run `(cxrlab similarity [^`]+)`", section).group(1).replace(str(transfer_study), str(study))
    words = shlex.split(command)[2:]
    networks = words[: words.index("--data")]
    assert networks == [
        "efficientnet_lite0@imagenet",
        *(str(study / "runs" / n) for n in ("finetune", "stats", "transfer2")),
    ]
    # The pretrained network against its fine-tune only, to keep the test short.
    result = cli("similarity", *networks[:2], *words[len(networks) :], "--probes", "16", "--json")
    assert result.code == 0, result.err
    # Section F alone, as the report lays it out (the rest of the report is tested above).
    study_results = StudyResults(list_runs(study / "runs"), n_boot=N_BOOT)
    out = study / "report_files"
    blocks = section_transfer(TransferResults(study_results, study), out)
    section = section_f(markdown_text(Report("r", [], [Section("transfer", "F. What transferred", blocks)])))
    assert "holds no layer similarity" not in section
    assert "![" in section and (out / "transfer-similarity-similarity.png").is_file()
    first = json.loads((study / "similarity" / "similarity.json").read_text())["comparisons"][0]
    assert f"| {first['layers'][0]} | {first['cka'][0]:.3f} |" in section
    assert (
        f"{first['other']} against {first['reference']} ({first['probes']} val images): CKA {first['cka'][0]:.3f}"
        in section
    )


def test_a_study_that_varies_nothing_says_so_in_one_line(transfer_study, tmp_path):
    study = tmp_path / "plain"
    shutil.copytree(transfer_study / "runs" / "scratch", study / "runs" / "scratch")
    write_report(study, n_boot=N_BOOT)
    lines = [line for line in section_f((study / "report.md").read_text(encoding="utf-8")).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("This study has no runs that vary what transferred")
    assert "would fill this section" in lines[0]


def test_freeze_depth_figure_draws_what_it_is_given():
    estimate = lambda v: Estimate(estimate=v, low=v - 0.1, high=v + 0.05)  # noqa: E731
    line = Line(
        "lite",
        [Point(FULL_FINETUNE, estimate(0.8), 10.0), Point(2, estimate(0.7), 6.0), Point(5, estimate(0.6), 3.0)],
        Point(7, estimate(0.5), 1.0),
    )
    figure = freeze_depth_figure([line], 7)
    accuracy, time = figure.axes
    drawn = accuracy.get_lines()[0]
    assert np.allclose(drawn.get_ydata(), [80, 70, 60]) and list(drawn.get_xdata()) == [FULL_FINETUNE, 2, 5]
    assert np.allclose(time.get_lines()[0].get_ydata(), [10, 6, 3])
    ticks = [t.get_text() for t in accuracy.get_xticklabels()]
    assert ticks == ["none\n(fine-tune)", "2", "5", "7\n(all)"]


def test_the_modes_are_compared_on_plainly_transferred_runs(runs):
    # Sections C-E compare modes; the fine-tune that stands for Lite0 there is the plain one,
    # whatever the validation loss of the partial, frozen-depth, stats or half-data variants.
    study = StudyResults(list(runs.values()), n_boot=N_BOOT)
    assert study.selected[("efficientnet_lite0", "finetune")].run_id == "finetune"
    assert study.selected[("scratch_cnn", "scratch")].run_id == "scratch"


@pytest.mark.parametrize(
    "seconds, reference, words",
    [
        (531.0, 535.0, "about the training time of the full fine-tune"),
        (540.0, 535.0, "about the training time of the full fine-tune"),
        (180.0, 535.0, "3.0× less training time than the full fine-tune"),
        (1100.0, 535.0, "2.1× the training time of the full fine-tune"),
    ],
)
def test_time_relations_never_say_one_times_less(seconds, reference, words):
    from types import SimpleNamespace

    from cxrlab.report.transfer_findings import time_relation

    def run(train_seconds):
        return SimpleNamespace(train_seconds=train_seconds, train_cpu_seconds=train_seconds, loaded=False)

    assert time_relation(run(seconds), run(reference), "the full fine-tune") == words


def test_similarity_findings_name_the_lowest_layer_only_where_it_is_not_the_last():
    from cxrlab.evaluate.similarity import Similarity
    from cxrlab.report.transfer_findings import similarity_findings

    def result(cka):
        layers = ["stem", "blocks.0", "blocks.1", "pooled"]
        return Similarity("ref", "other", layers, cka, 500, 128, "val", "unbiased", 1.0)

    falling, dipping = similarity_findings([result([0.99, 0.95, 0.5, 0.2]), result([0.99, 0.3, 0.5, 0.6])])
    assert "0.990 at stem and 0.200 at pooled" in falling and "lowest" not in falling
    assert "at or above 0.9 at stem, blocks.0" in falling
    assert "the lowest, 0.300, at blocks.0" in dipping
