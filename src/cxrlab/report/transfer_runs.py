"""The runs of a study that vary what transferred, sorted into the experiments of section F.

Each run is one variant of its model: the pretrained fine-tune (every stage trains), a freeze
depth (the stem and the first K stages frozen), the fixed feature extractor (frozen mode), a
partial transfer (the first K stages from the weights, the rest new), the weights'
statistics only (``imagenet-stats``), or a random initialisation; each at a share of the
training split. Where several runs are the same variant at the same share (other learning
rates, seeds), the one with the lowest validation loss stands for it (ties by validation AUC),
the rule that chooses everywhere else in the report; the test split and the external sets
choose nothing.

The comparisons against the pretrained fine-tune of the same model (each partial transfer,
the statistics init, the random init, and the freeze depth validation chose among those that
freeze at least half the backbone) form one family of paired tests, Holm-adjusted together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cxrlab.core.modes import mode_title
from cxrlab.core.text import format_value
from cxrlab.models.initialise import init_kind, split_stats
from cxrlab.report.analysis import best_run, selection_key
from cxrlab.report.pairs import PairedComparison
from cxrlab.report.study_results import StudyResults
from cxrlab.training.records import RunRecord

TRANSFER_FAMILY = "against the pretrained fine-tune"
TRANSFER_WORDS = (
    "each partial transfer, weight-statistics init, random init and validation-chosen deep freeze against the "
    "pretrained fine-tune of the same model (McNemar's exact test, clustered by patient)"
)
PRETRAINED, FREEZE, FROZEN, PARTIAL, STATS, RANDOM, OTHER = (
    "pretrained",
    "freeze",
    "frozen",
    "partial",
    "stats",
    "random",
    "other",
)
# The order variants are listed in: the pretrained fine-tune first, the random init last.
KIND_ORDER = (PRETRAINED, FREEZE, FROZEN, PARTIAL, STATS, RANDOM, OTHER)
COMPARED = (PARTIAL, STATS, RANDOM)  # compared with the pretrained fine-tune (besides the deep freeze)


@dataclass(frozen=True)
class Variant:
    """What transferred into one run: its model, mode, kind, depth (K) and share of the data."""

    model: str
    mode: str
    kind: str
    depth: int | None
    fraction: float
    weights: str

    @property
    def line(self) -> tuple:
        """The variant without its share of the data: one line of a data-size curve."""
        return (self.model, self.mode, self.kind, self.depth)

    @property
    def order(self) -> tuple:
        return (KIND_ORDER.index(self.kind), -1 if self.depth is None else self.depth, -self.fraction)


def variant_of(run: RunRecord) -> Variant:
    config = run.config
    weights = config.weights or "none"
    init = (run.metrics.init if run.metrics is not None else None) or init_kind(weights, config.transfer_blocks)
    depth = None
    if config.mode == "frozen":
        kind = FROZEN
    elif config.mode == "scratch" or init == "random":
        kind = RANDOM
    elif config.mode != "finetune":
        kind = OTHER
    elif init == "stats":
        kind = STATS
    elif init == "partial":
        kind, depth = PARTIAL, config.transfer_blocks
    elif config.freeze_blocks is not None:
        kind, depth = FREEZE, config.freeze_blocks
    else:
        kind = PRETRAINED
    return Variant(config.model, config.mode, kind, depth, float(config.train_fraction), weights)


def variant_label(variant: Variant) -> str:
    """``first 2 stages transferred``: what the run is, without its model."""
    k = variant.depth
    text = {
        PRETRAINED: "pretrained, fine-tuned",
        FREEZE: f"stem and first {k} stages frozen" if k else "stem frozen",
        FROZEN: "fixed feature extractor (frozen mode)",
        PARTIAL: f"stem and first {k} stages transferred, the rest new",
        STATS: f"weight statistics only ({variant.weights})",
        RANDOM: "random init, " + ("from scratch" if variant.mode == "scratch" else mode_title(variant.mode)),
        OTHER: mode_title(variant.mode),
    }[variant.kind]
    if variant.fraction < 1:
        text += f", {format_value(variant.fraction)} of the training split"
    return text


def varies_transfer(runs: list[RunRecord]) -> list[str]:
    """What in ``runs`` varies what transferred, in words; empty when nothing does."""
    found = []
    if any(r.config.freeze_blocks is not None for r in runs):
        found.append("freeze depths")
    if any(r.config.transfer_blocks is not None for r in runs):
        found.append("partial transfers")
    if any(split_stats(r.config.weights or "none")[1] for r in runs):
        found.append("weight-statistics inits")
    if any(r.config.train_fraction < 1 for r in runs):
        found.append("training-set sizes")
    if len({r.config.mode for r in runs if has_auc_history(r)}) >= 2:
        found.append("modes whose validation AUC was recorded each epoch")
    return found


def freeze_depth(run: RunRecord) -> int:
    """K of a freeze-depth run (0 for a run that freezes nothing)."""
    return run.config.freeze_blocks or 0


def has_auc_history(run: RunRecord) -> bool:
    return any(row.val_auc is not None and math.isfinite(row.val_auc) for row in run.epochs)


class TransferResults:
    """Section F's runs read from a study: the variant of each run, the run that stands for
    each variant (chosen on validation), and the family of comparisons with the pretrained
    fine-tune (registered with ``study`` so that the statistics section counts it)."""

    def __init__(self, study: StudyResults, study_dir: Path):
        self.study = study
        self.study_dir = study_dir
        self.varies = varies_transfer(study.runs)
        self.variants = {r.run_id: variant_of(r) for r in study.runs}
        groups: dict[Variant, list[RunRecord]] = {}
        for run in study.runs:
            groups.setdefault(self.variants[run.run_id], []).append(run)
        # One run per variant, chosen on validation.
        ordered = sorted(groups.items(), key=lambda kv: (kv[0].model, kv[0].order))
        self.standing: dict[Variant, RunRecord] = {v: min(g, key=selection_key) for v, g in ordered}
        several = len({v.model for v in self.standing}) > 1
        self.labels = {
            run.run_id: (f"{v.model}: " if several or v.kind == RANDOM else "") + variant_label(v)
            for v, run in self.standing.items()
        }
        self.models = sorted({v.model for v in self.standing if v.kind != RANDOM or v.mode != "scratch"})
        self.deep_freeze: dict[str, RunRecord] = {}
        for model in self.models:
            found = self._deep_freeze(model)
            if found is not None:
                self.deep_freeze[model] = found[0]
                self.labels[found[0].run_id] += f" (chosen on validation among K ≥ {found[1]})"
        self.pairs = study.family(self._pairs(), TRANSFER_FAMILY, TRANSFER_WORDS) if self.varies else []

    # --- the runs of each experiment ------------------------------------------------------------

    def of(self, model: str, kind: str, fraction: float = 1.0) -> list[RunRecord]:
        """The standing runs of ``model``'s variants of ``kind`` at ``fraction``, by depth."""
        return [r for v, r in self.standing.items() if v.model == model and v.kind == kind and v.fraction == fraction]

    def label(self, run: RunRecord) -> str:
        return self.labels.get(run.run_id) or self.study.labels[run.run_id]

    def pretrained(self, model: str) -> RunRecord | None:
        """The pretrained fine-tune of ``model`` on the whole training split; several
        (other settings) give the one validation chose."""
        return best_run(self.of(model, PRETRAINED))

    def frozen(self, model: str) -> RunRecord | None:
        return best_run(self.of(model, FROZEN))

    def stages(self, model: str) -> int | None:
        """How many stages ``model``'s depth settings count, as its runs recorded."""
        counts = [r.scores.stages for r in self.study.runs if r.config.model == model and r.scores.stages]
        return counts[0] if counts else None

    def freeze_points(self, model: str) -> list[RunRecord]:
        """The freeze depths of ``model`` on the whole training split, shallowest first."""
        return self.of(model, FREEZE)

    def _deep_freeze(self, model: str) -> tuple[RunRecord, int] | None:
        """Among the depths that freeze at least half the backbone, the one validation chose,
        and the least depth it was chosen among."""
        stages = self.stages(model)
        if stages is None:
            return None
        least = math.ceil(stages / 2)
        chosen = best_run([r for r in self.freeze_points(model) if freeze_depth(r) >= least])
        return (chosen, least) if chosen is not None else None

    def compared(self, model: str) -> list[RunRecord]:
        """The runs of ``model`` tested against its pretrained fine-tune."""
        runs = [r for kind in COMPARED for r in self.of(model, kind)]
        if model in self.deep_freeze:
            runs.insert(0, self.deep_freeze[model])
        return runs

    def init_rows(self, model: str) -> list[RunRecord]:
        """The table of inits: the pretrained fine-tune, the compared runs, and the study's
        from-scratch baseline when it is another model."""
        runs = [r for r in [self.pretrained(model), *self.compared(model)] if r is not None]
        baseline = self.baseline
        if baseline is not None and baseline.config.model != model:
            runs.append(baseline)
        return runs

    @property
    def baseline(self) -> RunRecord | None:
        """The study's from-scratch baseline, on the whole training split: where validation chose
        a run on a share of it, the baseline model's own run on all of it."""
        baseline = self.study.baseline
        if baseline is None or baseline.config.train_fraction == 1:
            return baseline
        return best_run(self.of(baseline.config.model, RANDOM)) or baseline

    def _pairs(self) -> list[PairedComparison]:
        pairs = []
        for model in self.models:
            reference = self.pretrained(model)
            if reference is None:
                continue
            for run in self.compared(model):
                pair = self.study.pair(run, reference)
                if pair is not None:
                    pairs.append(pair.model_copy(update=dict(name_a=self.label(run), name_b=self.label(reference))))
        return pairs

    def pair_of(self, run: RunRecord) -> PairedComparison | None:
        return next((p for p in self.pairs if p.a == run.run_id), None)

    def size_lines(self) -> dict[str, list[RunRecord]]:
        """Data-size curves: each variant run on a share of the training split below 1, with
        its runs at every share, by the number of training images."""
        lines: dict[tuple, list[RunRecord]] = {}
        for variant, run in self.standing.items():
            lines.setdefault(variant.line, []).append(run)
        shown = {}
        for line, runs in lines.items():
            if any(self.variants[r.run_id].fraction < 1 for r in runs):
                model, mode, kind, depth = line
                whole = Variant(model, mode, kind, depth, 1.0, self.variants[runs[0].run_id].weights)
                shown[f"{model}, {variant_label(whole)}"] = sorted(runs, key=lambda r: r.scores.n_train)
        return shown

    def convergence_runs(self) -> list[RunRecord]:
        """The run standing for each init and mode on the whole training split (freeze depths
        only as validation's deep freeze), and the from-scratch baseline."""
        deep = {r.run_id for r in self.deep_freeze.values()}
        runs = [r for v, r in self.standing.items() if v.fraction == 1 and (v.kind != FREEZE or r.run_id in deep)]
        baseline = self.baseline
        if baseline is not None and baseline.run_id not in {r.run_id for r in runs}:
            runs.append(baseline)
        return runs
