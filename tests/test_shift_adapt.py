"""Adaptation to a target site without labels: AdaBN and the EM class prior, recorded in the
run and applied alike by evaluate, predict and an exported model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlab.core.errors import CxrlabError
from cxrlab.evaluate.adapt import adapt_run, em_prior
from cxrlab.evaluate.runs import evaluate_run, predict_images
from cxrlab.testing import make_dataset_root, synthetic_xray
from cxrlab.training.adaptation import apply_bn_buffers, load_adaptation
from cxrlab.training.batchnorm import batchnorm_buffer_names
from cxrlab.training.config import TrainConfig
from cxrlab.training.export import export_run
from cxrlab.training.loop import fit
from cxrlab.training.records import load_run


def _target_site(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """Class folders of the synthetic X-rays as another site's device shows them: darker, with
    less contrast, and more pneumonia than normal."""
    rng = np.random.default_rng(seed)
    for label, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = synthetic_xray(label, rng, 48).astype(np.float64) * 0.6 + 30
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"person{7000 + i}_site_{i}.jpeg")
    return root


@pytest.fixture(scope="module")
def run_and_site(tmp_path_factory):
    base = tmp_path_factory.mktemp("adapt")
    root = make_dataset_root(base / "data", n_train=40)
    config = TrainConfig(
        data=str(root),
        model="scratch_cnn",
        mode="scratch",
        epochs=2,
        lr=3e-3,
        image_size=32,
        batch_size=16,
        out=str(base / "runs"),
        name="cnn",
    )
    run_dir = fit(config, show_progress=False, log=lambda line: None)
    return load_run(run_dir), _target_site(base / "site", {"NORMAL": 8, "PNEUMONIA": 16})


def test_em_recovers_a_known_prior():
    rng = np.random.default_rng(0)
    for target in (0.2, 0.5, 0.75):
        labels = (rng.random(20_000) < target).astype(int)
        scores = rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)
        posterior = 1 / (1 + np.exp(-2 * scores))  # exact under a uniform source prior
        probs = np.stack([1 - posterior, posterior], axis=1)
        prior, moved, iterations = em_prior(probs, [0.5, 0.5])
        assert prior[1] == pytest.approx(target, abs=0.02) and iterations > 1
        assert moved.mean(axis=0) == pytest.approx(prior, abs=1e-6)
    # Three classes, a skewed source prior.
    source, target = np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.3, 0.6])
    labels = rng.choice(3, 30_000, p=target)
    means = np.eye(3) * 2.5
    x = means[labels] + rng.normal(0, 1, (30_000, 3))
    likelihood = np.exp(-0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1))
    posterior = likelihood * source
    posterior /= posterior.sum(1, keepdims=True)
    prior, _, _ = em_prior(posterior, source)
    assert prior == pytest.approx(target, abs=0.02)


def test_adabn_changes_only_batchnorm_buffers(run_and_site):
    run, site = run_and_site
    record = adapt_run(run, str(site), "bn", name="bn-site", device="cpu")
    assert record.bn_layers > 0 and record.n_images == 24 and not record.transductive
    plain = run.load_model().state_dict()
    adapted = apply_bn_buffers(run.load_model(), load_adaptation(run, "bn-site")[1]).state_dict()
    buffers = set(batchnorm_buffer_names(run.load_model()))
    for key, tensor in plain.items():
        if key not in buffers:
            assert torch.equal(adapted[key], tensor), key  # every weight bit-identical
    means = [k for k in buffers if k.endswith("running_mean")]
    assert means and all(not torch.equal(adapted[k], plain[k]) for k in means)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_adaptation_is_applied_alike_by_evaluate_predict_and_export(run_and_site, tmp_path, exported_pixels):
    run, site = run_and_site
    record = adapt_run(run, str(site), "bn+prior", name="site", device="cpu")
    assert record.target_prior is not None and record.source_prior == [0.5, 0.5]
    files = sorted(str(p) for p in site.rglob("*.jpeg"))
    evaluated = evaluate_run(run, str(site), device="cpu", adapted="site", show_progress=False)
    assert evaluated["adaptation"]["name"] == "site" and evaluated["adaptation"]["method"] == "bn+prior"
    written = list(run.path.glob("eval-site-*-adapted-site.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["adaptation"]["target_prior"]
    paths, _, from_evaluate = run.prediction_arrays("test", name=written[0].with_suffix(".csv").name)
    by_path = dict(zip(paths, from_evaluate))
    predicted = predict_images(run, files, device="cpu", adapted="site")
    assert all(p.adaptation == "site" for p in predicted)
    from_predict = np.array([list(p.probabilities.values()) for p in predicted])
    np.testing.assert_allclose(from_predict, [by_path[f] for f in files], atol=1e-5)
    exported, sidecar = export_run(run.path, "torchscript", out_dir=tmp_path, adapted="site")
    assert exported.name == "model-adapted-site.torchscript.pt"
    assert json.loads(sidecar.read_text())["adaptation"]["name"] == "site"
    pixels = exported_pixels(files, int(json.loads(sidecar.read_text())["image_size"]))
    with torch.no_grad():
        from_export = torch.jit.load(str(exported))(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(from_export, from_predict, atol=1e-4)
    # And none of it is the plain model's.
    plain = np.array([list(p.probabilities.values()) for p in predict_images(run, files, device="cpu")])
    assert np.abs(plain - from_predict).max() > 0.01
    assert evaluate_run(run, str(site), device="cpu", show_progress=False)["adaptation"] is None
    assert "adapt" not in (run.path / "metrics.json").read_text()


def test_transductive_evaluate_adapts_on_the_images_it_scores(run_and_site):
    run, site = run_and_site
    adapt_run(run, str(site), "prior", name="prior-site", device="cpu")
    recorded = evaluate_run(run, str(site), device="cpu", adapted="prior-site", show_progress=False)
    transductive = evaluate_run(run, str(site), device="cpu", adapt="prior", show_progress=False)
    assert transductive["adaptation"]["transductive"] and not recorded["adaptation"]["transductive"]
    assert transductive["adaptation"]["target_prior"] == pytest.approx(recorded["adaptation"]["target_prior"], abs=1e-4)
    assert transductive["test_accuracy"] == pytest.approx(recorded["test_accuracy"])
    assert list(run.path.glob("eval-site-*-adapt-prior.json"))


def test_adapt_command_records_and_evaluate_applies(run_and_site, cli):
    run, site = run_and_site
    done = cli("adapt", str(run.path), "--target", str(site), "--method", "bn", "--name", "cli-bn", "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["name"] == "cli-bn"
    shown = cli("evaluate", str(run.path), "--data", str(site), "--adapted", "cli-bn")
    assert shown.code == 0 and "ADAPTED: bn on 24 images" in shown.out
    bad = cli("adapt", str(run.path), "--target", str(site), "--method", "sideways")
    assert bad.code == 2 and "unknown adaptation" in bad.err and len(bad.err.strip().splitlines()) == 1
    missing = cli("predict", str(run.path), str(site), "--adapted", "nothing")
    assert missing.code == 2 and "no adaptation 'nothing'" in missing.err


def test_too_few_target_images_are_refused(run_and_site):
    run, site = run_and_site
    few = sorted(str(p) for p in site.rglob("*.jpeg"))[:3]
    with pytest.raises(CxrlabError, match="at least 8"):
        predict_images(run, few, device="cpu", adapt="bn")
