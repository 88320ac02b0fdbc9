"""Upstream v6.0 import path `utils.metrics`: re-exports only; the code is utils/evaluation/metrics.py."""
from utils.evaluation import metrics as _real
from utils.evaluation.metrics import (  # noqa: F401
    CURVE_POINTS,
    ConfusionMatrix,
    EPS,
    FITNESS_WEIGHTS,
    LOGGER,
    ap_per_class,
    compute_ap,
    fitness,
    match_predictions,
    smooth,
    summarize_stats,
)
from utils.upstream_call import forward_other_names

__getattr__ = forward_other_names(__name__, _real)
