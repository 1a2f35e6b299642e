"""Patient ids and fine labels from Kermany file names.

The public download names files ``person1000_bacteria_2931.jpeg``, ``IM-0115-0001.jpeg`` and
``NORMAL2-IM-0927-0001.jpeg``; one patient can have several images, so splits must keep a
patient's images together.
"""

from __future__ import annotations

import re
from pathlib import Path

_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),
    # Some files carry an extra counter: IM-0640-0001-0001 is still patient IM-0640.
    re.compile(r"^(NORMAL2-IM-\d+)-\d+", re.IGNORECASE),
    re.compile(r"^(IM-\d+)-\d+", re.IGNORECASE),
)
_KERMANY3 = re.compile(r"_(bacteria|virus)_", re.IGNORECASE)


def patient_id(path: str) -> str:
    """The patient a Kermany image belongs to, else the file name without extension."""
    stem = Path(path).stem
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem


def patient_ids(kind: str, files: list[str]) -> list[str]:
    """The patient of each image: from Kermany file names, or, for a MedMNIST .npz (no patient
    ids: ``train#12`` and ``test#12`` are not one patient), each image its own patient."""
    if kind == "npz":
        return [f.rpartition("#")[2] for f in files]  # "train/12": unique per image
    return [patient_id(f) for f in files]


def kermany3_class(path: str, folder_class: str) -> str:
    """NORMAL, BACTERIA or VIRUS for the three-class task, from the folder and the file name."""
    if folder_class.upper() == "NORMAL":
        return "NORMAL"
    match = _KERMANY3.search(Path(path).stem)
    if match is None:
        raise ValueError(f"no _bacteria_ or _virus_ in the file name {Path(path).name}")
    return match.group(1).upper()
