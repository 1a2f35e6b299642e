"""The model registry, pretrained weights and model cards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlab.core.errors import CxrlabError
from cxrlab.models.cards import model_card
from cxrlab.models.registry import MODELS, build_model, model_entry
from cxrlab.models.weights import load_weights, package_weights_file, pretrained_available, torchvision_cache_file


@pytest.mark.parametrize("name", list(MODELS) + ["timm:resnet10t"])
def test_every_registry_entry_builds_and_runs(name):
    model = build_model(name, num_classes=3).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, 64, 64))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 3


def test_parameter_counts_match_the_study():
    assert model_card("densenet121", image_size=64)["params"] == 6_955_906
    assert model_card("resnet50", image_size=64)["params"] == 23_512_130
    card = model_card("scratch_cnn", image_size=224)
    assert card["params"] < 1_000_000 and card["trainable_frozen"] == 2 * 256 + 2
    assert card["gflops"] > 0


def test_unknown_model_is_one_line():
    with pytest.raises(CxrlabError, match="unknown model 'resnet51'"):
        model_entry("resnet51")
    with pytest.raises(CxrlabError, match="unknown timm model"):
        model_entry("timm:not_a_model")


def test_imagenet_through_torchvisions_cache(tmp_path):
    """Offline, torchvision's weights API reads the file it would have downloaded."""
    entry = model_entry("resnet18")
    target = torchvision_cache_file(entry)
    assert not pretrained_available("resnet18")
    with pytest.raises(CxrlabError, match=str(target.name)):
        load_weights(build_model("resnet18"), "resnet18", "imagenet")
    reference = __import__("torchvision").models.resnet18(weights=None)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), target)
    assert pretrained_available("resnet18")
    model = build_model("resnet18")
    assert load_weights(model, "resnet18", "imagenet").startswith("imagenet:")
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    target.unlink()


def test_densenet_legacy_key_names_load():
    """torchvision's DenseNet files name layers 'norm.1'; they must still load."""
    import re

    reference = __import__("torchvision").models.densenet121(weights=None)
    legacy = {
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))(\d)", r"\1.\2", k): v
        for k, v in reference.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert any(".norm.1." in k for k in legacy)
    path = torchvision_cache_file(model_entry("densenet121"))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(legacy, path)
    model = build_model("densenet121")
    load_weights(model, "densenet121", "imagenet")
    assert torch.equal(model.backbone.features.conv0.weight, reference.features.conv0.weight)
    path.unlink()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_files(tmp_path, suffix):
    source = build_model("scratch_cnn")
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save(source.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = build_model("scratch_cnn")
    load_weights(target, "scratch_cnn", str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key])


def test_weights_that_do_not_fit_are_one_line(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(build_model("resnet18").backbone.state_dict(), path)
    with pytest.raises(CxrlabError, match="do not fit this model") as info:
        load_weights(build_model("scratch_cnn"), "scratch_cnn", str(path))
    assert "\n" not in str(info.value)
    three_class = tmp_path / "three.pt"
    torch.save(build_model("scratch_cnn", num_classes=3).state_dict(), three_class)
    with pytest.raises(CxrlabError, match=r"head\.weight has shape"):
        load_weights(build_model("scratch_cnn", num_classes=2), "scratch_cnn", str(three_class))


def test_scratch_cnn_has_no_imagenet_weights():
    with pytest.raises(CxrlabError, match="no ImageNet weights"):
        load_weights(build_model("scratch_cnn"), "scratch_cnn", "imagenet")


def test_lite0_package_weights_see_a_cat(fixtures_dir):
    """The package's weights mapped in order onto timm's model classify a real cat photo."""
    assert package_weights_file(model_entry("efficientnet_lite0")) is not None and pretrained_available(
        "efficientnet_lite0"
    )
    model = build_model("efficientnet_lite0", num_classes=1000)
    load_weights(model, "efficientnet_lite0", "imagenet")
    package = torch.load(package_weights_file(model_entry("efficientnet_lite0")), map_location="cpu", weights_only=True)
    model.head.load_state_dict({"weight": package["_fc.weight"], "bias": package["_fc.bias"]})
    photo = Image.open(fixtures_dir / "chelsea.jpg").convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    with torch.no_grad():
        probs = model.eval()(x).softmax(1)[0]
    top = int(probs.argmax())
    assert 281 <= top <= 285, f"top class {top}"
    assert float(probs[281:286].sum()) > 0.8
