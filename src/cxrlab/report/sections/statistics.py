"""The report's statistics section: what the intervals resample, which tests decide, how many
tests each family holds, and how they are adjusted."""

from __future__ import annotations

from cxrlab.report.document import Block, Paragraph, table
from cxrlab.report.pairs import ALPHA
from cxrlab.report.scored import IMAGE, TEST
from cxrlab.report.study_results import BASELINE_FAMILY, MODE_FAMILY, SETTINGS_FAMILY, StudyResults
from cxrlab.report.wording import set_title

FAMILY_WORDS = {
    MODE_FAMILY: "every pair of modes of each model (McNemar's exact test, clustered by patient)",
    BASELINE_FAMILY: "each chosen run against the from-scratch baseline (McNemar's exact test, clustered by patient)",
    SETTINGS_FAMILY: "the runs of each model and mode: equal accuracy or not (permutation test by patient)",
}


def section_statistics(study: StudyResults) -> list[Block]:
    blocks: list[Block] = [Paragraph(_method(study)), table("What the intervals resample", *_units(study))]
    sizes = study.family_sizes()
    if sizes:
        cells = [
            [
                family,
                FAMILY_WORDS.get(family) or study.added_families[family][0],
                "internal test" if name == TEST else set_title(name, study.sets[name]),
                count,
                "Holm" if count > 1 else "none (a single test)",
            ]
            for family, name, count in sizes
        ]
        blocks.append(table("Families of tests", ["family", "tests of", "set", "tests", "adjustment"], cells))
    else:
        blocks.append(
            Paragraph("This study ran no paired tests: no two runs share a model, or a baseline to test against.")
        )
    return blocks


def _method(study: StudyResults) -> str:
    units = {a.test.unit for a in study.analyses.values()}
    unit = "patients" if units == {"patient"} else ("images" if units == {IMAGE} else "patients where names give them")
    return (
        f"Intervals are 95% percentile bootstrap intervals over {study.n_boot} resamples (seed {study.seed}) that "
        f"draw {unit} with replacement and keep all of a patient's images together; sensitivity, specificity and "
        "recall of a class are bootstrapped the same way (Wilson intervals where each image is its own unit). Two "
        "runs on the same images are compared by McNemar's exact test clustered by patient: each patient's count of "
        "images one run got right and the other wrong, minus the reverse, with its sign flipped in every way "
        "(the exact distribution; with one image per patient this is McNemar's exact test). Several runs of one "
        "model and mode are tested for any difference by permuting the runs within each patient. Tests of one kind "
        f"on one set form a family; their p-values are adjusted with Holm's method. A difference is claimed only "
        f"when the adjusted p-value is below {ALPHA:g} and the bootstrap interval of the difference excludes zero; "
        "both are shown, and where they disagree the sentence says so and claims nothing. Calibration: the expected "
        "calibration error with its patient bootstrap interval; a run is called the best calibrated only when the "
        "paired interval of its difference to the next lowest excludes zero."
    )


def _units(study: StudyResults) -> tuple[list[str], list[list]]:
    rows = []
    for name, role in study.sets.items():
        results = [a.at(name) for a in study.analyses.values() if a.on(name) is not None]
        first = results[0]
        rows.append(
            [
                "internal test" if name == TEST else set_title(name, role),
                first.n,
                first.n_patients if first.unit != IMAGE else "–",
                "patients" if first.unit != IMAGE else "images (file names name no patient)",
            ]
        )
    return ["set", "images", "patients", "resampled and permuted"], rows
