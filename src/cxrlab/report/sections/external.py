"""Section F, external sets: each run's accuracy on the internal test against its accuracy on
each external set ("accuracy on the line"), and the chosen runs' curves there. A set that chose
anything is named a validation set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrlab.core.text import slug
from cxrlab.report import curves, figures
from cxrlab.report.document import Block, Figure, Findings, Paragraph, Subheading
from cxrlab.report.formatting import points
from cxrlab.report.sections.test import curve_blocks
from cxrlab.report.study_results import StudyResults
from cxrlab.report.wording import set_title, unit_words


def section_external(study: StudyResults, out: Path) -> list[Block]:
    blocks: list[Block] = [
        Paragraph(
            "Every run was scored once on each external set after everything was chosen on validation. The tables "
            "and comparisons of sections D and E show these sets beside the internal test and say, for each "
            "conclusion, whether it holds on them. Here each run is placed at its internal test accuracy against its "
            "accuracy on the external set: on the dotted diagonal the two are equal; below it the run lost accuracy "
            "on the shift."
        )
    ]
    for name, role in study.external_sets.items():
        blocks += set_blocks(study, name, role, out)
    return blocks


def set_blocks(study: StudyResults, name: str, role: str, out: Path) -> list[Block]:
    title = set_title(name, role)
    rows = [a for a in study.analyses.values() if a.on(name) is not None]
    if not rows:
        return []
    first = rows[0].at(name)
    blocks: list[Block] = [
        Subheading(title),
        Paragraph(
            f"{title}: {unit_words(first.unit, first.n, first.n_patients)}"
            + (
                "; it helped choose something (a run's threshold, temperature or epoch, or the settings "
                "themselves), so its numbers are validation numbers, not an independent test."
                if role == "validation"
                else "; it chose nothing."
            )
        ),
    ]
    line = [curves.LinePoint(a.label, a.mode, a.test.accuracy.estimate, a.at(name).accuracy.estimate) for a in rows]
    path = figures.save_png(curves.accuracy_on_the_line_figure(line, title), out / f"on-the-line-{slug(name)}.png")
    blocks.append(
        Figure(path, f"Accuracy on the line: each run's internal test accuracy against its accuracy on {title}.")
    )
    drops = np.array([p.internal - p.external for p in line])
    blocks.append(
        Findings(
            [
                f"On {title}, {int((drops > 0).sum())} of {len(drops)} runs are less accurate than on the internal "
                f"test; the change from internal to external accuracy ranges from {points(-drops.max())} to "
                f"{points(-drops.min())} (mean {points(-drops.mean())})."
            ]
        )
    )
    chosen = [r for r in study.chosen() if name in study.scored[r.run_id]]
    return blocks + curve_blocks(study, chosen, out, name)
