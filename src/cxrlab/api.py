"""The Python API: the study from a notebook or a script, in a few calls.

    import cxrlab

    run = cxrlab.train(data="chest_xray", model="densenet121", mode="frozen", epochs=20)
    run.metrics.test_accuracy, run.history     # typed metrics.json, a pandas DataFrame
    run.plot_curves()                               # a matplotlib Figure
    run.evaluate("other_hospital/")                 # metrics on other labelled data
    run.predict(["a.jpeg", "b.jpeg"])               # class probabilities per image
    cxrlab.compare([run, cxrlab.load_run("runs/scratch_cnn-scratch-...")])
    cxrlab.sweep("studies/study.yaml")              # every run of a study

Each function calls the layer that does the work, the same functions the command line calls;
nothing here trains, scores or draws by itself. ``Run.history`` is always a DataFrame, one
row per epoch with the columns of history.csv.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrlab.core.errors import CxrlabError
from cxrlab.training.records import HISTORY_COLUMNS, RunRecord

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from cxrlab.evaluate.runs import Prediction


class Run(RunRecord):
    """A run directory as read back (``RunRecord``: ``config``, ``metrics``, ``status``,
    ``epochs``), with what a notebook does with a run."""

    @property
    def history(self) -> pd.DataFrame:
        """history.csv as a DataFrame: one row per epoch (epoch, phase, train_loss, train_acc,
        val_loss, val_acc, lr, seconds)."""
        import pandas as pd

        return pd.DataFrame([row.model_dump() for row in self.epochs], columns=HISTORY_COLUMNS)

    def evaluate(
        self,
        data: str | os.PathLike,
        *,
        tta: int | None = None,
        device: str = "auto",
        show_progress: bool = False,
        adapt: str | None = None,
        adapted: str | None = None,
    ) -> dict:
        """Metrics of this run's checkpoint on ``data`` (a dataset root's test split, or every
        image of a folder of class folders), at the run's own threshold; also written into
        the run directory as ``eval-<data>.json``. ``adapt`` (bn, prior, bn+prior) adapts to
        ``data``'s images first, ``adapted`` applies a variant made by ``Run.adapt``; the result
        then carries its ``adaptation`` record."""
        from cxrlab.evaluate.runs import evaluate_run

        return evaluate_run(
            self, str(data), tta=tta, device=device, show_progress=show_progress, adapt=adapt, adapted=adapted
        )

    def predict(
        self,
        images: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        tta: int | None = None,
        device: str = "auto",
        adapt: str | None = None,
        adapted: str | None = None,
    ) -> list[Prediction]:
        """The predicted class and class probabilities of each image (folders are expanded)."""
        from cxrlab.evaluate.runs import predict_images

        paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
        return predict_images(self, [str(p) for p in paths], tta=tta, device=device, adapt=adapt, adapted=adapted)

    def adapt(self, target: str | os.PathLike, method: str = "bn+prior", name: str | None = None, device: str = "auto"):
        """Adapt to a target site's images without labels (``cxrlab adapt``) and record the
        variant in the run directory; returns its ``AdaptationRecord``."""
        from cxrlab.evaluate.adapt import adapt_run

        return adapt_run(self, str(target), method, name=name, device=device)

    def plot_curves(self, title: str | None = None) -> Figure:
        """Train and validation loss and accuracy per epoch, the kept epoch marked."""
        from cxrlab.report.figures import history_figure

        return history_figure(self, title=title)

    def export(self, format: str, out_dir: str | os.PathLike | None = None) -> list[Path]:
        """The model as ONNX or TorchScript plus its sidecar JSON (default: into the run directory)."""
        from cxrlab.training.export import export_run

        return export_run(self.path, format, out_dir=out_dir)

    def __repr__(self) -> str:
        score = f", test_accuracy={self.metrics.test_accuracy:.4f}" if self.metrics is not None else ""
        return (
            f"Run({str(self.path)!r}, model={self.config.model!r}, mode={self.config.mode!r}, "
            f"status={self.status.status!r}{score})"
        )


def load_run(path: str | os.PathLike | Run, require_finished: bool = True) -> Run:
    """Read a run directory; one that did not finish is refused unless ``require_finished``
    is False."""
    from cxrlab.training.records import load_run as load_record

    if isinstance(path, Run):
        path = path.path
    return _run(load_record(path, require_finished=require_finished))


def list_runs(folder: str | os.PathLike, finished_only: bool = True) -> list[Run]:
    """Every run directory directly under ``folder``, sorted by name."""
    from cxrlab.training.records import list_runs as list_records

    return [_run(record) for record in list_records(folder, finished_only=finished_only)]


def train(
    data: str | os.PathLike | None = None,
    model: str | None = None,
    mode: str = "finetune",
    *,
    resume: str | os.PathLike | Run | None = None,
    show_progress: bool = True,
    **settings: Any,
) -> Run:
    """Train one run and return it (``cxrlab train``). ``settings`` are the fields of
    ``cxrlab.training.config.TrainConfig`` (``epochs``, ``lr``, ``image_size``, ``weights``,
    ``labels``, ``out``, ...); left out, they take the defaults of the mode. ``resume``
    continues a killed run from its directory instead. A run that diverged is returned
    with ``status == "diverged"``, its history up to the blow-up, and no metrics."""
    from pydantic import ValidationError

    from cxrlab.models.registry import model_entry
    from cxrlab.training.config import TrainConfig
    from cxrlab.training.loop import fit

    if resume is not None:
        run_dir = fit(None, resume=resume.path if isinstance(resume, Run) else resume, show_progress=show_progress)
        return load_run(run_dir, require_finished=False)
    if data is None or model is None:
        raise CxrlabError("train needs data and model (or resume=RUN_DIR)")
    try:
        config = TrainConfig(data=str(data), model=model, mode=mode, **settings)
    except ValidationError as exc:
        raise CxrlabError(_setting_error(exc)) from exc
    model_entry(config.model)  # an unknown name fails before any data is read
    return load_run(fit(config, show_progress=show_progress), require_finished=False)


def compare(runs: Sequence[Run | str | os.PathLike], out_dir: str | os.PathLike | None = None) -> dict:
    """Accuracy and AUC with 95% intervals, paired tests and curves of ``runs`` on their
    shared test images (``cxrlab compare``); tables and figures go to ``out_dir`` if given."""
    from cxrlab.report.compare import compare_runs

    paths = [str(r.path if isinstance(r, Run) else r) for r in runs]
    return compare_runs(paths, out_dir=None if out_dir is None else str(out_dir))


def sweep(
    study: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    out: str | os.PathLike | None = None,
    storage: str | None = None,
    workers: int = 1,
    show_progress: bool = True,
) -> Path:
    """Run every run of a study file (``cxrlab sweep``) and return the study directory, made
    in ``out`` (default ``runs``). ``overrides`` set a value for every run: ``{"epochs": 2}``
    or ``["epochs=2"]``; ``data`` replaces the study's data."""
    from cxrlab.study.sweep import run_sweep

    if isinstance(overrides, Mapping):
        overrides = [f"{key}={value}" for key, value in overrides.items()]
    return Path(
        run_sweep(
            str(study),
            data=None if data is None else str(data),
            storage=storage,
            workers=workers,
            overrides=list(overrides),
            out=None if out is None else str(out),
            show_progress=show_progress,
        )
    )


def model_cards(names: Sequence[str] | None = None, image_size: int = 224, measure: bool = False) -> pd.DataFrame:
    """Size, cost, ImageNet accuracy and weight availability of the models (``cxrlab models``,
    the study's task A), one row per model."""
    import pandas as pd

    from cxrlab.models.cards import model_cards as cards

    return pd.DataFrame(cards(list(names) if names else None, image_size=image_size, measure=measure))


def _run(record: RunRecord) -> Run:
    return Run(
        path=record.path, config=record.config, status=record.status, metrics=record.metrics, epochs=record.epochs
    )


def _setting_error(exc) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "value"
    if error["type"] == "extra_forbidden":
        return f"train: unknown setting {where!r}; see the fields of cxrlab.training.config.TrainConfig"
    return f"train: {where}: {error['msg']} (got {error.get('input')!r})"
