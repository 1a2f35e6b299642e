"""docs/recipe.md's second family of paired comparisons: decision rules and adaptation, on the
shifted sample, each variant against the same run plainly.

    python docs/recipe_variants.py runs/recipe-candidates runs/recipe

Compared, on the same images (McNemar's exact test clustered by patient, Holm over the
family, and the paired patient bootstrap interval of the accuracy difference):

- the frozen run (seed 0) at its Youden threshold against the same run at 0.5;
- the fine-tune (seed 0) at its Youden threshold against the same run at 0.5;
- the fine-tune (seed 0) adapted by ``cxrlab evaluate --adapt bn``, ``prior`` and
  ``bn+prior`` (the ``eval-*-adapt-*.csv`` files in its run directory) against it plainly;
- LP-FT with WiSE-FT against LP-FT alone, each at its own threshold.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from cxrlab.core.decision import decide
from cxrlab.evaluate.stats import clustered_mcnemar, holm, paired_bootstrap_difference
from cxrlab.report.scored import ScoredSet, scored_set
from cxrlab.training.records import RunRecord, list_runs

SHIFTED = "shifted"


def one(runs: list[RunRecord], *words: str) -> RunRecord:
    found = [r for r in runs if all(w in r.run_id for w in words)]
    if len(found) != 1:
        raise SystemExit(f"{len(found)} runs match {words}")
    return found[0]


def image_key(path: str) -> str:
    """class folder / file name: the same image whether its path is relative or absolute."""
    return "/".join(Path(path).parts[-2:])


def adapted_predictions(run: RunRecord, shifted: ScoredSet, method: str) -> np.ndarray:
    """The adapted run's decisions on the shifted images, in ``shifted``'s order."""
    (table,) = run.path.glob(f"eval-*-adapt-{method.replace('+', '-')}.csv")
    rows = {image_key(r["path"]): r for r in csv.DictReader(table.open())}
    probs = np.array([[float(rows[image_key(p)][f"p_{c}"]) for c in shifted.classes] for p in shifted.paths])
    return decide(probs, shifted.threshold, shifted.positive)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("candidates", help="the study directory of recipe-candidates")
    p.add_argument("recipe", help="the study directory of recipe")
    args = p.parse_args(argv)
    candidates = list_runs(f"{args.candidates}/runs")
    recipe = list_runs(f"{args.recipe}/runs")
    frozen = scored_set(one(recipe, "frozen", "seed=0"), SHIFTED)
    finetune_run = one(recipe, "finetune", "seed=0")
    finetune = scored_set(finetune_run, SHIFTED)
    lpft = scored_set(one(candidates, "gradual", "c24e1e63"), SHIFTED)
    wise = scored_set(one(candidates, "gradual", "9ed24b03"), SHIFTED)
    assert frozen.paths == finetune.paths == lpft.paths == wise.paths

    def at(scored: ScoredSet, threshold: float) -> np.ndarray:
        return decide(scored.probs, threshold, scored.positive)

    pairs = [
        ("frozen, Youden threshold", "frozen, 0.5", frozen.predicted, at(frozen, 0.5)),
        ("fine-tune, Youden threshold", "fine-tune, 0.5", finetune.predicted, at(finetune, 0.5)),
        *[
            (
                f"fine-tune adapted ({m})",
                "fine-tune",
                adapted_predictions(finetune_run, finetune, m),
                finetune.predicted,
            )
            for m in ("bn", "prior", "bn+prior")
        ],
        ("LP-FT + WiSE-FT", "LP-FT", wise.predicted, lpft.predicted),
    ]
    labels, clusters = frozen.labels, frozen.clusters
    tests = [clustered_mcnemar(a == labels, b == labels, clusters) for _, _, a, b in pairs]
    adjusted = holm([t.p_value for t in tests])
    print(
        "| A | B | A right, B wrong | B right, A wrong | p (clustered McNemar) | p adjusted (Holm) | A − B (95% CI) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for (name_a, name_b, a, b), test, p_adjusted in zip(pairs, tests, adjusted):
        d = paired_bootstrap_difference(labels, a, b, clusters=clusters)
        print(
            f"| {name_a} | {name_b} | {test.a_only} | {test.b_only} | {test.p_value:.3g} | {p_adjusted:.3g} "
            f"| {100 * d.estimate:+.1f} ({100 * d.low:+.1f} to {100 * d.high:+.1f}) points |"
        )
    print(f"\n{len(pairs)} comparisons in the family; {frozen.n_patients} patients, {len(labels)} images.")


if __name__ == "__main__":
    main()
