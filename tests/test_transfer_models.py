"""The stages the registry knows for each model, partial transfer, statistics-only
initialisation, and EfficientNet-Lite1/-Lite2's package weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlab.core.errors import CxrlabError
from cxrlab.models.initialise import init_kind, initialise, split_stats
from cxrlab.models.registry import MODELS, backbone_stages, build_model, model_entry
from cxrlab.models.weights import load_weights, package_weights_file, pretrained_available

STAGE_COUNTS = {
    "densenet121": 4,
    "resnet50": 4,
    "resnet18": 4,
    "efficientnet_b0": 7,
    "efficientnet_lite0": 7,
    "efficientnet_lite1": 7,
    "efficientnet_lite2": 7,
    "convnext_tiny": 4,
    "scratch_cnn": 4,
}


def test_every_registry_model_has_its_stages_listed():
    assert set(STAGE_COUNTS) == set(MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_stages_run_in_sequence_to_the_backbones_output(name):
    model = build_model(name)
    stages = backbone_stages(model, name)
    assert stages.count == STAGE_COUNTS[name] and stages.sequential
    x = model.normalize(torch.rand(2, 1, 64, 64))
    for training in (False, True):  # BatchNorm in both modes; dropout draws from the same seed
        model.train(training)
        torch.manual_seed(1)
        whole = model.backbone(x)
        torch.manual_seed(1)
        pieces = stages.forward_from(stages.stem(x), 0)
        torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5)
    # Stem, stages and pool hold every parameter of the backbone, each once.
    parts = [stages.stem, *stages.blocks, stages.pool]
    owned = [id(p) for part in parts for p in part.parameters()]
    assert sorted(owned) == sorted(id(p) for p in model.backbone.parameters())


def test_timm_models_are_cut_where_feature_info_says():
    model = build_model("timm:resnet10t")
    stages = backbone_stages(model, "timm:resnet10t")
    assert stages.names == ["layer1", "layer2", "layer3", "layer4"] and not stages.sequential
    assert stages.blocks[-1] is model.backbone.layer4 or model.backbone.layer4 in list(stages.blocks[-1].modules())


def _distinct_weights_file(tmp_path, name="scratch_cnn"):
    """A state dict unlike any fresh initialisation: what a pretrained file looks like here."""
    torch.manual_seed(123)
    source = build_model(name)
    with torch.no_grad():
        for tensor in source.backbone.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) + 0.5)
    path = tmp_path / "pretrained.pt"
    torch.save(source.backbone.state_dict(), path)
    return path, source.backbone.state_dict()


@pytest.mark.parametrize("k", [0, 2, 4])
def test_partial_transfer_copies_exactly_the_first_k_stages(tmp_path, k):
    path, pretrained = _distinct_weights_file(tmp_path)
    torch.manual_seed(7)
    fresh = {key: v.clone() for key, v in build_model("scratch_cnn").backbone.state_dict().items()}
    torch.manual_seed(7)
    model = build_model("scratch_cnn")
    weights_id = initialise(model, "scratch_cnn", str(path), seed=7, transfer_blocks=k)
    assert weights_id.endswith(f"|transfer-{k}-seed-7")
    stages = backbone_stages(model, "scratch_cnn")
    kept = {id(t) for m in stages.bottom(k) for t in [*m.parameters(), *m.buffers()]}
    state = model.backbone.state_dict(keep_vars=True)
    transferred = {key for key, t in state.items() if id(t) in kept}
    assert transferred and (len(transferred) < len(state)) == (k < stages.count)
    for key, tensor in model.backbone.state_dict().items():
        expected = pretrained[key] if key in transferred else fresh[key]
        assert torch.equal(tensor, expected), key
        if key not in transferred and tensor.is_floating_point() and tensor.numel() > 1:
            assert not torch.equal(tensor, pretrained[key]), key


def test_partial_transfer_needs_real_weights_and_a_depth_that_exists(tmp_path):
    path, _ = _distinct_weights_file(tmp_path)
    with pytest.raises(CxrlabError, match="--transfer-blocks needs pretrained weights"):
        initialise(build_model("scratch_cnn"), "scratch_cnn", "none", seed=0, transfer_blocks=1)
    with pytest.raises(CxrlabError, match=r"--transfer-blocks 5: scratch_cnn has 4 stages") as info:
        initialise(build_model("scratch_cnn"), "scratch_cnn", str(path), seed=0, transfer_blocks=5)
    assert "\n" not in str(info.value)
    with pytest.raises(CxrlabError, match=r"--freeze-blocks 9"):
        initialise(build_model("scratch_cnn"), "scratch_cnn", "none", seed=0, freeze_blocks=9)


def test_stats_init_draws_each_tensor_from_its_pretrained_mean_and_std():
    pretrained = build_model("efficientnet_lite0")
    load_weights(pretrained, "efficientnet_lite0", "imagenet")
    model = build_model("efficientnet_lite0")
    weights_id = initialise(model, "efficientnet_lite0", "imagenet-stats", seed=3)
    assert weights_id.startswith("imagenet:") and weights_id.endswith("|stats-seed-3")
    before = dict(pretrained.backbone.named_parameters())
    checked, same_place, total = 0, 0, 0
    for name, tensor in model.backbone.named_parameters():
        old, new = before[name].detach().double().flatten(), tensor.detach().double().flatten()
        # No copy, permutation or rescaling of the pretrained values: float32 draws can meet a
        # pretrained value by chance (up to about 0.1% in the largest tensors), never most of them.
        assert float(torch.isin(new, old).double().mean()) < 0.01, f"{name} shares values with the pretrained tensor"
        same_place += int((new == old).sum())
        total += old.numel()
        n = old.numel()
        if n < 200 or float(old.std()) == 0:
            continue
        # Sampling error of a mean is std/sqrt(n), of a std about std/sqrt(2n); 6 of them is far
        # beyond chance yet far below what a wrong mean or scale would give.
        assert abs(float(new.mean() - old.mean())) <= 6 * float(old.std()) / n**0.5, name
        assert abs(float(new.std() / old.std()) - 1) <= 6 / (2 * n) ** 0.5, name
        checked += 1
    assert checked > 50 and same_place / total < 1e-5
    for module in model.backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert torch.equal(module.running_mean, torch.zeros_like(module.running_mean))
            assert torch.equal(module.running_var, torch.ones_like(module.running_var))
    # The same seed draws the same network; another seed another one.
    again = build_model("efficientnet_lite0")
    initialise(again, "efficientnet_lite0", "imagenet-stats", seed=3)
    other = build_model("efficientnet_lite0")
    initialise(other, "efficientnet_lite0", "imagenet-stats", seed=4)
    first = model.backbone.conv_stem.weight
    assert torch.equal(first, again.backbone.conv_stem.weight) and not torch.equal(
        first, other.backbone.conv_stem.weight
    )


def test_stats_weights_names_and_init_kinds(tmp_path):
    assert split_stats("imagenet-stats") == ("imagenet", True)
    assert split_stats("/w/file.pt-stats") == ("/w/file.pt", True)
    assert split_stats("imagenet") == ("imagenet", False) and split_stats("-stats") == ("-stats", False)
    assert [
        init_kind(w, t) for w, t in [("imagenet", None), ("imagenet", 2), ("x.pt-stats", None), ("none", None)]
    ] == [
        "pretrained",
        "partial",
        "stats",
        "random",
    ]
    with pytest.raises(CxrlabError, match="none-stats"):
        initialise(build_model("scratch_cnn"), "scratch_cnn", "none-stats", seed=0)
    path, pretrained = _distinct_weights_file(tmp_path)
    model = build_model("scratch_cnn")
    initialise(model, "scratch_cnn", f"{path}-stats", seed=0)
    weight = model.backbone.features[0].weight
    assert abs(float(weight.detach().mean() - pretrained["features.0.weight"].mean())) < 0.1


@pytest.mark.parametrize(("name", "size"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite_package_weights_see_a_cat(name, size, fixtures_dir):
    """Lite1 and Lite2's package weights mapped in order onto timm's models classify a real
    cat photo at their native sizes, as Lite0's do."""
    entry = model_entry(name)
    assert entry.weights_source == "package" and pretrained_available(name)
    model = build_model(name, num_classes=1000)
    assert load_weights(model, name, "imagenet") == f"imagenet:{entry.weights_package[0].replace('_', '-')}"
    package = torch.load(package_weights_file(entry), map_location="cpu", weights_only=True)
    model.head.load_state_dict({"weight": package["_fc.weight"], "bias": package["_fc.bias"]})
    photo = Image.open(fixtures_dir / "chelsea.jpg").convert("RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    with torch.no_grad():
        probs = model.eval()(x).softmax(1)[0]
    top = int(probs.argmax())
    assert 281 <= top <= 285, f"top class {top}"
    assert float(probs[281:286].sum()) > 0.8
