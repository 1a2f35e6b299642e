"""Layer similarity: linear CKA per stage between two networks' activations on a probe set.

Where in a network are the pretrained features reused? Comparing the activations of, say,
the pretrained backbone and the same backbone after fine-tuning, stage by stage, answers
it: a stage whose representation barely moved has a CKA near 1 (Kornblith et al. 2019).

A stage's activations on ``n`` probe images are flattened to an ``n x p`` matrix; p runs
to hundreds of thousands for early stages, so CKA is computed from ``b x b`` Gram matrices
of mini-batches (Nguyen et al. 2021): the unbiased HSIC estimator (Song et al. 2012) summed
over batches, ``CKA = sum HSIC(K, L) / sqrt(sum HSIC(K, K) * sum HSIC(L, L))``. Memory holds
one batch of activations at a time, whatever the probe set's size. ``estimator="biased"``
with a single batch is Kornblith's linear CKA, ``||Y'X||^2 / (||X'X|| ||Y'Y||)`` on
column-centred matrices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrlab.core.errors import CxrlabError
from cxrlab.data.batches import image_batches
from cxrlab.data.dataset import Dataset, load_dataset
from cxrlab.data.transforms import to_float
from cxrlab.models.initialise import initialise
from cxrlab.models.registry import Classifier, backbone_stages, build_model
from cxrlab.models.stages import Stages
from cxrlab.training.records import RunRecord, load_run

# --- CKA on Gram matrices ------------------------------------------------------------------


def gram(x: torch.Tensor) -> torch.Tensor:
    """The linear kernel ``x x'`` of rows ``x`` (flattened to ``(n, p)``), in float64: the
    product in float32 for network activations, in float64 when they are given so."""
    x = x.reshape(x.shape[0], -1)
    x = x if x.dtype == torch.float64 else x.float()
    return (x @ x.T).double()


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> float:  # noqa: E741 - the literature's name
    """Song et al.'s unbiased HSIC estimator of two ``n x n`` Gram matrices (n >= 4)."""
    n = k.shape[0]
    if n < 4:
        raise ValueError("the unbiased HSIC estimator needs 4 or more examples")
    k, l = k.clone().fill_diagonal_(0), l.clone().fill_diagonal_(0)  # noqa: E741
    ones_k, ones_l = k.sum(0), l.sum(0)
    term = torch.sum(k * l) + ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2)) - 2 * (ones_k @ ones_l) / (n - 2)
    return float(term / (n * (n - 3)))


def hsic_biased(k: torch.Tensor, l: torch.Tensor) -> float:  # noqa: E741
    """``tr(K H L H) / (n - 1)^2`` with the centring matrix ``H``."""
    n = k.shape[0]
    h = torch.eye(n, dtype=k.dtype) - 1.0 / n
    return float(torch.trace(k @ h @ l @ h) / (n - 1) ** 2)


ESTIMATORS = {"unbiased": hsic_unbiased, "biased": hsic_biased}


@dataclass
class CkaAccumulator:
    """Sums of HSIC terms per layer over mini-batches; ``values()`` is CKA per layer."""

    layers: int
    estimator: str = "unbiased"
    xy: np.ndarray = field(init=False)
    xx: np.ndarray = field(init=False)
    yy: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.xy, self.xx, self.yy = np.zeros(self.layers), np.zeros(self.layers), np.zeros(self.layers)

    def add(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
        """One mini-batch: the activations of each layer of the two networks, same images."""
        self.add_grams([gram(x) for x in a], [gram(y) for y in b])

    def add_grams(self, ks: list[torch.Tensor], ls: list[torch.Tensor]) -> None:
        """One mini-batch given by its Gram matrices, one per layer of each network."""
        hsic = ESTIMATORS[self.estimator]
        for i, (k, l) in enumerate(zip(ks, ls)):  # noqa: E741
            self.xy[i] += hsic(k, l)
            self.xx[i] += hsic(k, k)
            self.yy[i] += hsic(l, l)

    def values(self) -> list[float]:
        denominator = np.sqrt(np.clip(self.xx, 0, None) * np.clip(self.yy, 0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            return [float(v) for v in np.where(denominator > 0, self.xy / denominator, np.nan)]


def linear_cka(x: torch.Tensor, y: torch.Tensor, estimator: str = "unbiased") -> float:
    """CKA of two activation matrices of the same examples, in one batch."""
    accumulator = CkaAccumulator(1, estimator)
    accumulator.add([x], [y])
    return accumulator.values()[0]


# --- networks and probes ----------------------------------------------------------------------


@dataclass
class Network:
    label: str  # as figures name it: the run directory's name, or MODEL@WEIGHTS
    model: Classifier
    name: str  # registry name
    run: RunRecord | None = None  # when it came from a run directory


def load_network(spec: str) -> Network:
    """A run directory's selected checkpoint, or ``MODEL@WEIGHTS`` (e.g.
    ``efficientnet_lite0@imagenet``, ``efficientnet_lite0@imagenet-stats``): the network as
    it starts, before any training (random draws of seed 0)."""
    path = Path(spec)
    if (path / "config.yaml").exists():
        run = load_run(path)
        return Network(path.name, run.load_model(), run.config.model, run)
    if "@" not in spec:
        raise CxrlabError(
            f"{spec}: not a run directory (no config.yaml) nor MODEL@WEIGHTS (e.g. efficientnet_lite0@imagenet)"
        )
    name, weights = spec.rsplit("@", 1)
    torch.manual_seed(0)
    model = build_model(name)
    initialise(model, name, weights, seed=0)
    return Network(spec, model.eval(), name)


def probe_indices(data: Dataset, split: str, count: int, seed: int = 0) -> np.ndarray:
    """``count`` images of ``split`` drawn with a fixed seed (all of them when fewer), sorted."""
    indices = data.indices(split) if split != "all" else np.arange(len(data.paths))
    if len(indices) < 4:
        raise CxrlabError(f"the {split} split holds {len(indices)} images: CKA needs 4 or more probes")
    chosen = np.random.default_rng(seed).permutation(len(indices))[: min(count, len(indices))]
    return np.sort(indices[chosen])


def stage_grams(model: Classifier, stages: Stages, images: torch.Tensor) -> list[torch.Tensor]:
    """The Gram matrices of the stem's, every stage's and the pooled output for a batch of
    ``(B, 1, H, W)`` images; only one stage's output is held at a time."""
    x = stages.stem(model.normalize(images))
    grams = [gram(x)]
    for block in stages.blocks:
        x = block(x)
        grams.append(gram(x))
    grams.append(gram(stages.pool(x)))
    return grams


def layer_names(stages: Stages) -> list[str]:
    return ["stem", *stages.names, "pooled"]


@dataclass
class Similarity:
    reference: str
    other: str
    layers: list[str]
    cka: list[float]
    probes: int
    image_size: int
    split: str
    estimator: str
    seconds: float

    def as_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@torch.inference_mode()
def layer_similarity(
    reference: Network,
    others: list[Network],
    data: Dataset,
    probes: np.ndarray,
    *,
    split: str = "val",
    batch_size: int = 32,
    estimator: str = "unbiased",
) -> list[Similarity]:
    """CKA per layer of ``reference`` against each of ``others`` on the ``probes`` images.

    Every network runs once over the probes, one mini-batch at a time, and keeps only the
    batch's ``b x b`` Gram matrices; the batches are cut near-equal (none under 4 images, as
    the unbiased estimator needs)."""
    started = time.perf_counter()
    networks = [reference, *others]
    stages = [_sequential_stages(n) for n in networks]
    counts = {len(s.blocks) for s in stages}
    if len(counts) != 1:
        raise CxrlabError(
            "CKA by depth pairs stage with stage: "
            + ", ".join(f"{n.label} has {len(s.blocks)}" for n, s in zip(networks, stages))
        )
    for network in networks:
        network.model.eval()
    layers = layer_names(stages[0])
    accumulators = [CkaAccumulator(len(layers), estimator) for _ in others]
    batches = np.array_split(probes, max(1, len(probes) // max(4, batch_size)))
    for pixels, _, _ in image_batches(data.images, None, batches, torch.device("cpu")):
        images = to_float(pixels)
        first = stage_grams(reference.model, stages[0], images)
        for accumulator, network, network_stages in zip(accumulators, others, stages[1:]):
            accumulator.add_grams(first, stage_grams(network.model, network_stages, images))
    seconds = round(time.perf_counter() - started, 3)
    return [
        Similarity(
            reference.label, n.label, layers, a.values(), len(probes), data.image_size, split, estimator, seconds
        )
        for n, a in zip(others, accumulators)
    ]


def _sequential_stages(network: Network) -> Stages:
    stages = backbone_stages(network.model, network.name)
    if not stages.sequential:
        raise CxrlabError(f"{network.name}: its stages are not known to run in sequence; use a registry model")
    return stages


def probe_dataset(data: str, image_size: int, reference: Network, show_progress: bool = True) -> Dataset:
    """``data`` decoded at ``image_size``, split as the run ``reference`` split it (when it is one)."""
    if reference.run is None:
        return load_dataset(data, image_size, show_progress=show_progress)
    config = reference.run.config
    return load_dataset(
        data,
        image_size,
        show_progress=show_progress,
        split_seed=config.split_seed,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        labels=config.labels,
    )


def first_convolution(network: Network) -> nn.Conv2d:
    """The first convolution the images meet (the stem's), for the filter picture."""
    try:
        where = backbone_stages(network.model, network.name).stem
    except CxrlabError:
        where = network.model.backbone
    for module in [*where.modules(), *network.model.backbone.modules()]:
        if isinstance(module, nn.Conv2d):
            return module
    raise CxrlabError(f"{network.label} has no convolution")
