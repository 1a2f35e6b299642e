"""Where and how a run executes: the device, seeding, and the record of its environment."""

from __future__ import annotations

import os
import platform
import random
import socket
from importlib import metadata

import numpy as np
import torch

from cxrlab.core.errors import CxrlabError

# Package versions a run records: the ones whose changes can change its numbers.
RECORDED_PACKAGES = ("cxrlab", "torch", "torchvision", "timm", "numpy")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CxrlabError("--device cuda asked for, but no CUDA device is available: use --device cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool, compiling: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if compiling:
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    else:
        # torch.use_deterministic_algorithms also sets the flag in inductor's config, and
        # importing that config loads the whole compiler stack: 2.4 s of CPU time on this
        # 2-core machine, more than a frozen run's training. Runs that do not compile set
        # the flag the eager kernels read, and only that.
        torch._C._set_deterministic_algorithms(deterministic, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not deterministic


def use_channels_last(setting: bool | None) -> bool:
    """channels_last unless switched off: measured on a 2-core CPU (bench/fast_paths.py) 1.5x
    faster training and 1.9x faster inference for EfficientNet-Lite0; GPUs' tensor cores want it too."""
    return setting if setting is not None else True


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the system does not tell)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(device: torch.device, deterministic: bool) -> dict:
    """What a run ran on: package versions (read from their metadata, without importing them),
    the device, threads and host."""
    versions = {name: package_version(name) for name in RECORDED_PACKAGES}
    versions["torch"] = str(torch.__version__)  # the imported build (e.g. "+cpu"), not only the release
    return {
        "cxrlab": versions["cxrlab"],
        "python": platform.python_version(),
        "torch": versions["torch"],
        "torchvision": versions["torchvision"],
        "timm": versions["timm"],
        "numpy": str(np.__version__),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "deterministic": deterministic,
        "host": socket.gethostname(),
    }


def config_record(config, data, weights_id: str, device: torch.device, deterministic: bool) -> dict:
    """``config.yaml``: every resolved setting (a ``TrainConfig``), what the data turned out to
    be (a ``Dataset``), the weights loaded and the environment."""
    record = config.model_dump()
    record["data_info"] = {
        "location": data.location,
        "kind": data.kind,
        "classes": data.classes,
        "fingerprint": data.fingerprint,
        "split_fingerprint": data.split_fingerprint,
        "n": {s: data.count(s) for s in ("train", "val", "test")},
        "split_notes": data.split_notes,
        "skipped_images": data.skipped,
        "ignored_files": len(data.ignored),
    }
    record["weights_id"] = weights_id
    record["environment"] = environment(device, deterministic)
    return record
