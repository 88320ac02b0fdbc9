"""Seeding and determinism switches; per-epoch seeds for exact resume.

init_seeds follows v6.0: Python `random`, numpy and torch are seeded;
cuDNN autotuning is off and cuDNN deterministic on for seed 0 (single-process runs, where upstream
wants reproducibility). `deterministic=True` adds v6.2's switch (#8213): torch deterministic
algorithms (warn-only, so an op without a deterministic kernel warns instead of aborting a run),
the cuBLAS workspace setting deterministic GEMMs need, and PYTHONHASHSEED for child processes.

torch.manual_seed seeds the generators of every device type; per-device extras are the device
layer's business (utils/device/devices.py), so this module names no accelerator.

Exact resume needs no saved generator state: the trainer reseeds every epoch from
epoch_seed(seed, epoch, rank).
"""
import os
import random

import numpy as np
import torch


def epoch_seed(seed, epoch, rank=-1):
    """Seed of one epoch on one rank: distinct for every (seed, epoch, rank), independent of history."""
    return (int(seed) * 1_000_003 + int(epoch)) * 1009 + max(int(rank), 0)


def init_seeds(seed=0, deterministic=False):
    """Seed random, numpy and torch with `seed`; set cuDNN / determinism flags (see module doc)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    reproducible = deterministic or seed == 0
    torch.backends.cudnn.benchmark = not reproducible
    torch.backends.cudnn.deterministic = reproducible
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        os.environ["PYTHONHASHSEED"] = str(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
