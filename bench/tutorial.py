"""The reference pipeline: the PyTorch transfer-learning tutorial, the way people copy it.

https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html: torchvision
``ImageFolder`` over ``train/`` and ``val/``, per-image PIL transforms (RandomResizedCrop,
RandomHorizontalFlip, ToTensor, Normalize; Resize and CenterCrop for val) run in DataLoader
worker processes (``num_workers=4``, the tutorial's), and the tutorial's plain loop: every
epoch a train phase and a val phase, SGD with momentum, StepLR, the best weights by val
accuracy kept in memory. Its fixed feature extractor sets ``requires_grad = False`` on the
backbone and trains a new head, so the whole frozen network still runs forward on every
image, every epoch, and every JPEG is decoded again every epoch.

The network is cxrlab's (``build_model`` + ``load_weights``), so architecture and weights
are the same on both sides; here it is called the tutorial's way, on three-channel images
normalised per image by the transforms (the same numbers cxrlab's model computes inside).
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets, transforms

from cxrlab.models.registry import Classifier, build_model, model_entry
from cxrlab.models.weights import load_weights

TUTORIAL_WORKERS = 4  # the tutorial's DataLoader(num_workers=4)
# On a 2-core machine torch warns at every loader that 4 workers exceed the cores; the
# tutorial's setting is what is measured, so the warning says nothing new.
warnings.filterwarnings("ignore", message="This DataLoader will create")


class TutorialNet(nn.Module):
    """cxrlab's backbone and head, fed three-channel images already normalised."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.backbone = classifier.backbone
        self.head = classifier.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def data_transforms(image_size: int, mean, std) -> dict[str, transforms.Compose]:
    """The tutorial's transforms, at ``image_size`` instead of 224 (val resizes to 256/224 of it)."""
    return {
        "train": transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        ),
        "val": transforms.Compose(
            [
                transforms.Resize(round(image_size * 256 / 224)),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        ),
    }


def dataloaders(
    folder: str | Path,
    image_size: int,
    batch_size: int,
    workers: int = TUTORIAL_WORKERS,
    model_name: str = "efficientnet_lite0",
) -> dict[str, torch.utils.data.DataLoader]:
    """ImageFolder + DataLoader for ``folder/train`` and ``folder/val``, as in the tutorial."""
    entry = model_entry(model_name)
    tfs = data_transforms(image_size, entry.mean, entry.std)
    image_datasets = {x: datasets.ImageFolder(str(Path(folder) / x), tfs[x]) for x in ("train", "val")}
    return {
        x: torch.utils.data.DataLoader(image_datasets[x], batch_size=batch_size, shuffle=True, num_workers=workers)
        for x in ("train", "val")
    }


def tutorial_model(
    model_name: str, weights: str, num_classes: int, fixed_feature_extractor: bool
) -> tuple[TutorialNet, torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    """The network, its optimizer and schedule: fine-tune everything, or freeze all but the head."""
    classifier = build_model(model_name, num_classes=num_classes)
    load_weights(classifier, model_name, weights)
    model = TutorialNet(classifier)
    if fixed_feature_extractor:
        for param in model.parameters():
            param.requires_grad = False
        for param in model.head.parameters():  # the tutorial's new nn.Linear, trainable
            param.requires_grad = True
        optimizer = torch.optim.SGD(model.head.parameters(), lr=0.001, momentum=0.9)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    return model, optimizer, scheduler


def train_model(
    model, loaders, criterion, optimizer, scheduler, num_epochs: int, device: torch.device
) -> tuple[nn.Module, list[dict]]:
    """The tutorial's ``train_model``, returning the per-epoch record instead of printing it."""
    best_model_wts = copy.deepcopy(model.state_dict())
    best_acc = 0.0
    history = []
    for epoch in range(num_epochs):
        tick = time.perf_counter()
        row: dict = {"epoch": epoch + 1}
        for phase in ("train", "val"):
            if phase == "train":
                model.train()
            else:
                model.eval()
            running_loss, running_corrects = 0.0, 0
            for inputs, labels in loaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += int(torch.sum(preds == labels.data))
            if phase == "train":
                scheduler.step()
            n = len(loaders[phase].dataset)
            row[f"{phase}_loss"], row[f"{phase}_acc"] = running_loss / n, running_corrects / n
            if phase == "val" and row["val_acc"] > best_acc:
                best_acc = row["val_acc"]
                best_model_wts = copy.deepcopy(model.state_dict())
        row["seconds"] = time.perf_counter() - tick
        history.append(row)
    model.load_state_dict(best_model_wts)
    return model, history


def run_tutorial(
    folder: str | Path,
    *,
    fixed_feature_extractor: bool,
    epochs: int,
    image_size: int,
    batch_size: int,
    weights: str = "imagenet",
    workers: int = TUTORIAL_WORKERS,
    model_name: str = "efficientnet_lite0",
    seed: int = 0,
) -> dict:
    """One tutorial training, timed: wall seconds (data sets, loaders, model and all epochs)
    and the per-epoch record."""
    # The tutorial never switches deterministic algorithms on; a cxrlab run earlier in this
    # process (CPU default: on) would otherwise leave them on for this side too.
    torch.use_deterministic_algorithms(False)
    torch.manual_seed(seed)
    tick = time.perf_counter()
    loaders = dataloaders(folder, image_size, batch_size, workers, model_name)
    num_classes = len(loaders["train"].dataset.classes)
    model, optimizer, scheduler = tutorial_model(model_name, weights, num_classes, fixed_feature_extractor)
    model, history = train_model(
        model, loaders, nn.CrossEntropyLoss(), optimizer, scheduler, epochs, torch.device("cpu")
    )
    return {
        "wall_seconds": time.perf_counter() - tick,
        "epoch_seconds": [row["seconds"] for row in history],
        "n_train": len(loaders["train"].dataset),
        "n_val": len(loaders["val"].dataset),
        "train_images_per_epoch": len(loaders["train"].dataset),
        "history": history,
    }


def main(argv: list[str] | None = None) -> dict:
    """``python bench/tutorial.py FOLDER --mode frozen|finetune ...``: the tutorial as a command,
    so that it is timed from outside like ``cxrlab train`` (bench/commands.py)."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(description="The PyTorch transfer-learning tutorial's pipeline on FOLDER/{train,val}.")
    p.add_argument("folder")
    p.add_argument("--mode", choices=("frozen", "finetune"), default="finetune")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--model", default="efficientnet_lite0")
    args = p.parse_args(argv if argv is not None else sys.argv[1:])
    result = run_tutorial(
        args.folder,
        fixed_feature_extractor=args.mode == "frozen",
        epochs=args.epochs,
        image_size=args.image_size,
        batch_size=args.batch_size,
        weights=args.weights,
        model_name=args.model,
    )
    summary = {k: result[k] for k in ("wall_seconds", "epoch_seconds", "n_train", "n_val")}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
