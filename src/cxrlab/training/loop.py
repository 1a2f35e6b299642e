"""The fit loop for finetune, frozen, scratch and gradual runs.

Read ``fit`` top to bottom: it loads the data, the external sets and the model, opens the
run directory, runs the epochs of each phase of the mode (train, validate, keep the best
checkpoint, write a resumable one), mixes in the probe when WiSE-FT is asked for, then
scores the selected weights once on the test split and the external sets and writes the
run. The pieces live beside it: ``phases`` (what a mode trains), ``phase_loop`` (a phase's
epochs), ``epochs`` (one epoch), ``optim`` (optimisers and schedules), ``checkpoint``
(resume), ``robust`` (weight average, WiSE-FT), ``external`` (sets from elsewhere),
``scoring`` (the test, once).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from cxrlab.core.errors import CxrlabError
from cxrlab.data.batches import check_batch_memory
from cxrlab.data.dataset import Dataset
from cxrlab.data.subsets import keep_train_fraction
from cxrlab.models.initialise import initialise
from cxrlab.models.registry import Classifier, build_model
from cxrlab.training.checkpoint import (
    BEST,
    LAST,
    restore_checkpoint,
    write_best,
)
from cxrlab.training.claim import claim_run_dir
from cxrlab.training.config import TrainConfig
from cxrlab.training.context import Context, check_splits, class_weights
from cxrlab.training.convergence import convergence
from cxrlab.training.distributed import SINGLE, Ranks, init_ranks, same_text_everywhere, shutdown, weights_agree
from cxrlab.training.external import labelled_sets, selection_name
from cxrlab.training.freeze import transfer_fields
from cxrlab.training.phase_loop import run_phase
from cxrlab.training.phases import Diverged, Selection, plan_phases
from cxrlab.training.records import DIVERGED, FAILED, FINISHED, RUNNING, read_config, read_status
from cxrlab.training.robust import wise_mixture
from cxrlab.training.run_data import load_run_data
from cxrlab.training.run_metrics import DistributedInfo, MachineLoad, SplitOverlap
from cxrlab.training.rundir import RunWriter, new_run_id, safe_run_id
from cxrlab.training.runtime import config_record, load_average, resolve_device, seed_everything, use_channels_last

Log = Callable[[str], None]
logger = logging.getLogger(__name__)


def fit(
    config: TrainConfig | None,
    *,
    resume: str | os.PathLike | None = None,
    show_progress: bool = True,
    log: Log | None = None,
) -> Path:
    """Train one run and return its run directory (``config`` is None when resuming).

    The run directory has one writer: it is claimed before anything is written into it (a
    resumed one before anything is read) and released when the run ends (``claim``)."""
    with contextlib.ExitStack() as claims:
        # torchrun's other ranks write nothing, so only rank 0 claims (RANK is set before any group).
        if resume is not None and os.environ.get("RANK", "0") == "0":
            if not (Path(resume) / "config.yaml").is_file():
                raise CxrlabError(f"--resume {resume}: not a run directory (no config.yaml)")
            claims.enter_context(claim_run_dir(resume))
        return _fit(config, resume, claims, show_progress, log)


def _fit(
    config: TrainConfig | None,
    resume: str | os.PathLike | None,
    claims: contextlib.ExitStack,
    show_progress: bool,
    log: Log | None,
) -> Path:
    log = log or logger.info
    recorded_split = None
    if resume is not None:
        config, recorded_split = _resumed_config(resume)
    assert config is not None
    config = config.resolved()
    device, ranks, deterministic = _start_process(config)
    if not ranks.is_main:
        log = lambda line: None  # noqa: E731 - one voice per run

    check_batch_memory(config.batch_size, config.image_size)
    data = _load_data(config, show_progress)
    _warn_of_test_overlap(data, log)
    if recorded_split not in (None, data.split_fingerprint):
        # Resuming on other images would mix two data sets in one run's weights and records.
        raise CxrlabError(
            f"--resume {resume}: the data at {config.data} changed since the run started "
            "(files, their contents, or the splits): start a new run"
        )
    # Loaded before anything is written: a wrong path fails now, not after the training.
    external = labelled_sets(config, data.classes, show_progress)
    model, weights_id = _initialised_model(config, len(data.classes), device)

    run_dir = Path(resume) if resume is not None else _new_run_dir(config, ranks, claims)
    writer = RunWriter(run_dir, enabled=ranks.is_main)
    writer.status(RUNNING)
    record = config_record(config, data, weights_id, device, deterministic)
    writer.config(record)
    writer.split(data.paths, data.splits, data.labels, data.patients, data.classes, data.digests)
    ctx = Context(
        config=config,
        data=data,
        model=model,
        device=device,
        writer=writer,
        class_weights=class_weights(config, data, device),
        weights_id=weights_id,
        show_progress=show_progress and ranks.is_main,
        ranks=ranks,
        external=external,
        selection_set=selection_name(external),
    )
    if config.tensorboard and ranks.is_main:
        _open_tensorboard(ctx, record)

    ctx.load_at_start = load_average()
    selection = _train(ctx, resume is not None, log)
    if selection is None:
        return run_dir  # diverged: recorded and said
    _finish(ctx, selection, log)
    return run_dir


def _start_process(config: TrainConfig) -> tuple[torch.device, Ranks, bool]:
    """The device this process trains on, its place among the ranks (joined when the run is
    distributed), and whether it runs deterministically; the random generators are seeded."""
    device = resolve_device(config.device)
    ranks = SINGLE
    if config.distributed:
        ranks = init_ranks(device)
        device = ranks.device
    deterministic = config.deterministic if config.deterministic is not None else device.type == "cpu"
    seed_everything(config.seed, deterministic, compiling=config.compile)
    return device, ranks, deterministic


def _warn_of_test_overlap(data: Dataset, log: Log) -> None:
    """Say when the test split shares patients or images with train/val (metrics.json records it too)."""
    overlap = SplitOverlap(**data.overlap("test"))
    if overlap.any:
        log(
            f"warning: the test split shares {overlap.patients} patients "
            f"({overlap.images_of_shared_patients} images) and {overlap.identical_images} byte-identical images "
            "with train/val: its scores overstate performance on new patients (recorded in metrics.json)"
        )


def _initialised_model(config: TrainConfig, num_classes: int, device: torch.device) -> tuple[Classifier, str]:
    """The run's model with its starting weights, on ``device``, and the id of those weights."""
    model = build_model(config.model, num_classes=num_classes)
    assert config.weights is not None  # resolved() chooses the weights
    weights_id = initialise(
        model,
        config.model,
        config.weights,
        seed=config.seed,
        transfer_blocks=config.transfer_blocks,
        freeze_blocks=config.freeze_blocks,
    )
    model.to(device)
    if use_channels_last(config.channels_last):
        model.to(memory_format=torch.channels_last)
    return model, weights_id


def _open_tensorboard(ctx: Context, record: dict) -> None:
    """Start the run's TensorBoard log with its settings and a few example images."""
    from cxrlab.training.tensorboard import TensorBoardLogger

    ctx.tensorboard = TensorBoardLogger(ctx.writer.path / "tensorboard", record)
    ctx.tensorboard.examples(ctx.data)


def _resumed_config(resume: str | os.PathLike) -> tuple[TrainConfig, str | None]:
    """The settings a killed run started with, and the fingerprint of its splits."""
    run_dir = Path(resume)
    if not (run_dir / "config.yaml").exists():
        raise CxrlabError(f"--resume {resume}: not a run directory (no config.yaml)")
    status = read_status(run_dir).status
    if status in (FINISHED, DIVERGED):
        raise CxrlabError(f"--resume {resume}: the run already {status}; start a new run instead")
    recorded = read_config(run_dir)
    return recorded.train_config(), recorded.data_info.split_fingerprint


def _load_data(config: TrainConfig, show_progress: bool) -> Dataset:
    data = load_run_data(config, show_progress)
    data = keep_train_fraction(data, config.train_fraction, config.split_seed)
    check_splits(data)
    return data


def _new_run_dir(config: TrainConfig, ranks, claims: contextlib.ExitStack) -> Path:
    """The run directory of a new run, claimed by the main rank: two processes started at
    once with one --name get one run, the other a one-line refusal."""
    run_id = safe_run_id(config.name) if config.name else new_run_id(config.model, config.mode)
    run_dir = Path(config.out) / same_text_everywhere(run_id, ranks)
    if ranks.is_main:
        claims.enter_context(claim_run_dir(run_dir))
        if (run_dir / "status.json").exists() or (run_dir / "config.yaml").exists():
            raise CxrlabError(f"run directory {run_dir} exists: choose another --name or --resume it")
    return run_dir


def _train(ctx: Context, resuming: bool, log: Log) -> Selection | None:
    """Every phase's epochs; the selection of the best epoch, or None when the run diverged."""
    config, writer = ctx.config, ctx.writer
    selection = Selection(config.select)
    start_phase, start_epoch = 0, 0
    if resuming and (writer.path / LAST).exists():
        start_phase, start_epoch, selection = restore_checkpoint(ctx, writer.path)
        if not (writer.path / BEST).exists():
            write_best(ctx, selection)  # a head phase's best, when the kill came before it was written
        log(f"resuming {writer.path} at phase {start_phase + 1}, epoch {start_epoch + 1}")
    try:
        for index, phase in enumerate(plan_phases(config)):
            if index >= start_phase:
                first = start_epoch if index == start_phase else 0
                run_phase(ctx, index, phase, selection, first_epoch=first, log=log)
    except Diverged as exc:
        write_best(ctx, selection)  # the kept checkpoint is on disk before the status says so
        writer.status(DIVERGED, epoch=exc.epoch, step=exc.step, loss=str(exc.loss), best_epoch=selection.epoch or None)
        kept = (
            f"kept the checkpoint of epoch {selection.epoch}"
            if selection.epoch
            else "no epoch finished, no checkpoint kept"
        )
        log(
            f"run diverged: loss became {exc.loss} at epoch {exc.epoch}, step {exc.step}; {kept} in {writer.path}; "
            f"{_divergence_hint(config)}"
        )
        return None
    except BaseException:
        ctx.background.drain()
        writer.status(FAILED)
        raise
    return selection


def _divergence_hint(config: TrainConfig) -> str:
    """What to lower: a weight decay of 1 or more (usual values are 1e-5 to 1e-2) shrinks every
    weight by at least the learning rate each step and is the cause by itself; otherwise the
    learning rate."""
    assert config.lr is not None
    if (config.weight_decay or 0.0) >= 1:
        return f"try a lower --weight-decay (now {config.weight_decay:g}; usual values are 1e-5 to 1e-2)"
    return f"try a lower --lr (now {config.lr:g})"


def _finish(ctx: Context, selection: Selection, log: Log) -> None:
    """Score the selected checkpoint once and close the run."""
    from cxrlab.training.scoring import score_run

    # Fitting time, the study's "Training Time": every epoch plus computing the frozen features
    # (as recorded when they were computed); summed from the records so that a resumed run
    # counts the epochs done before the kill.
    train_seconds = sum(row.seconds for row in ctx.history) + ctx.feature_seconds
    train_cpu_seconds = sum(row.cpu_seconds or 0.0 for row in ctx.history) + ctx.feature_cpu_seconds
    if selection.state is None:
        raise CxrlabError("no epoch was trained: use --epochs 1 or more")
    ctx.model.load_state_dict(selection.state)
    write_best(ctx, selection)
    wise = wise_mixture(ctx, selection, log) if ctx.config.wise else None
    metrics = score_run(ctx, selection, train_seconds)
    if wise is not None:
        metrics.wise = wise
    metrics.train_cpu_seconds = round(train_cpu_seconds, 3)
    metrics.machine = MachineLoad(
        threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        load_average_start=ctx.load_at_start,
        load_average_end=load_average(),
    )
    for key, value in {**convergence(ctx.history, ctx.feature_seconds), **transfer_fields(ctx)}.items():
        setattr(metrics, key, value)
    if ctx.ranks.enabled:
        metrics.distributed = DistributedInfo(
            world_size=ctx.ranks.world,
            backend=torch.distributed.get_backend(),
            ranks_identical=weights_agree(ctx.model, ctx.ranks),
        )
        shutdown(ctx.ranks)
    if ctx.tensorboard is not None:
        ctx.tensorboard.finish(metrics)
    metrics.test_overlap = SplitOverlap(**ctx.data.overlap("test"))
    ctx.writer.metrics(metrics)
    ctx.writer.status(FINISHED)
    (ctx.writer.path / LAST).unlink(missing_ok=True)
    log(
        f"{ctx.writer.path.name}: test accuracy {metrics.test_accuracy:.4f}, test loss "
        f"{metrics.test_loss:.4f}, AUC {metrics.roc_auc:.4f}, best epoch {metrics.best_epoch}, "
        f"trained in {train_seconds:.1f} s"
    )
    for name, scores in metrics.external.items():
        log(f"  {name} ({scores.role}, {scores.n} images): accuracy {scores.accuracy:.4f}, AUC {scores.roc_auc:.4f}")
