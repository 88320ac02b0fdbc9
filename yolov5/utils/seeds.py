"""Seeding, determinism switches, and saving/restoring random-number state for exact resume.

init_seeds follows v6.0: Python `random`, numpy and torch are seeded;
cuDNN autotuning is off and cuDNN deterministic on for seed 0 (single-process runs, where upstream
wants reproducibility). `deterministic=True` adds v6.2's switch (#8213): torch deterministic
algorithms (warn-only, so an op without a deterministic kernel warns instead of aborting a run),
the cuBLAS workspace setting deterministic GEMMs need, and PYTHONHASHSEED for child processes.

torch.manual_seed seeds the generators of every device type; per-device extras are the device
layer's business (utils/devices.py), so this module names no accelerator.

RNG states are captured as plain Python values and CPU tensors (no numpy objects), so they travel
inside checkpoints that the allow-list loader accepts.
"""
import os
import random

import numpy as np
import torch

from utils.errors import UserError

RNG_STATE_KEYS = ("python", "numpy", "torch")


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


def capture_rng_state():
    """The state of Python's, numpy's and torch's (CPU) global generators as a picklable dict."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),  # (version, tuple of 625 ints, gauss_next)
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state):
    """Put the generators back exactly where `capture_rng_state` found them."""
    if not isinstance(state, dict) or any(k not in state for k in RNG_STATE_KEYS):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise UserError(f"saved random-number state is malformed: expected keys {list(RNG_STATE_KEYS)}, "
                        f"found {found}; the checkpoint is damaged or from another program")
    python = state["python"]
    # Pickling may turn the tuples into lists; random.setstate needs tuples.
    random.setstate((python[0], tuple(python[1]), python[2]))
    n = state["numpy"]
    np.random.set_state({
        "bit_generator": n["bit_generator"],
        "state": {"key": np.asarray(n["key"], dtype=np.int64).astype(np.uint32), "pos": int(n["pos"])},
        "has_gauss": int(n["has_gauss"]),
        "gauss": float(n["gauss"]),
    })
    torch.set_rng_state(state["torch"].cpu() if isinstance(state["torch"], torch.Tensor)
                        else torch.tensor(state["torch"], dtype=torch.uint8))
