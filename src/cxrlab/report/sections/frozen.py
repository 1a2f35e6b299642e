"""Section C, the fixed feature extractor: its runs, cost and curves."""

from __future__ import annotations

from pathlib import Path

from cxrlab.core.text import format_value, seconds, slug
from cxrlab.report import figures, findings
from cxrlab.report.cells import rule_tag, unit_caption
from cxrlab.report.document import Block, Figure, Findings, Paragraph, table
from cxrlab.report.formatting import decimal, number_ci, percent_ci
from cxrlab.report.study_results import StudyResults
from cxrlab.report.wording import set_title


def section_frozen(study: StudyResults, out: Path) -> list[Block]:
    frozen_runs = [r for r in study.runs if r.config.mode == "frozen"]
    if not frozen_runs:
        return [Findings(findings.nothing_to_report("fixed-feature-extractor (frozen) runs"))]
    blocks: list[Block] = [
        Paragraph(
            "In frozen mode the pretrained backbone stays fixed (eval mode, BatchNorm statistics untouched); its pooled "
            "features are computed once and cached, and only the new linear head trains on them. Its training time "
            "counts computing the features."
        )
    ]
    rows = [study.row(run) for run in frozen_runs]
    external = study.external_sets
    cells = [
        [
            a.label,
            a.epochs_run,
            format_value(run.config.lr),
            percent_ci(a.test.accuracy),
            number_ci(a.test.roc_auc),
            decimal(a.test.loss),
            seconds(a.train_seconds),
            seconds((a.train_seconds or 0) / max(1, a.epochs_run or 1)),
        ]
        + [percent_ci(there.accuracy) if (there := a.on(name)) else "–" for name in external]
        for run, a in zip(frozen_runs, rows)
    ]
    columns = ["run", "epochs", "lr", f"test accuracy {rule_tag(rows)} (95% CI)", "AUC (95% CI)", "test loss"]
    columns += ["training time", "time per epoch"]
    columns += [f"{set_title(name, role)}: accuracy {rule_tag(rows)} (95% CI)" for name, role in external.items()]
    blocks.append(table(f"Fixed feature extractor runs ({unit_caption(rows)})", columns, cells))
    finetuned = [study.row(r) for r in study.by_mode("finetune")]
    blocks.append(Findings(findings.frozen_findings([study.row(r) for r in study.by_mode("frozen")], finetuned)))
    for run in study.by_mode("frozen"):
        label = study.labels[run.run_id]
        path = figures.save_png(
            figures.history_figure(run, f"{label}: training curves"),
            out / f"frozen-curves-{slug(run.config.model)}.png",
        )
        caption = f"Loss and accuracy per epoch of {label} (the frozen run of {run.config.model} chosen on validation)."
        blocks.append(Figure(path, caption))
    return blocks
