"""Section F's layer similarity: linear CKA by depth, read from what ``cxrlab similarity`` wrote
into the study directory (``similarity.json`` in the study folder or a folder directly under
it). Computing it needs the data and every network run over the probe images, which a report
does not redo; where the study holds none, the section gives the command that writes it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from cxrlab.core.text import slug
from cxrlab.evaluate.layer_figures import save_png, similarity_figure
from cxrlab.evaluate.similarity import Similarity
from cxrlab.report import transfer_findings
from cxrlab.report.document import Block, Figure, Findings, Paragraph, Subheading, table
from cxrlab.report.transfer_runs import PARTIAL, RANDOM, STATS, TransferResults

RESULTS_NAME = "similarity.json"


def similarity_results(study_dir: Path) -> tuple[list[tuple[Path, list[Similarity]]], list[str]]:
    """``([(file, comparisons)], [unreadable file names])`` of the study's similarity.json files."""
    found, unreadable = [], []
    candidates = [study_dir / RESULTS_NAME, *sorted(study_dir.glob(f"*/{RESULTS_NAME}"))]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            comparisons = [Similarity(**c) for c in json.loads(path.read_text(encoding="utf-8"))["comparisons"]]
        except (OSError, ValueError, KeyError, TypeError):
            unreadable.append(str(path.relative_to(study_dir)))
            continue
        if comparisons and all(len(c.layers) == len(c.cka) for c in comparisons):
            found.append((path, comparisons))
        else:
            unreadable.append(str(path.relative_to(study_dir)))
    return found, unreadable


def similarity_blocks(transfer: TransferResults, out: Path) -> list[Block]:
    found, unreadable = similarity_results(transfer.study_dir)
    command = similarity_command(transfer)
    if not found and command is None:
        return []
    blocks: list[Block] = [Subheading("Layer similarity")]
    if unreadable:
        blocks.append(Paragraph(f"Not read (not a similarity.json cxrlab wrote): {', '.join(unreadable)}."))
    if not found:
        blocks.append(
            Paragraph(
                "The study directory holds no layer similarity. To add it (linear CKA per stage on validation probe "
                f"images), run `{command}` and write the report again."
            )
        )
        return blocks
    for path, comparisons in found:
        where = path.parent.relative_to(transfer.study_dir)
        name = "study" if str(where) == "." else str(where)
        figure = save_png(similarity_figure(comparisons), out / f"transfer-similarity-{slug(name)}.png")
        first = comparisons[0]
        blocks.append(Findings(transfer_findings.similarity_findings(comparisons)))
        blocks.append(
            Figure(
                figure,
                f"Linear CKA ({first.estimator} estimator) of each network's activations with {first.reference}'s, "
                f"stage by stage, on {first.probes} {first.split} images at {first.image_size} px "
                f"(from {path.relative_to(transfer.study_dir)}).",
            )
        )
        cells = [[layer, *[f"{c.cka[i]:.3f}" for c in comparisons]] for i, layer in enumerate(first.layers)]
        blocks.append(
            table(f"Linear CKA with {first.reference} by depth", ["layer", *[c.other for c in comparisons]], cells)
        )
    return blocks


def similarity_command(transfer: TransferResults) -> str | None:
    """The ``cxrlab similarity`` line that compares the first model's pretrained network before
    training with its pretrained fine-tune and its other starts; None without a pretrained
    fine-tune."""
    for model in transfer.models:
        reference = transfer.pretrained(model)
        if reference is None:
            continue
        others = [reference] + [r for kind in (STATS, PARTIAL, RANDOM) for r in transfer.of(model, kind)]
        others = [r for r in others if r.config.model == model]
        words = ["cxrlab", "similarity", f"{model}@{reference.config.weights}"]
        words += [str(r.path) for r in others]
        words += ["--data", reference.config.data, "--out", str(transfer.study_dir / "similarity")]
        return " ".join(shlex.quote(w) for w in words)
    return None
