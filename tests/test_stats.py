"""Statistics against known values: bootstrap intervals by image and by patient, Wilson intervals,
McNemar's test and its clustered form, the spread test of several runs, Holm's adjustment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import binomtest

from cxrlab.core.metrics import accuracy, expected_calibration_error, roc_auc, roc_auc_ovr
from cxrlab.evaluate import stats


def fixed_predictions(n: int, accuracy_rate: float = 0.85, seed: int = 1):
    """Labels and predictions with exactly round(n * accuracy_rate) correct."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, n)
    y_pred = y_true.copy()
    wrong = rng.choice(n, n - round(n * accuracy_rate), replace=False)
    y_pred[wrong] = 1 - y_pred[wrong]
    return y_true, y_pred


def test_bootstrap_accuracy_covers_the_estimate_and_narrows_with_n():
    widths = []
    for n in (100, 400, 1600):
        y_true, y_pred = fixed_predictions(n)
        interval = stats.bootstrap_accuracy(y_true, y_pred, seed=3)
        assert interval.estimate == pytest.approx(accuracy(y_true, y_pred))
        assert interval.low < interval.estimate < interval.high
        widths.append(interval.high - interval.low)
    assert widths[0] > widths[1] > widths[2]
    # The width of a 95% interval of a proportion is about 2 x 1.96 x sqrt(p(1-p)/n).
    for n, width in zip((100, 400, 1600), widths):
        assert width == pytest.approx(2 * 1.96 * np.sqrt(0.85 * 0.15 / n), rel=0.2)


def test_bootstrap_is_seeded_and_wider_at_a_higher_level():
    y_true, y_pred = fixed_predictions(200)
    first = stats.bootstrap_accuracy(y_true, y_pred, seed=7)
    assert first == stats.bootstrap_accuracy(y_true, y_pred, seed=7)
    assert first != stats.bootstrap_accuracy(y_true, y_pred, seed=8)
    wider = stats.bootstrap_accuracy(y_true, y_pred, seed=7, level=0.99)
    assert wider.low < first.low and wider.high > first.high


def test_vectorised_bootstrap_auc_equals_the_auc_of_each_resample():
    rng = np.random.default_rng(0)
    n = 60
    y_true = rng.integers(0, 2, n)
    # Rounded scores make ties, which count half.
    scores = np.round(np.clip(0.5 + 0.3 * (y_true - 0.5) + rng.normal(0, 0.25, n), 0, 1), 1)
    probs = np.stack([1 - scores, scores], axis=1)
    interval = stats.bootstrap_auc(y_true, probs, n_boot=300, seed=5)
    assert interval.estimate == pytest.approx(roc_auc(y_true, scores))
    # The same resamples, one AUC at a time with the plain metric.
    looped = [roc_auc(y_true[rows], scores[rows]) for rows in stats.bootstrap_indices(n, 300, seed=5)]
    expected = stats.percentile_interval(interval.estimate, np.array(looped))
    assert interval.low == pytest.approx(expected.low)
    assert interval.high == pytest.approx(expected.high)
    assert interval.low < interval.estimate < interval.high


def test_bootstrap_auc_of_three_classes_is_the_macro_one_vs_rest_auc():
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 3, 90)
    logits = rng.normal(0, 1, (90, 3))
    logits[np.arange(90), y_true] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    interval = stats.bootstrap_auc(y_true, probs, n_boot=200, seed=0)
    assert interval.estimate == pytest.approx(roc_auc_ovr(y_true, probs))
    looped = [roc_auc_ovr(y_true[rows], probs[rows]) for rows in stats.bootstrap_indices(90, 200, seed=0)]
    assert interval.low == pytest.approx(np.percentile(looped, 2.5))
    assert interval.high == pytest.approx(np.percentile(looped, 97.5))


def test_generic_bootstrap_metric_matches_the_vectorised_accuracy():
    y_true, y_pred = fixed_predictions(150)
    vectorised = stats.bootstrap_accuracy(y_true, y_pred, n_boot=400, seed=4)
    generic = stats.bootstrap_metric(accuracy, y_true, y_pred, n_boot=400, seed=4)
    assert generic.low == pytest.approx(vectorised.low)
    assert generic.high == pytest.approx(vectorised.high)


def test_wilson_interval_known_values():
    # Wilson 95% interval of 8/10: 0.4902 to 0.9433 (Newcombe 1998, table I style values).
    interval = stats.wilson_interval(8, 10)
    assert interval.estimate == pytest.approx(0.8)
    assert interval.low == pytest.approx(0.4902, abs=1e-4)
    assert interval.high == pytest.approx(0.9433, abs=1e-4)
    # At 0 and at n the interval stays inside [0, 1] and is not degenerate.
    zero, full = stats.wilson_interval(0, 20), stats.wilson_interval(20, 20)
    assert zero.low == 0.0 and 0.1 < zero.high < 0.2
    assert full.high == 1.0 and 0.8 < full.low < 0.9
    assert np.isnan(stats.wilson_interval(0, 0).estimate)


def test_sensitivity_and_specificity_intervals_count_the_right_images():
    y_true = np.array([1] * 10 + [0] * 20)
    y_pred = np.array([1] * 8 + [0] * 2 + [0] * 15 + [1] * 5)
    result = stats.sensitivity_specificity(y_true, y_pred, positive=1)
    assert result["sensitivity"] == stats.wilson_interval(8, 10)
    assert result["specificity"] == stats.wilson_interval(15, 20)


@pytest.mark.parametrize("a_only,b_only", [(2, 9), (12, 3), (5, 5), (0, 7), (0, 0), (40, 61)])
def test_mcnemar_p_value_equals_the_exact_binomial_test(a_only, b_only):
    both, neither = 30, 4
    correct_a = np.array([True] * both + [True] * a_only + [False] * b_only + [False] * neither)
    correct_b = np.array([True] * both + [False] * a_only + [True] * b_only + [False] * neither)
    test = stats.mcnemar_exact(correct_a, correct_b)
    assert (test.a_only, test.b_only, test.n, test.n_clusters) == (a_only, b_only, len(correct_a), len(correct_a))
    expected = 1.0 if a_only + b_only == 0 else binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert test.p_value == pytest.approx(expected, rel=1e-12)


def brute_force_sign_flip(differences) -> float:
    """The same p-value by listing every one of the 2^K sign flips."""
    d = np.asarray(differences)
    observed = abs(d.sum())
    flips = np.array(list(itertools.product([-1, 1], repeat=len(d))))
    return float(np.mean(np.abs(flips @ np.abs(d)) >= observed))


@pytest.mark.parametrize(
    "differences", [[3, 1, 2, -1, 2], [1, 1, 1, -1, 0, 2], [5, -5], [2, 2, 2, 2, 2, 2, -1], [0, 0], [4, 1, 1, 1, 1]]
)
def test_sign_flip_p_value_is_exact(differences):
    assert stats.sign_flip_p_value(differences) == pytest.approx(brute_force_sign_flip(differences), abs=1e-12)


def test_clustered_mcnemar_counts_patients_not_images():
    # 9 images A alone got right and 2 that B alone got right: McNemar's exact p = 0.065 when
    # every image is its own patient.
    correct_a = np.array([True] * 9 + [False] * 2 + [True] * 20)
    correct_b = np.array([False] * 9 + [True] * 2 + [True] * 20)
    singletons = stats.clustered_mcnemar(correct_a, correct_b, None)
    assert singletons.p_value == pytest.approx(binomtest(9, 11, 0.5).pvalue)
    # The same 9 images from three patients (3 each) and the 2 from two: 3 + 2 independent
    # units, so the evidence is weaker than 11 images would be.
    patients = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4] + list(range(5, 25)))
    clustered = stats.clustered_mcnemar(correct_a, correct_b, patients)
    assert (clustered.a_only, clustered.b_only, clustered.n_clusters) == (9, 2, 25)
    assert clustered.p_value == pytest.approx(brute_force_sign_flip([3, 3, 3, -1, -1]))
    assert clustered.p_value > singletons.p_value


def test_patient_bootstrap_of_duplicated_images_is_the_image_bootstrap_of_the_originals():
    # Each patient holds three copies of one image: resampling patients gives the interval of
    # the originals, while treating the copies as independent images makes it too narrow.
    y_true, y_pred = fixed_predictions(120, seed=4)
    copies = 3
    patients = np.repeat(np.arange(120), copies)
    originals = stats.bootstrap_accuracy(y_true, y_pred, seed=2)
    by_patient = stats.bootstrap_accuracy(np.repeat(y_true, copies), np.repeat(y_pred, copies), patients, seed=2)
    assert by_patient.low == pytest.approx(originals.low) and by_patient.high == pytest.approx(originals.high)
    naive = stats.bootstrap_accuracy(np.repeat(y_true, copies), np.repeat(y_pred, copies), seed=2)
    assert naive.high - naive.low < 0.7 * (originals.high - originals.low)
    # Sensitivity and specificity by patient: the bootstrap, not Wilson's independent images.
    rates = stats.sensitivity_specificity(np.repeat(y_true, copies), np.repeat(y_pred, copies), 1, patients, seed=2)
    sick = y_true == 1
    plain = stats.bootstrap_proportion(y_pred == 1, sick, None, seed=2)
    assert rates["sensitivity"].estimate == pytest.approx(plain.estimate)
    assert rates["sensitivity"].low <= rates["sensitivity"].estimate <= rates["sensitivity"].high


def test_bootstrap_ece_is_the_calibration_error_of_each_resample():
    rng = np.random.default_rng(6)
    y_true = rng.integers(0, 2, 80)
    p = np.clip(0.5 + 0.3 * (y_true - 0.5) + rng.normal(0, 0.2, 80), 0.01, 0.99)
    probs = np.stack([1 - p, p], 1)
    interval = stats.bootstrap_ece(y_true, probs, n_boot=200, seed=1)
    assert interval.estimate == pytest.approx(expected_calibration_error(y_true, probs))
    looped = [
        expected_calibration_error(y_true[rows], probs[rows]) for rows in stats.bootstrap_indices(80, 200, seed=1)
    ]
    assert interval.low == pytest.approx(np.percentile(looped, 2.5))
    assert interval.high == pytest.approx(np.percentile(looped, 97.5))


def test_spread_test_of_several_runs():
    rng = np.random.default_rng(8)
    n = 200
    patients = np.repeat(np.arange(100), 2)
    shared = rng.random(n) < 0.85
    alike = np.stack([shared ^ (rng.random(n) < 0.03) for _ in range(4)], axis=1)
    # Equally good runs: no evidence of a spread; a much worse run among them: strong evidence.
    assert stats.spread_test(alike, patients, n_perm=500) > 0.05
    apart = alike.copy()
    apart[:, 3] = shared & (rng.random(n) < 0.7)
    assert stats.spread_test(apart, patients, n_perm=500) < 0.01
    # Identical runs cannot differ; two runs get the exact clustered McNemar test.
    assert stats.spread_test(np.stack([shared] * 3, axis=1), patients) == 1.0
    two = stats.spread_test(apart[:, [0, 3]], patients)
    assert two == stats.clustered_mcnemar(apart[:, 0], apart[:, 3], patients).p_value


def test_holm_adjustment_known_values():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.5])
    # Sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1, then made monotone: 0.04, 0.09, 0.09, 0.5.
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.3]) == pytest.approx([0.3])
    assert list(stats.holm([])) == []
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_paired_bootstrap_difference_of_accuracy_and_auc():
    rng = np.random.default_rng(3)
    n = 300
    y_true = rng.integers(0, 2, n)
    good = np.clip(0.5 + 0.35 * (y_true - 0.5) * 2 + rng.normal(0, 0.2, n), 0.001, 0.999)
    poor = np.clip(0.5 + 0.05 * (y_true - 0.5) * 2 + rng.normal(0, 0.3, n), 0.001, 0.999)
    probs_good, probs_poor = np.stack([1 - good, good], 1), np.stack([1 - poor, poor], 1)
    pred_good, pred_poor = (good >= 0.5).astype(int), (poor >= 0.5).astype(int)
    diff = stats.paired_bootstrap_difference(y_true, pred_good, pred_poor, "accuracy")
    assert diff.estimate == pytest.approx(accuracy(y_true, pred_good) - accuracy(y_true, pred_poor))
    assert 0 < diff.low < diff.estimate < diff.high
    auc_diff = stats.paired_bootstrap_difference(y_true, pred_good, pred_poor, "auc", probs_good, probs_poor)
    assert auc_diff.estimate == pytest.approx(roc_auc(y_true, good) - roc_auc(y_true, poor))
    assert auc_diff.low > 0
    # A run against itself: a difference of exactly zero in every resample.
    same = stats.paired_bootstrap_difference(y_true, pred_good, pred_good, "auc", probs_good, probs_good)
    assert (same.low, same.estimate, same.high) == (0.0, 0.0, 0.0)
    # By patient: the same estimates, and the calibration error's difference too.
    patients = np.arange(n) // 3
    clustered = stats.paired_bootstrap_difference(y_true, pred_good, pred_poor, "accuracy", clusters=patients)
    assert clustered.estimate == pytest.approx(diff.estimate)
    ece = stats.paired_bootstrap_difference(
        y_true, pred_good, pred_poor, "ece", probs_good, probs_poor, clusters=patients, n_boot=300
    )
    expected = expected_calibration_error(y_true, probs_good) - expected_calibration_error(y_true, probs_poor)
    assert ece.estimate == pytest.approx(expected) and ece.low <= ece.estimate <= ece.high
