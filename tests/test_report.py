"""The study report: written from real tiny runs, opened in a real headless browser.

The ``tiny_study`` fixture (conftest) builds one study directory per test session (five runs on the synthetic
48-px data at 32 px: two scratch settings, and EfficientNet-Lite0 frozen, fine-tuned and
gradual); test_figures and test_compare reuse it.
"""

from __future__ import annotations

import base64
import html as html_module
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cxrlab.core.errors import CxrlabError
from cxrlab.report.analysis import run_analysis, selection_key
from cxrlab.report.formatting import percent_ci
from cxrlab.report.render import write_report
from cxrlab.training.records import list_runs

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
TASK_HEADINGS = [
    "A. Model selection",
    "B. Hyperparameters and results",
    "C. The fixed feature extractor",
    "D. Comparing fine-tuning",
    "E. Test analysis against the from-scratch baseline",
]


@pytest.fixture(scope="module")
def report(tiny_study):
    study = tiny_study
    paths = write_report(study)
    return study, paths


def test_report_files_and_sections(report):
    study, paths = report
    assert [p.name for p in paths] == ["report.md", "report.html"]
    markdown = paths[0].read_text(encoding="utf-8")
    for heading in TASK_HEADINGS:
        assert re.search(rf"^## {re.escape(heading)}", markdown, re.M), heading
    # The split the test numbers come from, and what validation chose.
    runs = list_runs(study / "runs")
    n_test = runs[0].metrics.n_test
    assert re.search(
        rf"test split \({n_test} images of \d+ patients, carved from the training images by patient\)", markdown
    )
    assert "## Statistics: units, tests and adjustment" in markdown
    assert "chosen on the validation split" in markdown
    # Section A: the model cards of the models used, at the runs' image size.
    assert "GFLOPs at 32 px" in markdown and "efficientnet_lite0" in markdown and "scratch_cnn" in markdown
    # Every figure the Markdown links exists beside it.
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        assert (study / link).is_file(), link


def test_findings_are_built_from_the_numbers(report):
    study, paths = report
    markdown = paths[0].read_text(encoding="utf-8")
    runs = {r.run_id: r for r in list_runs(study / "runs")}
    # Section D: the winning mode of efficientnet_lite0 is named with its own interval.
    lite = [run_analysis(runs[name], n_boot=2000) for name in runs if name.startswith("efficientnet_lite0")]
    top = max(lite, key=lambda a: (a.test.accuracy.estimate, a.test.roc_auc.estimate))
    tied = [a for a in lite if a.test.accuracy.estimate == top.test.accuracy.estimate]
    assert any(f"reached the highest test accuracy, {percent_ci(a.test.accuracy)}" in markdown for a in tied)
    # Section E: the baseline is the scratch run with the lower validation loss (ties: AUC).
    scratch = [runs[n] for n in runs if n.startswith("scratch_cnn")]
    baseline = min(scratch, key=lambda r: (r.metrics.val_loss, -r.metrics.val_roc_auc, r.run_id))
    assert baseline is min(scratch, key=selection_key)
    assert f"reached {percent_ci(run_analysis(baseline).test.accuracy)} test accuracy" in markdown
    assert "McNemar's exact test clustered by patient, p " in markdown
    assert re.search(r"On the internal test split, \d+ of 3 transfer-learning runs beat the baseline", markdown)
    # Section B: two scratch settings make a spread, tested against the test split's noise.
    assert re.search(
        r"Across 2 runs of scratch_cnn \(from scratch\), test accuracy ranges .*\(permutation test", markdown
    )


def test_html_is_self_contained_and_every_image_is_a_png(report):
    _, paths = report
    html = paths[1].read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) >= 8
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html
    assert "Content-Security-Policy" in html


def test_file_names_and_labels_are_escaped(tiny_study, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study, ignore=shutil.ignore_patterns("report*"))
    hostile = "/nowhere/<script>alert(1)</script>.png"
    for run_dir in sorted((study / "runs").iterdir()):
        # The same test image, renamed in every run (the runs stay paired) and made a confident
        # mistake, so that the report lists it among the mistakes.
        lines = (run_dir / "predictions.csv").read_text().splitlines()
        header = lines[0].split(",")
        index = next(i for i, line in enumerate(lines) if ",test," in line)
        cells = lines[index].split(",")
        label = cells[2]
        for k, column in enumerate(header[3:], start=3):
            cells[k] = "0.010000" if column == f"p_{label}" else "0.990000"
        cells[0] = hostile
        lines[index] = ",".join(cells)
        (run_dir / "predictions.csv").write_text("\n".join(lines) + "\n")
    markdown_path, html_path = write_report(study)
    html = html_path.read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert "<script" not in html.lower()
    assert "<script>" not in markdown_path.read_text(encoding="utf-8")


def test_runs_on_a_loaded_machine_are_marked_and_compared_in_cpu_time(tiny_study, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(tiny_study, study, ignore=shutil.ignore_patterns("report*"))

    def measured_at(load_per_core: float) -> str:
        for run_dir in (study / "runs").iterdir():
            metrics = json.loads((run_dir / "metrics.json").read_text())
            cores = metrics["machine"]["cpu_count"]
            metrics["machine"]["load_average_start"] = metrics["machine"]["load_average_end"] = cores * load_per_core
            (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return write_report(study)[0].read_text(encoding="utf-8")

    markdown = measured_at(0.5)  # an idle machine
    assert "shared the machine" not in markdown and "CPU time (the machine was shared" not in markdown
    assert " CPU)" in markdown  # CPU seconds stand beside every wall time
    markdown = measured_at(4.0)  # three more busy processes per core
    runs = len(list(list_runs(study / "runs")))
    assert f"{runs} of {runs} runs trained while other work shared the machine" in markdown
    assert "†" in markdown
    assert "CPU time (the machine was shared while they ran, which inflates wall time)" in markdown


def test_sections_without_runs_say_so(tmp_path, build_study):
    study = build_study(tmp_path, [dict(model="scratch_cnn", mode="scratch", epochs=1, name="only-scratch")])
    # A diverged run is listed, never analysed.
    shutil.copytree(study / "runs" / "only-scratch", study / "runs" / "only-scratch-again")
    (study / "runs" / "only-scratch-again" / "status.json").write_text('{"status": "diverged"}')
    markdown = write_report(study)[0].read_text(encoding="utf-8")
    assert "1 finished run, 1 diverged" in markdown and "1 finished, 1 diverged" in markdown
    for heading in TASK_HEADINGS:
        assert heading in markdown
    assert "This study has no fixed-feature-extractor (frozen) runs" in markdown
    assert "no modes to compare" in markdown
    assert "The from-scratch baseline (scratch_cnn, from scratch) is the only run" in markdown


def test_three_class_study(tmp_path, build_study):
    # scratch_cnn has no pretrained weights: "finetune" trains it from random weights too, which
    # is enough to give section D two modes and section E a pair to test.
    study = build_study(
        tmp_path,
        [
            dict(model="scratch_cnn", mode="scratch", epochs=1, name="scratch3"),
            dict(model="scratch_cnn", mode="finetune", epochs=1, name="finetune3"),
        ],
        classes=("NORMAL", "BACTERIA", "VIRUS"),
    )
    runs = list_runs(study / "runs")
    analysis = run_analysis(runs[0])
    assert np.array(analysis.test.confusion_matrix).shape == (3, 3)
    assert analysis.test.sensitivity is None and 0 <= analysis.test.roc_auc.estimate <= 1
    markdown = write_report(study)[0].read_text(encoding="utf-8")
    assert "(macro one-vs-rest)" in markdown and "balanced accuracy" in markdown
    assert "| BACTERIA |" in markdown and "| VIRUS |" in markdown
    assert "McNemar" in markdown


def test_a_folder_with_no_finished_runs_is_refused(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(CxrlabError, match="no finished runs"):
        write_report(tmp_path)
    with pytest.raises(CxrlabError, match="does not exist"):
        write_report(tmp_path / "missing")


# Runs in the page, after load: are the images decoded, how wide are they shown, which
# headings are there?
PAGE_CHECK = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !img.complete || img.naturalWidth === 0; });
  var widths = images.map(function (img) {
    return {shown: img.getBoundingClientRect().width, natural: img.naturalWidth, alt: img.alt};
  });
  var headings = Array.prototype.map.call(document.querySelectorAll("h2"), function (h) { return h.textContent; });
  var out = document.createElement("pre");
  out.id = "page-check";
  out.textContent = JSON.stringify({images: images.length, broken: broken.length, widths: widths, headings: headings});
  document.body.appendChild(out);
});
</script>
"""


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_in_a_headless_browser(report, tmp_path):
    _, paths = report
    html = paths[1].read_text(encoding="utf-8")
    # A copy with the check script; the report's own policy forbids scripts, so it goes too.
    checked = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html).replace(
        "</body>", PAGE_CHECK + "</body>"
    )
    page = tmp_path / "checked.html"
    page.write_text(checked, encoding="utf-8")
    dom = chromium(
        "--window-size=1400,1000",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
        profile=tmp_path / "profile",
    ).stdout
    found = re.search(r'<pre id="page-check">(.*?)</pre>', dom, re.S)
    assert found, "the page did not finish loading"
    result = json.loads(html_module.unescape(found.group(1)))
    assert result["images"] == html.count("<img ") and result["broken"] == 0
    # At 1400 px every figure is at least 400 px wide, and none is shrunk below its own size
    # (its 9-point legends stay 9 points).
    for image in result["widths"]:
        assert image["shown"] >= 400, image
        assert image["shown"] >= image["natural"] - 1, image
    for heading in TASK_HEADINGS:
        assert any(h.startswith(heading) for h in result["headings"]), heading
    # And the report itself, as a reader opens it, renders to a screenshot with content.
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,4000", paths[1].as_uri(), profile=tmp_path / "profile")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (4000, 1400)
    assert (pixels < 128).mean() > 0.01, "the screenshot is blank"


def test_metrics_json_names_the_validation_accuracy_by_its_rule(tiny_study):
    # metrics.json carries the validation accuracy at the argmax (as history.csv's val_acc at
    # the kept epoch) and the validation AUC, never the in-sample accuracy at the threshold
    # fitted on the same images.
    study = tiny_study
    for run in list_runs(study / "runs"):
        recorded = json.loads((run.path / "metrics.json").read_text())
        assert "val_accuracy" not in recorded and "val_roc_auc" in recorded
        kept = next(row for row in run.epochs if row.epoch == run.metrics.best_epoch)
        assert recorded["val_accuracy_argmax"] == pytest.approx(kept.val_acc, abs=1e-6), run.run_id
