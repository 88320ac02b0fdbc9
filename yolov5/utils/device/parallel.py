"""Seeing through DataParallel / DistributedDataParallel wrappers.

Anything that reads model attributes (EMA, AutoAnchor, checkpoints) must look at the bare model:
the wrapper hides attributes such as `yaml`, `stride` and the Detect layer behind `.module`.
"""
import contextlib
import os

import torch.nn as nn

_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)


def is_parallel(model):
    """True if `model` is wrapped by DataParallel or DistributedDataParallel."""
    return isinstance(model, _WRAPPERS)


def de_parallel(model):
    """The bare model: `model.module` for a DP/DDP wrapper, else `model` itself."""
    return model.module if is_parallel(model) else model


def grad_sync(model, sync):
    """Context for one forward/backward: with sync False, DDP skips its gradient all-reduce (the
    gradients accumulate locally until a batch that steps the optimizer); otherwise a no-op."""
    if not sync and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def global_rank(local_rank, world_size):
    """This process's rank among all nodes (torchrun's RANK); the local rank on one node, -1 without DDP.

    Whatever happens once per run (run directory, checkpoints, logs) belongs to global rank 0: with
    several nodes, every node has a local rank 0."""
    if world_size <= 1:
        return local_rank
    return int(os.environ.get("RANK", local_rank))
