"""Section A, model selection: the models the study trained, with their size and cost."""

from __future__ import annotations

from collections import Counter

from cxrlab.report.document import Block, Findings, Paragraph, table
from cxrlab.report.study_results import StudyResults

COLUMNS = [
    "model",
    "description",
    "parameters",
    "trained when frozen (head)",
    "GFLOPs at {size} px",
    "ImageNet top-1",
    "ImageNet weights",
    "runs",
]


def section_models(study: StudyResults) -> list[Block]:
    from cxrlab.models.cards import model_cards

    sizes = Counter(r.config.image_size for r in study.runs)
    size = sizes.most_common(1)[0][0]
    cards = model_cards(sorted({r.config.model for r in study.runs}), image_size=size, measure=False)
    count = Counter(r.config.model for r in study.runs)
    rows = [
        [
            c["model"],
            c["description"],
            f"{c['params'] / 1e6:.2f} M",
            f"{c['trainable_frozen']:,}",
            f"{c['gflops']:.3g}",
            f"{c['imagenet_top1']:.1f}%" if c["imagenet_top1"] else "–",
            c["pretrained_weights"],
            count[c["model"]],
        ]
        for c in cards
    ]
    blocks: list[Block] = [
        Paragraph(
            f"The models this study trained, with their size and cost at {size} px, the image size of "
            f"{'its' if len(sizes) == 1 else 'most of its'} runs (GFLOPs: one forward pass of one image; "
            f"a multiply-add counts two)."
        ),
        table("Models", [c.format(size=size) for c in COLUMNS], rows),
    ]
    sentences = []
    if len(cards) > 1:
        small, large = min(cards, key=lambda c: c["gflops"]), max(cards, key=lambda c: c["gflops"])
        sentences.append(
            f"{large['model']} costs {large['gflops'] / max(small['gflops'], 1e-9):.1f}× the compute "
            f"of {small['model']} per image ({large['gflops']:.3g} against {small['gflops']:.3g} GFLOPs "
            f"at {size} px), with {large['params'] / 1e6:.2f} M parameters against "
            f"{small['params'] / 1e6:.2f} M."
        )
    for c in cards:
        if c["trainable_frozen"] and c["pretrained"]:
            sentences.append(
                f"As a fixed feature extractor {c['model']} trains {c['trainable_frozen']:,} of its "
                f"{c['params']:,} parameters ({100 * c['trainable_frozen'] / c['params']:.2f}%)."
            )
    return blocks + [Findings(sentences)] if sentences else blocks
