"""Per-image costs of each registered model at 128 px, for the study's time estimates
(``cxrlab.study.estimate.COST_MS``): a training step (forward, backward, AdamW) and an
inference pass, in milliseconds of CPU time of one thread per image, so that other jobs on
the machine inflate them little. Prints one line per model and the table as JSON.

    OMP_NUM_THREADS=1 python bench/study_costs.py [--image-size 128] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from cxrlab.models.registry import MODELS, build_model


def per_image_ms(model: torch.nn.Module, images: torch.Tensor, train: bool, repeats: int) -> float:
    targets = torch.zeros(len(images), dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)

    def step() -> None:
        if train:
            loss = F.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                model(images)

    model.train(train)
    step()  # warm-up
    tick = time.process_time()
    for _ in range(repeats):
        step()
    return (time.process_time() - tick) / repeats / len(images) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = {}
    for name in MODELS:
        model = build_model(name).to(memory_format=torch.channels_last)
        images = torch.rand(args.batch_size, 1, args.image_size, args.image_size)
        train = per_image_ms(model, images, True, args.repeats)
        infer = per_image_ms(model, images, False, args.repeats)
        table[name] = (round(train, 1), round(infer, 1))
        print(f"{name}: train {train:.1f} ms, inference {infer:.1f} ms per image", flush=True)
    print(json.dumps({"image_size": args.image_size, "load_average": os.getloadavg(), "cost_ms": table}))


if __name__ == "__main__":
    main()
