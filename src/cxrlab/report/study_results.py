"""A study's finished runs read once for its report: analyses, the runs chosen to stand for each
model and mode, and the families of paired tests with their adjusted p-values.

Which run stands for a model and mode, which is the from-scratch baseline and which is the
best: the lowest validation loss, ties by validation AUC (``analysis.selection_key``), the rule
that also chose each run's epoch. The test split and the external sets choose nothing.

Families (each adjusted with Holm on each evaluation set): every pair of modes of each model
("mode comparisons"), every chosen run against the baseline ("against the baseline"), and
the spread test of the runs of each model and mode ("settings"); a section may add its own
(``family``), as section F does with its comparisons against the pretrained fine-tune.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from cxrlab.core.errors import CxrlabError
from cxrlab.core.modes import MODE_NAMES, mode_rank, mode_title
from cxrlab.evaluate.stats import N_BOOT
from cxrlab.report.analysis import TRANSFER_PLAIN, RunAnalysis, best_run, run_analysis, run_labels, selection_key
from cxrlab.report.pairs import (
    PairedComparison,
    SpreadResult,
    adjusted,
    adjusted_pairs,
    paired_comparison,
    spread_result,
)
from cxrlab.report.scored import TEST, ScoredSet, evaluation_sets, scored_set
from cxrlab.training.records import RunRecord

MODE_FAMILY, BASELINE_FAMILY, SETTINGS_FAMILY = "mode comparisons", "against the baseline", "settings"


def plain_transfer(run: RunRecord) -> bool:
    """Whether a run transfers plainly: every setting of what transferred at its plain value."""
    return all(run.config.setting(key) in plain for key, plain in TRANSFER_PLAIN.items())


class StudyResults:
    """The finished runs of a study with their analyses and tests; ``diverged`` runs are
    only listed."""

    def __init__(self, runs: list[RunRecord], n_boot: int = N_BOOT, seed: int = 0, diverged=None):
        self.runs = runs
        self.diverged: list[RunRecord] = list(diverged or [])
        self.n_boot, self.seed = n_boot, seed
        self.labels = dict(zip((r.run_id for r in runs), run_labels(runs)))
        self.scored = {r.run_id: {name: scored_set(r, name) for name in evaluation_sets(r)} for r in runs}
        self.analyses = {
            r.run_id: run_analysis(r, self.labels[r.run_id], n_boot, seed, self.scored[r.run_id]) for r in runs
        }
        self.sets: dict[str, str] = {}  # every evaluation set of the study, and its role
        for run in runs:
            self.sets.update({k: v for k, v in evaluation_sets(run).items() if k not in self.sets})
        groups: dict[tuple[str, str], list[RunRecord]] = {}
        for run in runs:
            groups.setdefault((run.config.model, run.config.mode), []).append(run)
        self.groups = dict(sorted(groups.items(), key=lambda kv: (kv[0][0], mode_rank(kv[0][1]))))
        # The run that stands for a model and mode uses the plain transfer (all stages from the
        # weights, none frozen, all the data) when the group has one: the variants of what
        # transferred are section F's, and a mode comparison should not hinge on one of them.
        self.selected = {
            key: min([r for r in group if plain_transfer(r)] or group, key=selection_key)
            for key, group in self.groups.items()
        }
        self.baseline = best_run([r for r in runs if r.config.mode == "scratch"])
        self.best = best_run([r for r in self.selected.values() if r.config.mode != "scratch"]) or self.baseline
        self._pairs: dict[tuple[str, str], PairedComparison | None] = {}
        # Families of pairs a section adds (name -> what they test, the adjusted pairs).
        self.added_families: dict[str, tuple[str, list[PairedComparison]]] = {}
        self.mode_pairs = self._family(self._mode_pairs(), MODE_FAMILY)
        self.baseline_pairs = self._family(self._baseline_pairs(), BASELINE_FAMILY)
        self.spreads = self._spreads()

    # --- runs -----------------------------------------------------------------------------------

    def row(self, run: RunRecord) -> RunAnalysis:
        return self.analyses[run.run_id]

    def set_of(self, run: RunRecord, name: str = TEST) -> ScoredSet:
        return self.scored[run.run_id][name]

    def by_mode(self, mode: str) -> list[RunRecord]:
        return [run for (_, m), run in self.selected.items() if m == mode]

    def chosen_for(self, model: str) -> list[RunRecord]:
        """The selected run of each mode of ``model``, in the report's order of modes."""
        return [self.selected[(model, mode)] for mode in MODE_NAMES if (model, mode) in self.selected]

    @property
    def pretrained_models(self) -> list[str]:
        return sorted({model for (model, mode) in self.groups if mode != "scratch"})

    @property
    def external_sets(self) -> dict[str, str]:
        return {name: role for name, role in self.sets.items() if name != TEST}

    # --- pairs and families ----------------------------------------------------------------------

    def pair(self, a: RunRecord, b: RunRecord) -> PairedComparison | None:
        """The paired comparison of ``a`` and ``b`` (unadjusted); None when they were scored on
        other test images."""
        key = (a.run_id, b.run_id)
        if key not in self._pairs:
            try:
                self._pairs[key] = paired_comparison(
                    key,
                    (self.labels[a.run_id], self.labels[b.run_id]),
                    self.scored[a.run_id],
                    self.scored[b.run_id],
                    self.n_boot,
                    self.seed,
                )
            except CxrlabError:
                self._pairs[key] = None
        return self._pairs[key]

    def model_pairs(self, model: str) -> list[PairedComparison]:
        """The adjusted mode comparisons of ``model``."""
        ids = {r.run_id for r in self.chosen_for(model)}
        return [p for p in self.mode_pairs if p.a in ids and p.b in ids]

    def _mode_pairs(self) -> list[PairedComparison]:
        found = [
            self.pair(a, b) for model in self.pretrained_models for a, b in combinations(self.chosen_for(model), 2)
        ]
        return [p for p in found if p is not None]

    def _baseline_pairs(self) -> list[PairedComparison]:
        if self.baseline is None:
            return []
        found = [self.pair(r, self.baseline) for r in self.chosen() if r is not self.baseline]
        return [p for p in found if p is not None]

    def chosen(self) -> list[RunRecord]:
        """The selected run of each model and mode: pretrained models first, the baseline last."""
        return sorted(
            self.selected.values(), key=lambda r: (r.config.mode == "scratch", r.config.model, mode_rank(r.config.mode))
        )

    def family(self, pairs: list[PairedComparison], family: str, words: str) -> list[PairedComparison]:
        """``pairs`` Holm-adjusted as one family on every set, and counted in ``family_sizes``;
        ``words`` say what the family tests."""
        adjusted_family = self._family(pairs, family)
        self.added_families[family] = (words, adjusted_family)
        return adjusted_family

    def _family(self, pairs: list[PairedComparison], family: str) -> list[PairedComparison]:
        for name in self.sets:
            pairs = adjusted_pairs(pairs, family, name)
        return pairs

    def _spreads(self) -> dict[tuple[str, str], dict[str, SpreadResult]]:
        """The spread test of each model and mode with two runs or more, on every set all its
        runs share, adjusted per set over the groups."""
        found: dict[tuple[str, str], dict[str, SpreadResult]] = {}
        for key, group in self.groups.items():
            if len(group) < 2:
                continue
            title = f"{key[0]} ({mode_title(key[1])})"
            for name in self.sets:
                if not all(name in self.scored[r.run_id] for r in group):
                    continue
                halves = [self.row(r).at(name).accuracy for r in group]
                widths = [(h.high - h.low) / 2 for h in halves if h.has_interval]
                try:
                    result = spread_result(title, {r.run_id: self.scored[r.run_id][name] for r in group}, widths)
                except CxrlabError:
                    continue
                found.setdefault(key, {})[name] = result
        for name in self.sets:
            keys = [k for k, by_set in found.items() if name in by_set]
            for key, result in zip(keys, adjusted([found[k][name] for k in keys], SETTINGS_FAMILY)):
                found[key][name] = result
        return found

    def family_sizes(self) -> list[tuple[str, str, int]]:
        """``(family, set, tests)`` of every family with a test in it."""
        sizes = []
        families: list[tuple[str, list[dict[str, Any]]]] = [
            (MODE_FAMILY, [p.results for p in self.mode_pairs]),
            (BASELINE_FAMILY, [p.results for p in self.baseline_pairs]),
            (SETTINGS_FAMILY, list(self.spreads.values())),
        ]
        families += [(name, [p.results for p in pairs]) for name, (_, pairs) in self.added_families.items()]
        for family, tests in families:
            for name in self.sets:
                count = sum(1 for by_set in tests if name in by_set)
                if count:
                    sizes.append((family, name, count))
        return sizes
