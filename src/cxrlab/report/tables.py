"""The results table of a study: one row per setting, its seeds grouped, best first.

Rows carry the study's own columns (model, mode, learning rate, epochs, weight decay, batch
size, training time, test loss, test accuracy) and what it lacked (validation accuracy and
loss, AUC, sensitivity, specificity), each as the mean over the setting's runs with its
standard deviation and the number of runs. Rows are sorted by validation loss: the test
split never chooses anything, not even the order of a table.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

from cxrlab.core.io import write_text
from cxrlab.training.config import EXECUTION_SETTINGS
from cxrlab.training.records import DIVERGED, FINISHED, RunRecord

# Row name -> metrics.json key.
METRICS = {
    "training_time_s": "train_seconds",
    "test_loss": "test_loss",
    "test_accuracy": "test_accuracy",
    "val_loss": "val_loss",
    "val_accuracy": "val_accuracy",
    "roc_auc": "roc_auc",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "converged_epoch": "converged_epoch",
    "converged_seconds": "converged_seconds",
}
SETTINGS = ["model", "mode", "learning_rate", "epochs", "weight_decay", "batch_size", "image_size", "optimizer"]
# What transferred (freeze depth, partial transfer, weights, data size): shown in results.md
# when any row sets one away from its default.
TRANSFER_SETTINGS = {
    "freeze_blocks": "freeze K",
    "transfer_blocks": "transfer K",
    "weights": "weights",
    "train_fraction": "train fraction",
}
_PLAIN = {
    "freeze_blocks": (None,),
    "transfer_blocks": (None,),
    "weights": ("imagenet", "none"),
    "train_fraction": (1.0,),
}
SEED_SUFFIX = re.compile(r"-seed=\d+$")


def results_rows(runs: list[RunRecord]) -> list[dict]:
    """One row per setting (runs that differ only in seed grouped), sorted by validation loss.

    Each metric ``m`` is the mean over the setting's runs that have it, with ``m_std``
    (sample standard deviation; None for one run). ``status`` is ``finished`` when every
    run finished, else e.g. ``diverged`` or ``2 finished, 1 diverged``."""
    groups: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(_setting_key(run), []).append(run)
    rows = [_row(group) for group in groups.values()]
    rows.sort(key=lambda row: (row["val_loss"] is None, row["val_loss"] or 0.0, row["setting"]))
    return rows


def results_markdown(rows: list[dict]) -> str:
    """A Markdown table of ``rows``: mean ± std where a setting has more than one run."""
    show_status = any(row["status"] != FINISHED for row in rows)
    transfer = [k for k in TRANSFER_SETTINGS if any(row[k] not in _PLAIN[k] for row in rows)]
    header = [
        "model",
        "mode",
        "lr",
        "epochs",
        "weight decay",
        "batch",
        "image size",
        "train time",
        "test loss",
        "test acc",
        "val loss",
        "val acc",
        "AUC",
        "sensitivity",
        "specificity",
        "converged (epoch, s)",
        "n",
    ]
    header[2:2] = [TRANSFER_SETTINGS[k] for k in transfer]
    header += ["status"] if show_status else []
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|",
    ]
    for row in rows:
        cells = [
            row["model"],
            row["mode"],
            _number(row["learning_rate"]),
            _number(row["epochs"]),
            _number(row["weight_decay"]),
            _number(row["batch_size"]),
            _number(row["image_size"]),
            _mean_std(row, "training_time_s", 1, " s"),
            _mean_std(row, "test_loss", 4),
            _percent(row, "test_accuracy"),
            _mean_std(row, "val_loss", 4),
            _percent(row, "val_accuracy"),
            _mean_std(row, "roc_auc", 4),
            _percent(row, "sensitivity"),
            _percent(row, "specificity"),
            _converged(row),
            str(row["n"]),
        ]
        cells[2:2] = [_number(row[k]) for k in transfer]
        cells += [row["status"]] if show_status else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], folder: str | Path) -> list[Path]:
    """``results.csv`` (every field) and ``results.md`` (the table) in ``folder``, atomically."""
    folder = Path(folder)
    columns = ["setting"] + SETTINGS + list(TRANSFER_SETTINGS) + ["n", "status"]
    for name in METRICS:
        columns += [name, f"{name}_std"]
    columns += ["runs"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([";".join(row["runs"]) if c == "runs" else _csv_value(row.get(c)) for c in columns])
    write_text(folder / "results.csv", buffer.getvalue())
    note = (
        "\nOne row per setting, sorted by validation loss (the test split chooses nothing); "
        "mean ± standard deviation over n seeds where n > 1. Train time is fitting time (epochs, plus "
        "computing frozen features once). Converged: the first epoch at which validation loss came within "
        "5% of the run's lowest, and the training seconds by then.\n"
    )
    write_text(folder / "results.md", results_markdown(rows) + note)
    return [folder / "results.csv", folder / "results.md"]


# --- pieces -------------------------------------------------------------------------------


def _setting_key(run: RunRecord) -> tuple:
    config = run.config.train_config().model_dump(exclude=EXECUTION_SETTINGS | {"seed"})
    # A sweep names its runs <setting>-seed=N: the name keeps two settings apart even when
    # --set overrides made their configs equal (a big study tried small).
    setting = SEED_SUFFIX.sub("", run.run_id) if SEED_SUFFIX.search(run.run_id) else None
    return (setting, repr(sorted(config.items(), key=lambda item: item[0])))


def _row(runs: list[RunRecord]) -> dict:
    runs = sorted(runs, key=lambda r: (r.config.seed, r.run_id))
    first = runs[0].config
    row = {
        "setting": SEED_SUFFIX.sub("", runs[0].run_id),
        "model": first.model,
        "mode": first.mode,
        "learning_rate": first.lr,
        "epochs": first.epochs,
        "weight_decay": first.weight_decay,
        "batch_size": first.batch_size,
        "image_size": first.image_size,
        "optimizer": first.optimizer,
        **{key: getattr(first, key) for key in TRANSFER_SETTINGS},
        "n": len(runs),
        "status": _status(runs),
        "runs": [r.run_id for r in runs],
        "seeds": [r.config.seed for r in runs],
    }
    for name, key in METRICS.items():
        values = [
            float(getattr(r.metrics, key))
            for r in runs
            if r.finished and r.metrics is not None and getattr(r.metrics, key) is not None
        ]
        values = [v for v in values if math.isfinite(v)]
        row[name] = sum(values) / len(values) if values else None
        row[f"{name}_std"] = _std(values)
    return row


def _status(runs: list[RunRecord]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        status = run.status.status
        counts[status] = counts.get(status, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    ranked = sorted(counts, key=lambda status: ({FINISHED: 0, DIVERGED: 1}.get(status, 2), status))
    return ", ".join(f"{counts[status]} {status}" for status in ranked)


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) < 1e-2:
            mantissa, exponent = f"{value:.3e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    return str(value)


def _mean_std(row: dict, name: str, digits: int, unit: str = "") -> str:
    mean, std = row[name], row[f"{name}_std"]
    if mean is None:
        return "-"
    text = f"{mean:.{digits}f}"
    if row["n"] > 1 and std is not None:
        text += f" ± {std:.{digits}f}"
    return text + unit


def _converged(row: dict) -> str:
    """When validation loss first came within 5% of its best: epoch and training seconds."""
    if row["converged_epoch"] is None:
        return "-"
    return f"{row['converged_epoch']:.3g}, {row['converged_seconds']:.0f} s"


def _percent(row: dict, name: str) -> str:
    mean, std = row[name], row[f"{name}_std"]
    if mean is None:
        return "-"
    if row["n"] > 1 and std is not None:
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
