"""Upstream v6.0 import path `utils.callbacks`: re-exports only; the code is utils/training/callbacks.py."""
from utils.training import callbacks as _real
from utils.training.callbacks import (  # noqa: F401
    Callbacks,
    HOOKS,
)
from utils.upstream_call import forward_other_names

__getattr__ = forward_other_names(__name__, _real)
