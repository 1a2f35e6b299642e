"""``cxrlab train`` and ``cxrlab lr-find``: one run, and the learning rate to give it.

Both take one option per ``TrainConfig`` field (``cli.options``) and start through the same
function as the Python API (``cxrlab.api.train``, ``cxrlab.api.lr_find``).
"""

from __future__ import annotations

import typer

from cxrlab.cli.app import app, examples, new_file, new_folder, print_json
from cxrlab.cli.options import option_name, with_config_options
from cxrlab.core.errors import CxrlabError

# What `train --json` and its last line report of a finished run.
HEADLINE = (
    "test_accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "roc_auc",
    "test_loss",
    "threshold",
    "val_loss",
    "best_epoch",
    "epochs_run",
    "train_seconds",
)

TRAIN_HELP = """Train one run: fine-tune, fixed feature extractor (frozen), from scratch, or gradual unfreezing.

Every option is a field of cxrlab.training.config.TrainConfig, the same settings a study file
and cxrlab.train() take. Left out, a setting takes the mode's default: a bare run fine-tunes
for 10 epochs at 224 px, which is minutes on a GPU and hours on a CPU. Before the first epoch
the run says how long it will take, from batches timed on this machine. The run directory is
printed on stdout when it finishes (with --json, its headline metrics too)."""


def check_settings(settings: dict, resumable: bool = True) -> None:
    """The settings as cxrlab.train will check them, with a wrong one named by its option."""
    from pydantic import ValidationError

    from cxrlab.training.config import TrainConfig

    missing = [option_name(key) for key in ("data", "model") if key not in settings]
    if missing:
        alternative = " (or --resume RUN_DIR to continue a run)" if resumable else ""
        raise CxrlabError(f"give {' and '.join(missing)}{alternative}")
    try:
        TrainConfig(**settings)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "value"
        raise CxrlabError(f"{option_name(field)}: {error['msg']} (got {error.get('input')!r})") from exc


@app.command(
    help=TRAIN_HELP,
    epilog=examples(
        "cxrlab train --data ../shared/data/kermany-224 --model efficientnet_lite0 --mode frozen",
        "cxrlab train --data DATA --model resnet50 --epochs 3 --image-size 128 --patience 2",
        "cxrlab train --data DATA --model scratch_cnn --mode scratch --json",
        "cxrlab train --resume runs/efficientnet_lite0-finetune-20260101-120000",
    ),
)
@with_config_options
def train(
    settings: dict,
    resume: str | None = typer.Option(
        None, help="Continue a killed run from its run directory, with the settings it started with."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the run directory and its headline metrics as JSON."),
) -> None:
    from cxrlab.api import train as train_run

    if resume is not None and settings:
        given = ", ".join(option_name(key) for key in settings)
        raise CxrlabError(
            f"--resume {resume} continues the run with the settings it started with: leave out {given} "
            "(or start a new run)"
        )
    if resume is None:
        check_settings(settings)
    new_folder("--out", settings.get("out"))
    run = train_run(resume=resume, show_progress=not (quiet or as_json), **settings)
    if as_json:
        metrics = run.metrics.as_json() if run.metrics is not None else {}
        print_json(
            {
                "run_dir": str(run.path),
                "status": run.status.status,
                "metrics": {key: metrics[key] for key in HEADLINE if key in metrics},
            }
        )
    else:
        typer.echo(str(run.path))
    if run.diverged:
        raise typer.Exit(1)  # a result, not a crash: the run has said why in one line


@app.command(
    "lr-find",
    epilog=examples(
        "cxrlab lr-find --data ../shared/data/kermany-224 --model efficientnet_lite0 --image-size 128",
        "cxrlab lr-find --data DATA --model scratch_cnn --mode scratch --plot lr.png --json",
    ),
)
@with_config_options
def lr_find(
    settings: dict,
    start_lr: float = typer.Option(1e-7, min=0, help="The first learning rate tried."),
    end_lr: float = typer.Option(10.0, min=0, help="The last learning rate tried."),
    steps: int = typer.Option(100, min=5, max=10_000, help="Training steps, each at a higher rate."),
    plot: str = typer.Option("lr_find.png", help="Where the plot of loss against learning rate is written."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the suggestion and the curve as JSON."),
) -> None:
    """The learning-rate range test: train a few dozen steps with a growing learning rate,
    plot the loss, and suggest a rate (fastai's lr_find). It trains on the train split only
    and writes no run; pass the suggestion to cxrlab train --lr."""
    from cxrlab.api import lr_find as find

    new_file("--plot", plot)
    check_settings(settings, resumable=False)
    finding = find(start_lr=start_lr, end_lr=end_lr, steps=steps, show_progress=not (quiet or as_json), **settings)
    from cxrlab.report.figures import save_png

    path = save_png(finding.plot(), plot)
    if as_json:
        print_json(
            {
                "suggested_lr": finding.suggestion,
                "stopped": finding.stopped,
                "plot": str(path),
                "lrs": finding.lrs,
                "losses": finding.losses,
            }
        )
        return
    typer.echo(f"suggested lr {finding.suggestion:.2g} ({len(finding.lrs)} steps, {finding.stopped}); plot: {path}")
