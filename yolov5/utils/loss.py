"""Upstream v6.0 import path `utils.loss`: re-exports only; the code is utils/training/loss.py."""
from utils.training import loss as _real
from utils.training.loss import (  # noqa: F401
    ComputeLoss,
    FocalLoss,
    LOSS_HYP_KEYS,
    scale_loss_gains,
    smooth_BCE,
)
from utils.upstream_call import forward_other_names

__getattr__ = forward_other_names(__name__, _real)
