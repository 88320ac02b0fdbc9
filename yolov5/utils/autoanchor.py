"""Upstream v6.0 import path `utils.autoanchor`: re-exports only; the code is utils/training/autoanchor.py."""
from utils.training import autoanchor as _real
from utils.training.autoanchor import (  # noqa: F401
    BPR_GOOD_ENOUGH,
    LOGGER,
    PREFIX,
    anchor_metrics,
    check_anchors,
    kmean_anchors,
    label_wh,
)
from utils.upstream_call import forward_other_names

__getattr__ = forward_other_names(__name__, _real)
