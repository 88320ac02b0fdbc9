"""utils/seeds: seeding, determinism flags, and exact capture/restore of RNG state."""
import random

import numpy as np
import pytest
import torch

from utils.errors import UserError
from utils.seeds import capture_rng_state, init_seeds, restore_rng_state


@pytest.fixture
def preserved_global_flags():
    """Leave torch's global determinism flags as we found them."""
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    state = capture_rng_state()
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[:2]
    torch.use_deterministic_algorithms(flags[2], warn_only=flags[3])
    restore_rng_state(state)


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


def test_restore_reproduces_the_same_draws(preserved_global_flags):
    init_seeds(123)
    np.random.randn()  # odd number of legacy normals: numpy holds a cached gaussian
    random.gauss(0, 1)  # python holds gauss_next too
    state = capture_rng_state()
    expected = draws()
    draws()  # move on
    restore_rng_state(state)
    assert draws() == expected


def test_state_survives_a_weights_only_checkpoint_round_trip(tmp_path, preserved_global_flags):
    init_seeds(5)
    np.random.randn()
    state = capture_rng_state()
    expected = draws()
    path = tmp_path / "rng.pt"
    torch.save({"rng": state}, path)
    loaded = torch.load(path, weights_only=True)["rng"]  # only plain types and tensors inside
    draws()
    restore_rng_state(loaded)
    assert draws() == expected


def test_malformed_state_is_a_user_error(preserved_global_flags):
    with pytest.raises(UserError, match="malformed.*found \\['python', 'torch'\\]"):
        restore_rng_state({"python": random.getstate(), "torch": torch.get_rng_state()})
    with pytest.raises(UserError, match="malformed"):
        restore_rng_state([1, 2, 3])
