"""Export a run's selected checkpoint for use without cxrlab: ONNX or TorchScript.

The exported network takes what the run's model takes, ``(B, 1, H, W)`` float32 images in
[0, 1] at the run's image size, and returns class probabilities ``(B, C)``: the
normalisation (grayscale to three channels, mean and std) and the softmax are inside, so
a deployer only decodes, resizes and divides by 255. A sidecar JSON beside the file says
exactly that, with the class names, the decision threshold chosen on validation data and
the run the model came from. A variant adapted to a target site (``cxrlab adapt``) exports
with its BatchNorm statistics and class-prior shift inside, under a name of its own:

    <out>/model.onnx             + model.onnx.json
    <out>/model.torchscript.pt   + model.torchscript.json
    <out>/model-adapted-<name>.onnx + model-adapted-<name>.onnx.json
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from cxrlab.core.decision import positive_index
from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import atomic_path, make_dir, write_json
from cxrlab.training.adaptation import apply_bn_buffers, load_adaptation
from cxrlab.training.records import RunRecord, load_run

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
ONNX_OPSET = 18


class ProbabilityModel(nn.Module):
    """The run's classifier followed by a softmax over the classes, of the logits divided by the
    run's temperature and shifted by an adaptation's class-prior bias when there are any."""

    def __init__(self, model: nn.Module, temperature: float = 1.0, log_weights=None):
        super().__init__()
        self.model = model
        self.temperature = float(temperature)
        bias = torch.as_tensor(log_weights if log_weights is not None else [], dtype=torch.float32)
        self.register_buffer("bias", bias.view(1, -1) if bias.numel() else None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images).float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.bias is not None:
            logits = logits + self.bias
        return logits.softmax(dim=1)


def export_run(
    run_dir: str | os.PathLike, format: str, out_dir: str | os.PathLike | None = None, adapted: str | None = None
) -> list[Path]:
    """Write the run's model in ``format`` (onnx or torchscript) and its sidecar JSON into
    ``out_dir`` (default: the run directory); returns the two paths written. ``adapted`` names
    a variant recorded by ``cxrlab adapt``: its BatchNorm statistics and prior shift go into
    the exported model, written as ``model-adapted-<name>.<ext>`` with its own sidecar."""
    if format not in FORMATS:
        raise CxrlabError(f"--format {format}: unknown export format, choose one of {', '.join(FORMATS)}")
    run = load_run(run_dir)
    out = make_dir(out_dir) if out_dir is not None else run.path
    classifier = run.load_model()
    record = None
    if adapted:
        record, bn_state = load_adaptation(run, adapted)
        apply_bn_buffers(classifier, bn_state)
    log_weights = record.log_weights() if record is not None else None
    model = ProbabilityModel(classifier, run.temperature, log_weights).eval()
    size = int(run.config.image_size)
    example = torch.rand(2, 1, size, size)
    stem = "model" if record is None else f"model-adapted-{record.name}"
    target = out / FORMATS[format].replace("model", stem, 1)
    if format == "onnx":
        _write_onnx(model, example, target)
    else:
        _write_torchscript(model, example, target)
    sidecar = out / f"{stem}.{format}.json"
    mean, std = classifier.mean.flatten().tolist(), classifier.std.flatten().tolist()
    details = export_sidecar(run, format, target.name, mean, std)
    details["temperature"] = run.temperature
    details["adaptation"] = record.model_dump(mode="json") if record is not None else None
    write_json(sidecar, details)
    return [target, sidecar]


def _write_onnx(model: nn.Module, example: torch.Tensor, target: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; a clear message beats its ImportError)
    except ImportError as exc:
        raise CxrlabError("--format onnx needs the onnx and onnxscript packages: pip install onnx onnxscript") from exc
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model,
        (example,),
        input_names=["images"],
        output_names=["probabilities"],
        dynamic_shapes={"images": {0: batch}},
        opset_version=ONNX_OPSET,
        dynamo=True,
        verbose=False,
    )
    assert program is not None  # dynamo=True returns the ONNXProgram (only the old exporter returns None)
    with atomic_path(target) as tmp:
        # One self-contained file: the weights inside, not in a .data file beside it.
        program.save(str(tmp), external_data=False)


def _write_torchscript(model: nn.Module, example: torch.Tensor, target: Path) -> None:
    with warnings.catch_warnings():
        # Tracing fixes the one-channel branch of the normalisation and the padding of the
        # image size: both are what the sidecar documents as the input. torch.jit's own
        # deprecation notice is not the user's concern here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        with atomic_path(target) as tmp:
            torch.jit.save(traced, str(tmp))


def export_sidecar(run: RunRecord, format: str, file_name: str, mean: list[float], std: list[float]) -> dict:
    """What a deployer needs to feed the exported model and read its output; ``mean`` and
    ``std`` are the normalisation inside the model."""
    classes = run.classes
    size = int(run.config.image_size)
    positive, threshold, decision = _decision_rule(run)
    return {
        "file": file_name,
        "format": format,
        "input": {
            "name": "images",
            "shape": ["B", 1, size, size],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "batch": "any size; height and width must be exactly the image size",
        },
        "output": {
            "name": "probabilities",
            "shape": ["B", len(classes)],
            "meaning": "softmax class probabilities, columns in the order of classes (after the run's "
            "temperature, and an adaptation's prior shift when one is applied)",
        },
        "image_size": size,
        **_preprocessing(size),
        "normalisation_inside": {
            "description": "the model repeats the channel to RGB and applies (x - mean) / std itself",
            "mean": [round(v, 6) for v in mean],
            "std": [round(v, 6) for v in std],
        },
        "classes": classes,
        "positive_class": positive,
        "threshold": threshold,
        "decision": decision,
        "threshold_rule": run.scores.threshold_rule,
        "test_time_augmentation": "not included"
        + (f"; the run's own metrics used tta={run.config.tta}" if run.config.tta else ""),
        "source_run": _source_run(run),
    }


def _decision_rule(run: RunRecord) -> tuple[str | None, float | None, str]:
    """The positive class and the threshold chosen on validation (None beyond two classes), and
    the rule that turns the model's probabilities into a class, in words."""
    classes = run.classes
    binary = len(classes) == 2
    positive = classes[positive_index(classes)] if binary else None
    threshold = run.threshold if binary else None
    negative = next((c for c in classes if c != positive), None) if binary else None
    decision = "the class with the highest probability"
    if positive is not None and threshold is not None:  # a binary run, which has a threshold
        decision = f"{positive} if probabilities[:, {classes.index(positive)}] >= {threshold} else {negative}"
    return positive, threshold, decision


def _preprocessing(size: int) -> dict:
    """How to turn an image file into the model's input at ``size``: in steps, and in Pillow."""
    return {
        "preprocessing": [
            "decode the image (JPEG, PNG or DICOM) to 8-bit grayscale",
            f"resize to {size}x{size} pixels, bilinear, without keeping the aspect ratio",
            "convert to float32 and divide by 255",
            f"arrange as (B, 1, {size}, {size})",
        ],
        # The exact pixels of training come from this Pillow recipe; another resizer gives
        # slightly different pixels and so slightly different probabilities.
        "preprocessing_pillow": (
            f"image = Image.open(path); image.draft('L', ({size}, {size})) for JPEG; "
            f"image = ImageOps.exif_transpose(image).convert('L').resize(({size}, {size}), Image.BILINEAR, "
            f"reducing_gap=3.0); x = np.asarray(image, np.float32)[None, None] / 255"
        ),
    }


def _source_run(run: RunRecord) -> dict:
    """The run the exported model came from: what it is and how it scored."""
    return {
        "run_id": run.run_id,
        "path": str(run.path.resolve()),
        "model": run.config.model,
        "mode": run.config.mode,
        "weights": run.config.weights,
        "best_epoch": run.scores.best_epoch,
        "test_accuracy": run.scores.test_accuracy,
        "roc_auc": run.scores.roc_auc,
        "data_fingerprint": run.config.data_info.fingerprint,
        "cxrlab": run.config.environment.get("cxrlab"),
    }
