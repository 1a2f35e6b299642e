"""Statistics against known values: bootstrap intervals, Wilson intervals, McNemar's test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from cxrlab.core.metrics import accuracy, roc_auc, roc_auc_ovr
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
    assert (test["a_only"], test["b_only"]) == (a_only, b_only)
    expected = 1.0 if a_only + b_only == 0 else binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert test["p_value"] == pytest.approx(expected, rel=1e-12)


def test_mcnemar_verdict_in_plain_words():
    correct_a = np.array([True] * 20 + [False] * 2)
    correct_b = np.array([False] * 14 + [True] * 6 + [True] * 2)
    test = stats.mcnemar_exact(correct_a, correct_b)
    assert test["p_value"] < 0.05
    assert stats.mcnemar_verdict(test, "fine-tune", "scratch") == "fine-tune is better at 5%"
    assert (
        stats.mcnemar_verdict(stats.mcnemar_exact(correct_b, correct_a), "scratch", "fine-tune")
        == "fine-tune is better at 5%"
    )
    close = stats.mcnemar_exact([True, False, True], [False, True, True])
    assert stats.mcnemar_verdict(close, "A", "B") == "no significant difference at 5%"


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
