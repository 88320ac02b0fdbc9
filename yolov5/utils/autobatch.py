"""Upstream v6.0 import path `utils.autobatch`: re-exports only; the code is utils/training/autobatch.py."""
from utils.training import autobatch as _real
from utils.training.autobatch import (  # noqa: F401
    DEFAULT_BATCH,
    FRACTION,
    LOGGER,
    TRIAL_BATCHES,
    autobatch,
    measure_peaks,
)
from utils.upstream_call import forward_other_names

__getattr__ = forward_other_names(__name__, _real)
