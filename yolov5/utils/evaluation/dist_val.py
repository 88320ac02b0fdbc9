"""Validation split over DDP ranks: each rank runs whole batches of the validation loader, and the
per-image statistics come together in the order a single process would have produced them.

Rank r takes batches r, r + W, r + 2W, ... of the same batching a single process uses (with
rectangular batches an image's padded shape depends on its batch), so every image goes through
the model exactly as it would alone; the statistics are then sorted back into that batch order and
the per-batch losses summed in it, so P, R, mAP and the losses equal a single-process validation
on the same weights.
"""
import math
from typing import List, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from utils.data.loaders import seed_worker


class Shard(NamedTuple):
    rank: int
    world_size: int
    batches: List[int]  # global batch numbers this rank runs, in order
    total_batches: int


class ShardedBatchSampler:
    def __init__(self, n, batch_size, rank, world_size):
        self.n, self.batch_size = n, batch_size
        self.batches = list(range(rank, math.ceil(n / batch_size), world_size))

    def __iter__(self):
        for b in self.batches:
            yield list(range(b * self.batch_size, min(self.n, (b + 1) * self.batch_size)))

    def __len__(self):
        return len(self.batches)


def shard_loader(loader, rank, world_size):
    """A loader over `loader`'s dataset holding this rank's share of its batches (`.shard` says which)."""
    dataset, bs = loader.dataset, loader.batch_size
    sampler = ShardedBatchSampler(len(dataset), bs, rank, world_size)
    out = DataLoader(dataset, batch_sampler=sampler, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                     collate_fn=loader.collate_fn, worker_init_fn=seed_worker)
    out.shard = Shard(rank, world_size, sampler.batches, math.ceil(len(dataset) / bs))
    return out


def broadcast_weights(module, src=0):
    """Every rank's `module` gets rank src's weights and buffers (one broadcast per tensor)."""
    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src)


def combine(shard, stats, keys, seen, batch_losses, matrix):
    """All ranks' statistics in single-process order: (stats, seen, loss sums (3,), confusion matrix)."""
    local = {"stats": [tuple(_np(x) for x in s[:3]) + (list(s[3]),) for s in stats], "keys": keys, "seen": seen,
             "losses": [(b, _np(x)) for b, x in zip(shard.batches, batch_losses)], "matrix": matrix}
    parts = [None] * shard.world_size
    dist.all_gather_object(parts, local)
    order = sorted((k, r, j) for r, p in enumerate(parts) for j, k in enumerate(p["keys"]))
    stats = [parts[r]["stats"][j] for _, r, j in order]
    losses = sorted(((b, x) for p in parts for b, x in p["losses"]), key=lambda bx: bx[0])
    total = torch.zeros(3)
    for _, x in losses:  # fp32 sums in batch order, as a single process adds them up
        total += torch.from_numpy(x).float()
    return stats, sum(p["seen"] for p in parts), total, sum(p["matrix"] for p in parts)


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
