"""The results table of a study: one row per setting, its seeds grouped, best first.

Rows carry the study's own columns (model, mode, learning rate, epochs, weight decay, batch
size, training time, test loss, test accuracy) and what it lacked (validation loss, accuracy
and AUC, test AUC, sensitivity, specificity, the external sets), each as the mean over the
setting's runs with its standard deviation and the number of runs. Rows are sorted by the
one selection rule: validation loss, ties by validation AUC; the test split never chooses
anything, not even the order of a table.

Every accuracy is labelled with its decision rule: test numbers at the threshold each run
chose on validation, validation accuracy at the argmax (the threshold was fitted on those
same validation images, so an accuracy at it would be in-sample).
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from cxrlab.core.io import write_text
from cxrlab.core.text import format_value
from cxrlab.report.analysis import TRANSFER_PLAIN, validation_accuracy
from cxrlab.report.formatting import markdown_table
from cxrlab.training.config import EXECUTION_SETTINGS
from cxrlab.training.records import DIVERGED, FINISHED, RunRecord

# Column name -> the value of a finished run.
METRICS = {
    "training_time_s": lambda run: run.scores.train_seconds,
    "test_loss": lambda run: run.scores.test_loss,
    "test_accuracy": lambda run: run.scores.test_accuracy,
    "val_loss": lambda run: run.scores.val_loss,
    "val_accuracy_argmax": validation_accuracy,
    "val_roc_auc": lambda run: run.scores.val_roc_auc,
    "roc_auc": lambda run: run.scores.roc_auc,
    "sensitivity": lambda run: run.scores.sensitivity,
    "specificity": lambda run: run.scores.specificity,
    "converged_epoch": lambda run: run.scores.converged_epoch,
    "converged_seconds": lambda run: run.scores.converged_seconds,
}
SETTINGS = ["model", "mode", "learning_rate", "epochs", "weight_decay", "batch_size", "image_size", "optimizer"]
# What transferred (freeze depth, partial transfer, weights, data size): shown in results.md
# when any row sets one away from its plain value.
TRANSFER_SETTINGS = {
    "freeze_blocks": "freeze K",
    "transfer_blocks": "transfer K",
    "weights": "weights",
    "train_fraction": "train fraction",
}
_PLAIN = TRANSFER_PLAIN
SEED_SUFFIX = re.compile(r"-seed=\d+$")


@dataclass(frozen=True)
class Stat:
    """The mean over a setting's runs, with the sample standard deviation (None for one run)."""

    mean: float | None
    std: float | None

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return cls(None, None)
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


@dataclass
class ResultRow:
    """One setting of a study: its settings, its runs, and the mean of each metric."""

    setting: str
    model: str
    mode: str
    learning_rate: float | None
    epochs: int | None
    weight_decay: float | None
    batch_size: int
    image_size: int
    optimizer: str | None
    n: int
    status: str
    binary: bool
    runs: list[str]
    seeds: list[int]
    metrics: dict[str, Stat]
    external: dict[str, Stat] = field(default_factory=dict)  # accuracy on each external set
    external_roles: dict[str, str] = field(default_factory=dict)
    freeze_blocks: int | None = None
    transfer_blocks: int | None = None
    weights: str | None = None
    train_fraction: float = 1.0

    def __getitem__(self, name: str):
        """A column of results.csv by name: a setting, ``m`` or ``m_std``, ``external_<set>_accuracy``."""
        for key, stat in self.columns().items():
            if name == key:
                return stat.mean
            if name == f"{key}_std":
                return stat.std
        return getattr(self, name)

    def columns(self) -> dict[str, Stat]:
        return {**self.metrics, **{f"external_{k}_accuracy": v for k, v in self.external.items()}}


def results_rows(runs: list[RunRecord]) -> list[ResultRow]:
    """One row per setting (runs that differ only in seed grouped), sorted by validation loss,
    ties by validation AUC. ``status`` is ``finished`` when every run finished, else e.g.
    ``diverged`` or ``2 finished, 1 diverged``."""
    groups: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(_setting_key(run), []).append(run)
    rows = [_row(group) for group in groups.values()]
    rows.sort(key=_order)
    return rows


def _order(row: ResultRow) -> tuple:
    loss, auc = row.metrics["val_loss"].mean, row.metrics["val_roc_auc"].mean
    return (loss is None, loss or 0.0, -(auc if auc is not None else -math.inf), row.setting)


def results_cells(rows: list[ResultRow]) -> tuple[list[str], list[list[str]]]:
    """The results table's header and cells: mean ± std where a setting has more than one run."""
    show_status = any(row.status != FINISHED for row in rows)
    rule = "@thr" if any(row.binary for row in rows) else "@argmax"
    sets = _external_sets(rows)
    transfer = [k for k in TRANSFER_SETTINGS if any(row[k] not in _PLAIN[k] for row in rows)]
    header = [
        "model",
        "mode",
        *[TRANSFER_SETTINGS[k] for k in transfer],
        "lr",
        "epochs",
        "weight decay",
        "batch",
        "image size",
        "train time",
        "test loss",
    ]
    roles = {name: role for row in rows for name, role in row.external_roles.items()}
    header += [f"test acc {rule}"] + [f"{_set_name(name, roles)} acc {rule}" for name in sets]
    header += ["val loss", "val acc @argmax", "val AUC", "test AUC", f"sensitivity {rule}", f"specificity {rule}"]
    header += ["converged (epoch, s)", "n"]
    header += ["status"] if show_status else []
    cells = []
    for row in rows:
        line = (
            [row.model, row.mode]
            + [format_value(row[k]) for k in transfer]
            + [format_value(v) for v in (row.learning_rate, row.epochs, row.weight_decay)]
        )
        line += [format_value(row.batch_size), format_value(row.image_size)]
        line += [_mean_std(row, "training_time_s", 1, " s"), _mean_std(row, "test_loss", 4)]
        line += [_percent(row, "test_accuracy")] + [_percent(row, f"external_{name}_accuracy") for name in sets]
        line += [_mean_std(row, "val_loss", 4), _percent(row, "val_accuracy_argmax"), _mean_std(row, "val_roc_auc", 4)]
        line += [_mean_std(row, "roc_auc", 4), _percent(row, "sensitivity"), _percent(row, "specificity")]
        line += [_converged(row), str(row.n)]
        cells.append(line + ([row.status] if show_status else []))
    return header, cells


def results_note(rows: list[ResultRow]) -> str:
    """What the table's columns mean (written under results.md and in the report)."""
    sets = _external_sets(rows)
    roles = {name: role for row in rows for name, role in row.external_roles.items()}
    text = (
        "One row per setting, sorted by validation loss (ties: validation AUC); the test split chooses nothing. "
        "Mean ± standard deviation over n seeds where n > 1. @thr: at the decision threshold each run chose on its "
        "validation split; @argmax: at the most probable class (validation accuracy is at the argmax because the "
        "threshold was fitted on those same images). Train time is fitting time (epochs, plus computing frozen "
        "features once). Converged: the first epoch at which validation loss came within 5% of the run's lowest, "
        "and the training seconds by then."
    )
    for name in sets:
        kind = (
            "it chose something, so it is no independent test"
            if roles.get(name) == "validation"
            else "it chose nothing"
        )
        text += f" {_set_name(name, roles)}: an external set scored once per run after selection; {kind}."
    return text


def _set_name(name: str, roles: dict[str, str]) -> str:
    return f"{name} (validation set)" if roles.get(name) == "validation" else name


def results_markdown(rows: list[ResultRow]) -> str:
    """A Markdown table of ``rows``."""
    header, cells = results_cells(rows)
    align = ["---" if i < 2 else "---:" for i in range(len(header))]
    return markdown_table(header, cells, align) + "\n"


def write_results(rows: list[ResultRow], folder: str | Path) -> list[Path]:
    """``results.csv`` (every field) and ``results.md`` (the table) in ``folder``, atomically."""
    folder = Path(folder)
    names = list(METRICS) + [f"external_{name}_accuracy" for name in _external_sets(rows)]
    columns = ["setting"] + SETTINGS + list(TRANSFER_SETTINGS) + ["n", "status"]
    for name in names:
        columns += [name, f"{name}_std"]
    columns += ["runs"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([";".join(row.runs) if c == "runs" else _csv_value(row[c]) for c in columns])
    write_text(folder / "results.csv", buffer.getvalue())
    write_text(folder / "results.md", results_markdown(rows) + "\n" + results_note(rows) + "\n")
    return [folder / "results.csv", folder / "results.md"]


# --- pieces -------------------------------------------------------------------------------


def _external_sets(rows: list[ResultRow]) -> list[str]:
    return list(dict.fromkeys(name for row in rows for name in row.external))


def _setting_key(run: RunRecord) -> tuple:
    config = run.config.train_config().model_dump(exclude=set(EXECUTION_SETTINGS) | {"seed"})
    # A sweep names its runs <setting>-seed=N: the name keeps two settings apart even when
    # --set overrides made their configs equal (a big study tried small).
    setting = SEED_SUFFIX.sub("", run.run_id) if SEED_SUFFIX.search(run.run_id) else None
    return (setting, repr(sorted(config.items(), key=lambda item: item[0])))


def _row(runs: list[RunRecord]) -> ResultRow:
    runs = sorted(runs, key=lambda r: (r.config.seed, r.run_id))
    first = runs[0].config
    done = [r for r in runs if r.finished and r.metrics is not None]
    sets = list(dict.fromkeys(name for r in done for name in r.scores.external))
    return ResultRow(
        setting=SEED_SUFFIX.sub("", runs[0].run_id),
        model=first.model,
        mode=first.mode,
        learning_rate=first.lr,
        epochs=first.epochs,
        weight_decay=first.weight_decay,
        batch_size=first.batch_size,
        image_size=first.image_size,
        optimizer=first.optimizer,
        n=len(runs),
        status=_status(runs),
        binary=len(runs[0].classes) == 2,
        runs=[r.run_id for r in runs],
        seeds=[r.config.seed for r in runs],
        metrics={name: Stat.of([value(r) for r in done]) for name, value in METRICS.items()},
        external={
            name: Stat.of([r.scores.external[name].accuracy for r in done if name in r.scores.external])
            for name in sets
        },
        external_roles={name: r.scores.external[name].role for r in done for name in r.scores.external},
        **{key: getattr(first, key) for key in TRANSFER_SETTINGS},
    )


def _status(runs: list[RunRecord]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        status = run.status.status
        counts[status] = counts.get(status, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    ranked = sorted(counts, key=lambda status: ({FINISHED: 0, DIVERGED: 1}.get(status, 2), status))
    return ", ".join(f"{counts[status]} {status}" for status in ranked)


def _mean_std(row: ResultRow, name: str, digits: int, unit: str = "") -> str:
    mean, std = row[name], row[f"{name}_std"]
    if mean is None:
        return "-"
    text = f"{mean:.{digits}f}"
    if row.n > 1 and std is not None:
        text += f" ± {std:.{digits}f}"
    return text + unit


def _converged(row: ResultRow) -> str:
    """When validation loss first came within 5% of its best: epoch and training seconds."""
    if row["converged_epoch"] is None:
        return "-"
    return f"{row['converged_epoch']:.3g}, {row['converged_seconds']:.0f} s"


def _percent(row: ResultRow, name: str) -> str:
    mean, std = row[name], row[f"{name}_std"]
    if mean is None:
        return "-"
    if row.n > 1 and std is not None:
        return f"{100 * mean:.2f} ± {100 * std:.2f}%"
    return f"{100 * mean:.2f}%"


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)
