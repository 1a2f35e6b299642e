"""Figures for looking at data and results one image at a time (fastai's ``show_batch``,
``plot_top_losses`` and ``plot_confusion_matrix``, and Grad-CAM overlays with a colour bar).

``data_grid_figure``: a labelled grid of images per split and class, augmented as training
would augment them when asked. ``interpretation``: a run scored on labelled data (the file
``evaluate`` wrote), its most confident mistakes and confusion matrix as figures.
``cam_figure``: one X-ray with its Grad-CAM map, a colour bar, a caption that gives the
class, the probability and the threshold, and a note when the map is too coarse to read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from cxrlab.core.decision import decide, positive_index
from cxrlab.core.errors import CxrlabError
from cxrlab.data.dataset import Dataset
from cxrlab.data.transforms import AUGMENT_LEVELS, augment_batch, to_float
from cxrlab.report import figures
from cxrlab.report.scored import ScoredSet, confident_mistakes
from cxrlab.training.records import RunRecord

SPLITS = ("train", "val", "test")
COARSE_CELLS = 4  # a map of fewer cells a side than this cannot say where in the lungs


def data_grid_figure(
    data: Dataset, per_class: int = 4, augment: str = "none", seed: int = 0, title: str | None = None
) -> Figure:
    """``per_class`` images of each class in each split (one row per split and class), each
    captioned with its class, split and file name; with ``augment`` ("light" or "strong") the
    images are shown as a training batch would see them."""
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, np.ndarray]] = []
    for split in SPLITS:
        for label, name in enumerate(data.classes):
            members = np.flatnonzero((data.splits == split) & (data.labels == label))
            if len(members):
                chosen = np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False))
                rows.append((split, name, chosen))
    if not rows:
        raise CxrlabError(f"{data.location} has no images to show")
    images, captions = [], []
    for split, name, chosen in rows:
        pixels = to_float(torch.from_numpy(np.ascontiguousarray(data.images[chosen])))
        if augment != "none":
            pixels = augment_batch(pixels, generator, **AUGMENT_LEVELS[augment])
        shown = (pixels[:, 0] * 255).round().byte().numpy()
        for k, index in enumerate(chosen):
            images.append(shown[k])
            captions.append(f"{name} · {split}\n{short_name(data.paths[index])}")
        images += [np.zeros_like(shown[0])] * (per_class - len(chosen))  # keep one row per split and class
        captions += [""] * (per_class - len(chosen))
    heading = title or (
        f"{Path(data.location).name or data.location}: {per_class} images per class and split at "
        f"{data.image_size} px" + (f", with {augment} augmentation" if augment != "none" else "")
    )
    return figures.image_grid_figure(images, captions, heading, columns=per_class)


def short_name(path: str, limit: int = 28) -> str:
    name = os.path.basename(path.split("#", 1)[0]) + (f"#{path.split('#', 1)[1]}" if "#" in path else "")
    return name if len(name) <= limit else name[: limit - 1] + "…"


@dataclass
class Interpretation:
    """A run scored on one labelled data set: the images, their labels and probabilities."""

    run: RunRecord
    scored: ScoredSet
    data: str

    @property
    def data_name(self) -> str:
        return Path(self.data.rstrip("/")).name or self.data

    def top_losses(self, k: int = 9) -> list[dict]:
        """The ``k`` wrong predictions the run was surest of, surest first."""
        s = self.scored
        return [
            {
                "path": s.paths[i],
                "true": s.classes[s.labels[i]],
                "predicted": s.classes[s.predicted[i]],
                "probability": float(s.probs[i, s.predicted[i]]),
                "loss": float(-np.log(max(s.probs[i, s.labels[i]], 1e-12))),
            }
            for i in confident_mistakes(s, k)
        ]

    def plot_top_losses(self, k: int = 9) -> Figure | None:
        """The mistakes of ``top_losses`` as an image grid; None when there is none to show."""
        from cxrlab.evaluate.cam import read_images

        rows = self.top_losses(k)
        pixels, found = read_images([r["path"] for r in rows], max(224, self.run.config.image_size))
        shown = [j for j in range(len(rows)) if found[j]]
        if not shown:
            return None
        return figures.mistakes_figure(
            [pixels[j] for j in shown],
            [rows[j]["path"] for j in shown],
            [rows[j]["true"] for j in shown],
            [rows[j]["predicted"] for j in shown],
            [rows[j]["probability"] for j in shown],
            f"{self.run.run_id} on {self.data_name}: the {len(shown)} most confident mistakes",
        )

    def plot_confusion(self) -> Figure:
        from cxrlab.core.metrics import confusion_matrix

        s = self.scored
        matrix = confusion_matrix(s.labels, s.predicted, len(s.classes))
        return figures.confusion_figure(matrix, s.classes, f"{self.run.run_id} on {self.data_name}")

    def write(self, out_dir: str | os.PathLike, k: int = 9) -> list[Path]:
        """``top-losses.png`` (when a mistake's image is on this machine) and ``confusion.png``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [figures.save_png(self.plot_confusion(), out / "confusion.png")]
        losses = self.plot_top_losses(k)
        if losses is not None:
            written.insert(0, figures.save_png(losses, out / "top-losses.png"))
        return written


def interpretation(run: RunRecord, data: str, predictions_file: str) -> Interpretation:
    """The scores ``evaluate`` wrote for ``data`` (``predictions_file`` in the run directory)."""
    paths, labels, probs = run.prediction_arrays("test", name=predictions_file)
    classes = run.classes
    positive = positive_index(classes)
    threshold = run.threshold if len(classes) == 2 else None
    predicted = decide(probs, threshold, positive)
    scored = ScoredSet(data, "test", paths, labels, probs, predicted, classes, positive, threshold)
    return Interpretation(run, scored, data)


def cam_caption(run: RunRecord, probs: np.ndarray, predicted: int) -> str:
    """ "PNEUMONIA: p(PNEUMONIA) 0.93 at threshold 0.42" (two classes), or the class and its
    probability (more)."""
    classes = run.classes
    if len(classes) == 2 and run.threshold is not None:
        positive = classes[run.positive]
        return (
            f"predicted {classes[predicted]}: p({positive}) {probs[run.positive]:.3f}, "
            f"threshold {run.threshold:.3f} (chosen on validation)"
        )
    return f"predicted {classes[predicted]}: p {probs[predicted]:.2f} (most probable class)"


def coarse_note(cells: tuple[int, int], image_size: int, heatmap: np.ndarray) -> str | None:
    """Why a map cannot be read, or None when it can."""
    if min(cells) < COARSE_CELLS:
        return (
            f"the layer's map is {cells[0]}x{cells[1]} cells at {image_size} px: too coarse to say where; "
            "train at a larger --image-size"
        )
    if heatmap.max() <= 0:
        return "flat map: nothing in the image raised this class's probability"
    return None


def cam_figure(image: np.ndarray, heatmap: np.ndarray, title: str, caption: str, note: str | None) -> Figure:
    """The X-ray with its Grad-CAM map in colour over it, a colour bar, and the caption below."""
    from PIL import Image

    size = max(224, image.shape[0])
    if image.shape[0] != size:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    if heatmap.shape[0] != size:
        heatmap = np.asarray(
            Image.fromarray(heatmap.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR)
        )
    figure = figures.new_figure(5.2, 5.6 if note else 5.2)
    axes = figure.subplots()
    axes.imshow(image, cmap="gray", vmin=0, vmax=255)
    axes.imshow(np.clip(heatmap, 0, 1), cmap="jet", alpha=0.4, vmin=0, vmax=1)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(figures.wrapped(title, 48), fontsize=9)
    axes.set_xlabel(figures.wrapped(caption + (f"\nnote: {note}" if note else ""), 60), fontsize=9)
    # The bar shows the colours at full strength: faded like the overlay they would be hard to match.
    bar = figure.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=axes, fraction=0.046, pad=0.03)
    bar.set_label("Grad-CAM weight (0: none, 1: the most in this image)", fontsize=8)
    return figure


def cam_figures(
    run: RunRecord, image_paths: list[str], device: str = "auto", probabilities: np.ndarray | None = None
) -> list[tuple[str, str, Figure]]:
    """``(image file, predicted class, figure)`` per image (folders expanded): Grad-CAM of the
    class ``run`` predicts, with a colour bar, the probability and threshold, and a note when
    the map is too coarse to read. ``probabilities`` (N, C) are those already predicted (e.g.
    with test-time augmentation), else predicted here."""
    from cxrlab.evaluate.cam import cam_cells, cam_maps
    from cxrlab.evaluate.runs import decode_images, expand_images
    from cxrlab.models.registry import cam_target_layer, model_entry
    from cxrlab.training.calibration import softmax
    from cxrlab.training.predict import predict_logits
    from cxrlab.training.runtime import resolve_device

    files = expand_images([str(p) for p in image_paths])
    size = run.config.image_size
    pixels = decode_images(files, size)
    torch_device = resolve_device(device)
    model = run.load_model().to(torch_device)
    if probabilities is None:
        probabilities = softmax(predict_logits(model, pixels, np.arange(len(files)), torch_device).astype(np.float64))
    predicted = run.decide(probabilities)
    layer = cam_target_layer(model, model_entry(run.config.model))
    maps = cam_maps(model, layer, pixels, predicted, torch_device)
    cells = cam_cells(model, layer, size, torch_device)
    drawn = []
    for file, image, heatmap, probs, label in zip(files, pixels, maps, probabilities, predicted):
        name = run.classes[int(label)]
        title = f"{Path(file).name}: Grad-CAM of {name} ({run.config.model}, {run.config.mode})"
        figure = cam_figure(
            image, heatmap, title, cam_caption(run, probs, int(label)), coarse_note(cells, size, heatmap)
        )
        drawn.append((file, name, figure))
    return drawn


def write_cam_figures(
    run: RunRecord,
    image_paths: list[str],
    out_dir: str | os.PathLike,
    device: str = "auto",
    probabilities: np.ndarray | None = None,
) -> list[Path]:
    """The ``cam_figures`` written into ``out_dir`` as ``<image stem>-gradcam-<class>.png``."""
    from cxrlab.evaluate.cam import _safe_stem, _unique_name

    drawn = cam_figures(run, image_paths, device, probabilities)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[str] = set()
    for file, name, figure in drawn:
        stem = _unique_name(f"{_safe_stem(file)}-gradcam-{_safe_stem(name)}", taken)
        written.append(figures.save_png(figure, out / f"{stem}.png"))
    return written
