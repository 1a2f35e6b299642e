"""Linear CKA: its properties, its agreement with direct formulas, and the similarity command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cxrlab.data.dataset import load_dataset
from cxrlab.evaluate.similarity import (
    CkaAccumulator,
    hsic_unbiased,
    layer_similarity,
    linear_cka,
    load_network,
    probe_indices,
)


def _activations(n=40, p=30, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=generator, dtype=torch.float64)
    y = x @ torch.randn(p, 20, generator=generator, dtype=torch.float64) + torch.randn(
        n, 20, generator=generator, dtype=torch.float64
    )
    return x, y


def _orthogonal(p, seed=1):
    q, _ = torch.linalg.qr(torch.randn(p, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def _feature_space_cka(x, y):
    """Kornblith et al.'s linear CKA on column-centred matrices, written out."""
    x, y = x - x.mean(0), y - y.mean(0)
    return float(torch.linalg.norm(y.T @ x) ** 2 / (torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y)))


def _hsic_by_definition(k, l):  # noqa: E741
    """Song et al. (2012), eq. 5: (tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1) / (n(n-3)),
    with K~ and L~ the Gram matrices with their diagonals set to zero."""
    n = k.shape[0]
    k, l = k.clone().fill_diagonal_(0), l.clone().fill_diagonal_(0)  # noqa: E741
    first = float(torch.trace(k @ l))
    second = float(k.sum()) * float(l.sum()) / ((n - 1) * (n - 2))
    third = 2 * float((k @ l).sum()) / (n - 2)
    return (first + second - third) / (n * (n - 3))


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_cka_of_a_representation_with_itself_is_one(estimator):
    x, y = _activations()
    assert linear_cka(x, x, estimator) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(y, y, estimator) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, y, estimator) < 0.99


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(estimator):
    x, y = _activations()
    reference = linear_cka(x, y, estimator)
    assert linear_cka(x @ _orthogonal(x.shape[1]), y, estimator) == pytest.approx(reference, abs=1e-10)
    assert linear_cka(x, 7.5 * y @ _orthogonal(y.shape[1], seed=2), estimator) == pytest.approx(reference, abs=1e-10)
    assert linear_cka(0.01 * x, y, estimator) == pytest.approx(reference, abs=1e-10)
    # Not invariant to an arbitrary invertible transform: the property is specific.
    stretch = torch.diag(torch.linspace(0.1, 10, x.shape[1], dtype=torch.float64))
    assert linear_cka(x @ stretch, y, estimator) != pytest.approx(reference, abs=1e-3)


def test_one_batch_matches_the_direct_formulas():
    x, y = _activations(n=12, p=9)
    assert linear_cka(x, y, "biased") == pytest.approx(_feature_space_cka(x, y), rel=1e-10)
    k, l = x @ x.T, y @ y.T  # noqa: E741
    assert hsic_unbiased(k, l) == pytest.approx(_hsic_by_definition(k, l), rel=1e-10)
    expected = _hsic_by_definition(k, l) / np.sqrt(_hsic_by_definition(k, k) * _hsic_by_definition(l, l))
    assert linear_cka(x, y, "unbiased") == pytest.approx(expected, rel=1e-10)


def test_mini_batches_sum_their_hsic_terms():
    x, y = _activations(n=30, p=8)
    accumulator = CkaAccumulator(1)
    parts = [slice(0, 10), slice(10, 20), slice(20, 30)]
    for part in parts:
        accumulator.add([x[part]], [y[part]])
    grams = [(x[p] @ x[p].T, y[p] @ y[p].T) for p in parts]
    xy = sum(_hsic_by_definition(k, l) for k, l in grams)  # noqa: E741
    xx = sum(_hsic_by_definition(k, k) for k, _ in grams)
    yy = sum(_hsic_by_definition(l, l) for _, l in grams)  # noqa: E741
    assert accumulator.values()[0] == pytest.approx(xy / np.sqrt(xx * yy), rel=1e-10)


def test_a_network_compared_with_itself_is_one_at_every_stage_and_a_random_one_is_not(tiny_root):
    data = load_dataset(str(tiny_root), 32, show_progress=False)
    probes = probe_indices(data, "all", 24)
    assert len(probes) == 24 and (probes == probe_indices(data, "all", 24)).all()
    reference = load_network("scratch_cnn@none")
    results = layer_similarity(reference, [load_network("scratch_cnn@none")], data, probes, split="all", batch_size=8)
    assert results[0].layers == ["stem", "conv1", "conv2", "conv3", "conv4", "pooled"]
    assert results[0].cka == pytest.approx([1.0] * 6, abs=1e-9)
    shuffled = load_network("scratch_cnn@none")
    with torch.no_grad():
        for parameter in shuffled.model.backbone.parameters():
            parameter.copy_(torch.randn_like(parameter) * parameter.std().clamp_min(0.1))
    apart = layer_similarity(reference, [shuffled], data, probes, split="all", batch_size=8)[0]
    assert max(apart.cka[1:]) < 0.99


def test_similarity_command_writes_values_and_figure(tiny_root, tmp_path, cli):
    out = tmp_path / "sim"
    result = cli(
        "similarity",
        "efficientnet_lite0@imagenet",
        "efficientnet_lite0@imagenet",
        "efficientnet_lite0@imagenet-stats",
        "--data",
        str(tiny_root),
        "--probes",
        "16",
        "--split",
        "all",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--out",
        str(out),
    )
    assert result.code == 0, result.err
    record = json.loads((out / "similarity.json").read_text())["comparisons"]
    assert [c["other"] for c in record] == ["efficientnet_lite0@imagenet", "efficientnet_lite0@imagenet-stats"]
    assert record[0]["cka"] == pytest.approx([1.0] * 9, abs=1e-9)
    assert record[1]["cka"][-1] < 0.9 and record[0]["probes"] == 16
    assert (out / "similarity.png").read_bytes()[:4] == b"\x89PNG"
    filters = cli("filters", "efficientnet_lite0@imagenet", "scratch_cnn@none", "--out", str(tmp_path / "f.png"))
    assert filters.code == 0 and (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_similarity_refuses_what_it_cannot_compare_in_one_line(tiny_root, tmp_path, cli):
    result = cli("similarity", "no-such-run", "scratch_cnn@none", "--data", str(tiny_root), "--out", str(tmp_path))
    assert result.code == 2 and "not a run directory" in result.err and "Traceback" not in result.err
    result = cli(
        "similarity", "scratch_cnn@none", "efficientnet_lite0@none", "--data", str(tiny_root), "--image-size", "32"
    )
    assert result.code == 2 and "pairs stage with stage" in result.err


def test_a_network_before_training_is_probed_as_the_run_beside_it_was_trained(tiny_root, tmp_path, cli):
    from cxrlab.training.config import TrainConfig
    from cxrlab.training.loop import fit

    config = TrainConfig(
        data=str(tiny_root), model="scratch_cnn", mode="scratch", image_size=40, epochs=1, batch_size=8,
        out=str(tmp_path / "runs"), name="small", val_fraction=0.3, test_fraction=0.2, split_seed=5,
    )  # fmt: skip
    run_dir = fit(config, show_progress=False)
    out = tmp_path / "sim"
    result = cli(
        "similarity", "scratch_cnn@none", str(run_dir), "--data", str(tiny_root), "--probes", "8", "--out", str(out)
    )
    assert result.code == 0, result.err
    (record,) = json.loads((out / "similarity.json").read_text())["comparisons"]
    # The run's image size (not 224) and its validation split (its split seed and fractions).
    assert record["image_size"] == 40
    split = load_dataset(str(tiny_root), 40, val_fraction=0.3, test_fraction=0.2, split_seed=5, show_progress=False)
    assert record["probes"] == min(8, split.count("val"))
