"""utils/seeds: seeding and determinism flags."""
import random

import numpy as np
import pytest
import torch

from utils.training.seeds import init_seeds


@pytest.fixture
def preserved_global_flags():
    """Leave torch's global determinism flags and the global generators as we found them."""
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[:2]
    torch.use_deterministic_algorithms(flags[2], warn_only=flags[3])
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


def draws():
    return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), float(np.random.randn()),
            torch.rand(3).tolist(), torch.randn(2).tolist())


def test_same_seed_same_draws_different_seed_different(preserved_global_flags):
    init_seeds(7)
    a = draws()
    init_seeds(7)
    assert draws() == a
    init_seeds(8)
    assert draws() != a


def test_seed_zero_is_cudnn_deterministic_others_benchmark(preserved_global_flags):
    init_seeds(0)
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    init_seeds(1)
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_switches_on_deterministic_algorithms(preserved_global_flags, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    init_seeds(3, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    import os
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and os.environ["PYTHONHASHSEED"] == "3"
