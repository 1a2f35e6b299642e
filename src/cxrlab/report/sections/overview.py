"""The report's opening lines: what ran, on what data, and where the test numbers come from."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from cxrlab.report.cells import THRESHOLD_WORDS
from cxrlab.report.study_results import StudyResults
from cxrlab.report.wording import set_title, unit_words

SELECTION_WORDS = {"val_loss": "lowest validation loss", "val_accuracy": "highest validation accuracy"}


def summary_lines(study: StudyResults, study_dir: Path) -> list[str]:
    first = study.runs[0]
    info = first.config.data_info
    n = Counter((r.scores.n_train, r.scores.n_val, r.scores.n_test) for r in study.runs)
    (n_train, n_val, n_test), _ = n.most_common(1)[0]
    finished = f"{len(study.runs)} finished run" + ("s" if len(study.runs) != 1 else "")
    diverged = f", {len(study.diverged)} diverged" if study.diverged else ""
    models = len({r.config.model for r in study.runs})
    lines = [
        f"{finished}{diverged} of {models} model{'s' if models != 1 else ''} in {study_dir}, "
        f"written {time.strftime('%Y-%m-%d %H:%M')}.",
        f"Data: {info.location} ({', '.join(first.classes)}); "
        f"{n_train} training, {n_val} validation and {n_test} test images.",
        split_statement(study),
    ]
    if study.external_sets:
        lines.append(external_statement(study))
    loaded = [a for a in study.analyses.values() if a.loaded]
    if loaded:
        lines.append(
            f"{len(loaded)} of {len(study.analyses)} runs trained while other work shared the machine (load average "
            "above its cores; marked † in the tables): their wall times are inflated, so times are compared in CPU "
            "seconds, shown beside them."
        )
    return lines


def split_statement(study: StudyResults) -> str:
    """Where the test numbers come from, and what was chosen on validation instead."""
    row = study.row(study.best) if study.best else next(iter(study.analyses.values()))
    notes = [str(n) for n in study.runs[0].config.data_info.split_notes or []]
    carved = any(n.startswith("test split") for n in notes)
    rules = sorted({THRESHOLD_WORDS.get(a.threshold_rule, a.threshold_rule) for a in study.analyses.values()})
    select = sorted({SELECTION_WORDS.get(a.select, a.select) for a in study.analyses.values()})
    text = (
        f"Every test number comes from the test split ({unit_words(row.test.unit, row.test.n, row.test.n_patients)}, "
        f"{'carved from the training images by patient' if carved else 'the data set’s own test split'}), "
        f"scored once per run. "
        f"The epoch ({' or '.join(select)}) and the decision threshold ({', '.join(rules)}) were chosen on the "
        f"validation split ({row.n_val} images), and the runs that stand for each model and mode below are "
        f"those with the lowest validation loss (ties: the higher validation AUC): the test split chose nothing."
    )
    if notes:
        text += " Splits: " + "; ".join(str(n).rstrip(".") for n in notes) + "."
    return text


def external_statement(study: StudyResults) -> str:
    """The external sets, each named for its role."""
    parts = []
    for name, role in study.external_sets.items():
        sizes = {a.external[name].n for a in study.analyses.values() if name in a.external}
        count = "/".join(str(s) for s in sorted(sizes))
        parts.append(f"{set_title(name, role)}, {count} images")
    text = "External sets, scored once per run after selection and shown beside the internal test: " + "; ".join(parts)
    if "validation" in study.external_sets.values():
        text += (
            ". A validation set helped choose something (a run's threshold, temperature or epoch, or the settings "
            "themselves): it is no independent test"
        )
    return text + "."
