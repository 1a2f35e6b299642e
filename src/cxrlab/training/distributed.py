"""One run on many processes: DistributedDataParallel under torchrun.

``torchrun --nproc_per_node N -m cxrlab train ... --distributed`` starts N processes; each
reads its own shard of every epoch's shuffled training images straight from the shared
memory-mapped cache, gradients are averaged by DDP (gloo on CPU, nccl on GPU), and only
rank 0 writes the run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from cxrlab.core.errors import CxrlabError

_CPU = torch.device("cpu")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    # Where collectives exchange tensors: NCCL takes CUDA tensors only, gloo CPU ones.
    device: torch.device = _CPU

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Ranks()


def init_ranks(device: torch.device) -> Ranks:
    """Join the process group torchrun set up (its environment names the rank and world).

    On CUDA each process first binds its own GPU (``LOCAL_RANK``): NCCL's collectives, the
    object broadcast of the run id among them, run on the current device, and without the
    binding every rank would talk through GPU 0."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise CxrlabError(
            "--distributed runs under torchrun: torchrun --nproc_per_node N -m cxrlab train ... --distributed"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=device)


def shard(indices: np.ndarray, ranks: Ranks) -> np.ndarray:
    """This rank's share of an epoch's shuffled indices; every rank gets the same count so
    that all take the same number of steps (DDP needs every rank at every all-reduce)."""
    if not ranks.enabled:
        return indices
    per_rank = len(indices) // ranks.world
    return indices[ranks.rank * per_rank : (ranks.rank + 1) * per_rank]


def same_text_everywhere(text: str, ranks: Ranks) -> str:
    """Rank 0's ``text`` on every rank (e.g. the run id, which holds a time stamp)."""
    if not ranks.enabled:
        return text
    box = [text]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(model: torch.nn.Module, ranks: Ranks) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics). DDP broadcasts them
    before each forward pass, but the last pass of an epoch updates each rank's copy from its
    own shard; syncing here keeps validation and the kept checkpoint the same everywhere."""
    if ranks.enabled:
        for buffer in model.buffers():
            if buffer.device == ranks.device:
                dist.broadcast(buffer, src=0)
            else:  # a buffer kept off the collective's device travels through a copy
                shared = buffer.to(ranks.device)
                dist.broadcast(shared, src=0)
                buffer.copy_(shared)


def weights_agree(model: torch.nn.Module, ranks: Ranks) -> bool:
    """Whether every rank ended with bit-identical weights (a check DDP should always pass)."""
    if not ranks.enabled:
        return True
    flat = torch.cat([t.detach().float().reshape(-1) for t in model.state_dict().values()]).to(ranks.device)
    gathered = [torch.zeros_like(flat) for _ in range(ranks.world)]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def shutdown(ranks: Ranks) -> None:
    if ranks.enabled and dist.is_initialized():
        dist.destroy_process_group()
