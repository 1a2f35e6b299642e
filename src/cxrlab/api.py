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

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrlab.core.errors import CxrlabError, setting_error
from cxrlab.training.records import HISTORY_COLUMNS, RunRecord

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from cxrlab.evaluate.runs import Prediction
    from cxrlab.report.grids import Interpretation
    from cxrlab.training.config import TrainConfig
    from cxrlab.training.lr_find import LRFinding


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

    def interpret(
        self, data: str | os.PathLike, *, tta: int | None = None, device: str = "auto", show_progress: bool = False
    ) -> Interpretation:
        """This run scored on ``data`` (as ``evaluate``), for looking at its mistakes:
        ``.top_losses(k)`` (a list of dicts), ``.plot_top_losses(k)`` (an image grid of the
        most confident mistakes) and ``.plot_confusion()`` (fastai's interpretation tools)."""
        from cxrlab.report.grids import interpretation

        result = self.evaluate(data, tta=tta, device=device, show_progress=show_progress)
        return interpretation(self, str(data), result["predictions_file"])

    def plot_top_losses(self, data: str | os.PathLike, k: int = 9, **options: Any) -> Figure | None:
        """The ``k`` most confident mistakes on ``data`` as an image grid (None: no mistakes)."""
        return self.interpret(data, **options).plot_top_losses(k)

    def plot_cam(
        self, images: str | os.PathLike | Sequence[str | os.PathLike], *, device: str = "auto"
    ) -> list[Figure]:
        """Grad-CAM of the predicted class over each image (folders expanded): one figure per
        image with a colour bar, the probability and threshold, and a note when the map is
        too coarse to read (``cxrlab predict --cam``)."""
        from cxrlab.report.grids import cam_figures

        paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
        return [figure for _, _, figure in cam_figures(self, [str(p) for p in paths], device)]

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


def train_config(
    data: str | os.PathLike | None = None, model: str | None = None, mode: str | None = None, **settings: Any
) -> TrainConfig:
    """The validated ``TrainConfig`` of a run (what ``train`` and ``cxrlab train`` start):
    ``settings`` are its fields; one left out takes the config's default (and the mode's,
    when the run starts). A wrong value or an unknown model is a one-line ``CxrlabError``."""
    from pydantic import ValidationError

    from cxrlab.models.registry import model_entry
    from cxrlab.training.config import TrainConfig

    if data is None or model is None:
        raise CxrlabError("train needs data and model (on the command line --data and --model), or resume=RUN_DIR")
    if mode is not None:
        settings["mode"] = mode
    try:
        config = TrainConfig(data=str(data), model=model, **settings)
    except ValidationError as exc:
        raise CxrlabError(setting_error(exc, "train: ", TrainConfig.model_fields)) from exc
    model_entry(config.model)  # an unknown name fails before any data is read
    return config


def train(
    data: str | os.PathLike | None = None,
    model: str | None = None,
    mode: str | None = None,
    *,
    resume: str | os.PathLike | Run | None = None,
    show_progress: bool = True,
    estimate: bool = True,
    **settings: Any,
) -> Run:
    """Train one run and return it (``cxrlab train`` calls this). ``settings`` are the fields
    of ``cxrlab.training.config.TrainConfig`` (``epochs``, ``lr``, ``image_size``, ``weights``,
    ``patience``, ``out``, ...); left out, they take the defaults of the mode. Before the first
    epoch the ``cxrlab`` logger says what the run will cost, from batches timed on this machine
    (``estimate=False`` skips the timing). ``resume`` continues a killed run from its directory
    with the settings it started with (giving settings too is an error). A run that diverged is
    returned with ``status == "diverged"``, its history up to the blow-up, and no metrics."""
    from cxrlab.training.loop import fit

    if resume is not None:
        given = sorted(settings) + (["data"] if data is not None else []) + (["model"] if model is not None else [])
        if mode is not None:
            given.append("mode")
        if given:
            raise CxrlabError(
                f"resume continues a run with the settings it started with; {', '.join(given)} cannot change "
                "(leave them out, or start a new run)"
            )
        run_dir = fit(None, resume=resume.path if isinstance(resume, Run) else resume, show_progress=show_progress)
        return load_run(run_dir, require_finished=False)
    config = train_config(data, model, mode, **settings)
    if estimate and not config.distributed:
        _say_cost(config, show_progress)
    return load_run(fit(config, show_progress=show_progress), require_finished=False)


def _say_cost(config: TrainConfig, show_progress: bool) -> None:
    from cxrlab.training.estimate import estimate_run
    from cxrlab.training.run_data import load_run_data

    resolved = config.resolved()
    data = load_run_data(resolved, show_progress)
    if min(data.count(split) for split in ("train", "val", "test")) == 0:
        return  # fit names the empty split
    cost = estimate_run(resolved, data)
    if cost is None:
        return
    hint = ""
    if cost.seconds > 600:
        hint = "; --epochs, --image-size or --mode frozen make it shorter"
    logger.info(cost.sentence(resolved) + hint)


class LRFind:
    """The learning-rate range test's result with its plot: ``suggestion``, ``lrs``,
    ``losses`` (smoothed), ``raw_losses`` and ``stopped`` of the ``LRFinding`` it holds."""

    def __init__(self, finding: LRFinding):
        self.finding = finding

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["finding"], name)

    def __repr__(self) -> str:
        return (
            f"LRFind(suggestion={self.finding.suggestion:.3g}, steps={len(self.finding.lrs)}, {self.finding.stopped})"
        )

    def plot(self) -> Figure:
        """Loss against learning rate on a log axis, the suggestion marked."""
        from cxrlab.report.lr_plot import lr_find_figure

        return lr_find_figure(self.finding)


def lr_find(
    data: str | os.PathLike | None = None,
    model: str | None = None,
    mode: str | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    show_progress: bool = True,
    **settings: Any,
) -> LRFind:
    """The learning-rate range test for the run these settings describe (``cxrlab lr-find``):
    ``steps`` training steps from ``start_lr`` to ``end_lr`` on the train split, and a
    suggested rate (fastai's "valley"). ``settings`` are ``TrainConfig`` fields, as in ``train``."""
    from cxrlab.training.lr_find import find_lr

    config = train_config(data, model, mode, **settings)
    return LRFind(find_lr(config, start_lr, end_lr, steps, show_progress=show_progress))


def show_data(
    data: str | os.PathLike,
    *,
    per_class: int = 4,
    augment: str = "none",
    image_size: int = 224,
    labels: str = "folders",
    split_seed: int = 0,
    seed: int = 0,
    show_progress: bool = False,
) -> Figure:
    """A labelled grid of ``per_class`` images per class and split (the splits a run with
    ``split_seed`` uses), augmented as training would when ``augment`` is "light" or
    "strong" (``cxrlab data show``; fastai's ``show_batch``)."""
    from cxrlab.data.dataset import load_dataset
    from cxrlab.report.grids import data_grid_figure

    if augment not in ("none", "light", "strong"):
        raise CxrlabError(f"augment is none, light or strong (got {augment!r})")
    if not 1 <= per_class <= 16:
        raise CxrlabError(f"per_class {per_class}: show 1 to 16 images per class and split")
    dataset = load_dataset(str(data), image_size, split_seed=split_seed, labels=labels, show_progress=show_progress)
    return data_grid_figure(dataset, per_class=per_class, augment=augment, seed=seed)


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
    name: str | None = None,
    show_progress: bool = True,
) -> Path:
    """Run every run of a study file or shipped study (``cxrlab sweep``) and return the study
    directory, made in ``out`` (default ``runs``) and named ``name`` (default the study's).
    ``overrides`` set a value for every run: ``{"epochs": 2}`` or ``["epochs=2"]``; ``data``
    replaces the study's data."""
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
            name=name,
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
