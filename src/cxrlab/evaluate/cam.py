"""Grad-CAM heatmaps of a finished run's model, drawn over the X-rays they explain.

The heatmap comes from the ``grad-cam`` package (``pytorch_grad_cam.GradCAM``) at the layer
the registry names for the model (``cam_layer``, else its last convolution); it explains the class the run predicts
(at the run's own threshold), so a reader sees what the decision rested on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxrlab.core.io import make_dir
from cxrlab.core.text import slug
from cxrlab.data.images import decode_file, resize_array
from cxrlab.evaluate.runs import decode_images, expand_images
from cxrlab.models.registry import cam_target_layer, model_entry
from cxrlab.training.calibration import softmax
from cxrlab.training.predict import predict_logits
from cxrlab.training.records import RunRecord, load_run
from cxrlab.training.runtime import resolve_device

# Heatmaps of 32-224 px inputs are shown at least this large, so the colours can be read.
DISPLAY_SIZE = 224


def read_images(paths: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (N, size, size) uint8, found (N,) bool)`` of the images a run's
    predictions.csv names: image files, or ``<file>.npz#<split>/<index>`` entries of a
    MedMNIST array. An image that is gone or unreadable is left black with ``found`` False."""
    pixels = np.zeros((len(paths), size, size), dtype=np.uint8)
    found = np.zeros(len(paths), dtype=bool)
    arrays: dict[str, np.lib.npyio.NpzFile | None] = {}
    for i, path in enumerate(paths):
        if "#" in path and path.split("#", 1)[0].lower().endswith(".npz"):
            image = _npz_image(path, arrays)
            if image is not None:
                pixels[i], found[i] = resize_array(image, size), True
            continue
        image, _, _ = decode_file(path, size)
        if image is not None:
            pixels[i], found[i] = image, True
    for npz in arrays.values():
        if npz is not None:
            npz.close()
    return pixels, found


def _npz_image(entry: str, arrays: dict[str, np.lib.npyio.NpzFile | None]) -> np.ndarray | None:
    file, _, where = entry.partition("#")
    split, _, index = where.partition("/")
    if file not in arrays:
        arrays[file] = np.load(file, allow_pickle=False) if os.path.isfile(file) else None
    npz = arrays[file]
    key = f"{split}_images"
    if npz is None or key not in npz.files or not index.isdigit():
        return None
    images = npz[key]
    return images[int(index)] if int(index) < len(images) else None


class LogProbabilityTarget:
    """The log-probability of one class, as a Grad-CAM target.

    The raw logit is the usual target, but a class can win with a negative logit (the other
    one being lower still), and then its map is negative everywhere and ReLU leaves nothing.
    The log-probability asks what speaks for this class rather than the others.
    """

    def __init__(self, category: int):
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(output, dim=-1)[..., self.category]


def cam_maps(
    model: torch.nn.Module,
    layer: torch.nn.Module,
    pixels: np.ndarray,
    targets: np.ndarray,
    device: torch.device,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM maps ``(N, S, S)`` in [0, 1] of ``targets`` (class indices) for uint8 images."""
    from pytorch_grad_cam import GradCAM

    model = model.to(device).eval()
    maps = np.zeros(pixels.shape, dtype=np.float32)
    # The run may have frozen its backbone; Grad-CAM needs gradients through it.
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        for start in range(0, len(pixels), batch_size):
            batch = torch.from_numpy(pixels[start : start + batch_size]).float().div(255).unsqueeze(1)
            wanted = [LogProbabilityTarget(int(t)) for t in targets[start : start + batch_size]]
            maps[start : start + len(batch)] = cam(input_tensor=batch, targets=wanted)
    return np.nan_to_num(maps)


@torch.no_grad()
def cam_cells(model: torch.nn.Module, layer: torch.nn.Module, image_size: int, device: torch.device) -> tuple[int, int]:
    """The height and width, in cells, of ``layer``'s feature map at ``image_size``: what a
    Grad-CAM map is upsampled from, so how finely it can say where."""
    shapes: list[tuple[int, int]] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(output.shape[-2:])))
    try:
        model.eval()(torch.zeros(1, 1, image_size, image_size, device=device))
    finally:
        handle.remove()
    return shapes[-1] if shapes else (1, 1)


def overlay(image: np.ndarray, heatmap: np.ndarray, size: int | None = None) -> np.ndarray:
    """An RGB uint8 picture of the X-ray ``image`` with ``heatmap`` ([0, 1]) in colour over it,
    both scaled to ``size`` pixels (default: the image's own size)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    size = size or image.shape[0]
    if image.shape[0] != size:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    if heatmap.shape[0] != size:
        heatmap = np.asarray(
            Image.fromarray(heatmap.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR)
        )
    rgb = np.repeat(image[..., None].astype(np.float32) / 255.0, 3, axis=2)
    return show_cam_on_image(rgb, np.clip(heatmap, 0, 1), use_rgb=True, image_weight=0.6)


def run_cam_overlays(
    run: RunRecord, pixels: np.ndarray, device: str = "auto", targets: np.ndarray | None = None
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Grad-CAM of ``run``'s model on decoded images (at the run's image size): ``(overlays
    (RGB uint8, at least DISPLAY_SIZE px), heatmaps (N, S, S), targets)``. The heatmaps
    explain ``targets`` (class indices), by default the classes the run predicts."""
    torch_device = resolve_device(device)
    model = run.load_model().to(torch_device)
    if targets is None:
        probs = softmax(predict_logits(model, pixels, np.arange(len(pixels)), torch_device).astype(np.float64))
        targets = run.decide(probs)
    layer = cam_target_layer(model, model_entry(run.config.model))
    maps = cam_maps(model, layer, pixels, targets, torch_device)
    size = max(DISPLAY_SIZE, pixels.shape[-1])
    return [overlay(image, heatmap, size) for image, heatmap in zip(pixels, maps)], maps, np.asarray(targets)


def write_cam_overlays(
    run_dir: str | os.PathLike | RunRecord, image_paths: list[str], out_dir: str | os.PathLike, device: str = "auto"
) -> list[Path]:
    """Write one Grad-CAM overlay PNG per image (folders expanded) into ``out_dir``, named
    ``<image stem>-gradcam-<predicted class>.png``; returns the paths in image order."""
    run = run_dir if isinstance(run_dir, RunRecord) else load_run(run_dir)
    files = expand_images([str(p) for p in image_paths])
    pixels = decode_images(files, run.config.image_size)
    overlays, _, predicted = run_cam_overlays(run, pixels, device)
    out = make_dir(out_dir)
    written: list[Path] = []
    taken: set[str] = set()
    for file, picture, label in zip(files, overlays, predicted):
        name = _unique_name(f"{_safe_stem(file)}-gradcam-{_safe_stem(run.classes[int(label)])}", taken)
        path = out / f"{name}.png"
        Image.fromarray(picture).save(path)
        written.append(path)
    return written


def _safe_stem(text: str) -> str:
    return slug(Path(text).stem or "image")


def _unique_name(name: str, taken: set[str]) -> str:
    """Images from different folders may share a name; number the later ones."""
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    taken.add(candidate)
    return candidate
