"""What a run writes per epoch: a head phase writes kilobytes (the head), never the whole
network, and assembles model.pt once; a network phase writes both files in the background,
in order."""

from __future__ import annotations

import torch

from cxrlab.models.registry import build_model
from cxrlab.models.weights import load_weights
from cxrlab.training import checkpoint, rundir
from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.phases import Selection
from cxrlab.training.rundir import load_tensors


def _record_writes(monkeypatch) -> list[tuple[str, dict]]:
    written: list[tuple[str, dict]] = []
    original = rundir.save_tensors

    def recording(path, payload):
        written.append((path.name, payload))
        original(path, payload)

    monkeypatch.setattr(rundir, "save_tensors", recording)
    monkeypatch.setattr(checkpoint, "save_tensors", recording)
    return written


def _config(root, tmp_path, **settings) -> TrainConfig:
    values = dict(data=str(root), model="resnet18", weights="none", image_size=32, batch_size=16, seed=3)
    return TrainConfig(**{**values, **settings, "out": str(tmp_path / "runs")})


def test_a_frozen_run_writes_the_head_per_epoch_and_the_model_once(tiny_root, tmp_path, monkeypatch):
    written = _record_writes(monkeypatch)
    kept: dict[int, dict] = {}
    offer = Selection.offer

    def remembering(self, epoch, val_loss, val_acc, model):
        improved = offer(self, epoch, val_loss, val_acc, model)
        if improved:
            kept[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        return improved

    monkeypatch.setattr(Selection, "offer", remembering)
    run_dir = fit(_config(tiny_root, tmp_path, mode="frozen", epochs=5, name="frozen"), show_progress=False)

    names = [name for name, _ in written]
    assert names.count("last.pt") == 5 and names.count("model.pt") == 1  # not again when the run ends
    for name, payload in written:
        if name == "last.pt":  # the head and its optimiser, no backbone tensor
            assert "model" not in payload and set(payload["head"]) == {"weight", "bias"}
            assert all(not k.startswith("backbone.") for k in payload["best_head"])
    # model.pt is the best epoch's weights: the untouched backbone and the kept head.
    saved = load_tensors(run_dir / "model.pt")
    best = kept[saved["meta"]["epoch"]]
    assert all(torch.equal(saved["state_dict"][k], best[k]) for k in best)
    torch.manual_seed(3)  # the run's seed, as fit seeds before building the model
    fresh = build_model("resnet18")
    load_weights(fresh, "resnet18", "none")
    backbone = {k: v for k, v in saved["state_dict"].items() if k.startswith("backbone.")}
    assert all(torch.equal(backbone[k], v) for k, v in fresh.state_dict().items() if k.startswith("backbone."))


def test_a_network_phase_writes_whole_checkpoints_in_order(tiny_root, tmp_path, monkeypatch):
    written = _record_writes(monkeypatch)
    fit(_config(tiny_root, tmp_path, mode="finetune", epochs=3, name="finetune"), show_progress=False)
    last = [payload for name, payload in written if name == "last.pt"]
    assert [p["epochs_done"] for p in last] == [1, 2, 3]
    assert all(p["kind"] == "network" and "model" in p for p in last)
    # Each improvement's model.pt is handed over before the last.pt that names it as best.
    order = [(name, p["meta"]["epoch"] if name == "model.pt" else p["best_epoch"]) for name, p in written]
    for i, (name, best_epoch) in enumerate(order):
        if name == "last.pt" and best_epoch:
            assert ("model.pt", best_epoch) in order[:i]
    kept_epochs = [epoch for name, epoch in order if name == "model.pt"]
    assert kept_epochs == sorted(set(kept_epochs)), "each kept epoch written once, none again at the end"
