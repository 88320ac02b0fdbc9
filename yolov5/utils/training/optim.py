"""Optimizer, learning-rate schedule, warmup and gradient accumulation of the YOLOv5 trainer.

Behaviour of upstream v6.0 train.py (optimizer groups, LR schedule, warmup), with these choices:

* Parameter groups keep the v6.0 ORDER: 0 = norm-layer weights (no decay), 1 = other weights
  (decay), 2 = biases (no decay). results.csv's x/lr0..x/lr2 and v6.0 optimizer state_dicts depend
  on it, so v6.2's re-ordering (biases first) is not followed.
* Grouping follows the v7.0 fix (#9817): every parameter that is neither a bias nor a norm-layer
  weight is decayed. v6.0 only looked at attributes literally called `weight`/`bias`, so extra
  parameters (e.g. nn.MultiheadAttention's in_proj_*) were silently left out of the optimizer.
  For the standard models the groups are identical (yolov5s: 57 / 60 / 60).
* `--linear-lr` uses v6.1's lf(x) = (1 - x/epochs)(1 - lrf) + lrf. v6.0 divided by (epochs - 1),
  which crashes with --epochs 1 (0/0) and never reaches lrf, unlike the cosine schedule.
* Past `--epochs` (only `--iters` trains there) both schedules hold their final value lrf, so
  the rate stays lr0 * lrf instead of going negative (linear) or rising again (cosine).
* Minimum warmup is 100 iterations (v6.2 #6768) instead of v6.0's 1000: on small datasets 1000
  iterations is the whole run (coco128 at bs 16 has 8 batches per epoch, i.e. 125 epochs of warmup),
  so a short demo would never train at its real learning rate.
"""
import logging
import math

import numpy as np
import torch
import torch.nn as nn

from utils.errors import UserError

LOGGER = logging.getLogger("yolov5")

NOMINAL_BATCH_SIZE = 64  # gradients are accumulated until about this many images were seen
MIN_WARMUP_ITERATIONS = 100
BIAS_GROUP = 2  # index of the bias group, which warms up from warmup_bias_lr downwards

# Every torch layer class whose name says it normalises (BatchNorm*, SyncBatchNorm, GroupNorm, ...).
_NORM_LAYERS = tuple(cls for name, cls in vars(nn).items() if "Norm" in name and isinstance(cls, type))


def nominal_batch_size(hyp=None):
    """Images per optimizer step: 64 as v6.0, or the optional hyp key `nbs` (our addition, named as in
    later Ultralytics releases) for tiny datasets where 64 leaves only a few steps per epoch."""
    return int((hyp or {}).get("nbs", NOMINAL_BATCH_SIZE))


def accumulate_steps(batch_size, nbs=NOMINAL_BATCH_SIZE):
    """Batches per optimizer step: max(round(nbs / bs), 1), with Python's round-half-to-even."""
    return max(round(nbs / batch_size), 1)


def scaled_weight_decay(weight_decay, batch_size, accumulate, nbs=NOMINAL_BATCH_SIZE):
    """Weight decay scaled so the decay per image seen matches a batch of nbs (64: bs 40 -> x1.25)."""
    return weight_decay * batch_size * accumulate / nbs


def split_parameters(model):
    """(norm weights, other weights, biases): the three lists of parameters, in module order."""
    norm_weights, weights, biases = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name.endswith("bias"):
                biases.append(p)
            elif name == "weight" and isinstance(module, _NORM_LAYERS):
                norm_weights.append(p)
            else:
                weights.append(p)
    return norm_weights, weights, biases


def _require(hyp, keys, where):
    missing = [k for k in keys if k not in hyp]
    if missing:
        raise UserError(f"hyperparameters lack {', '.join(missing)} (needed by {where}); "
                        f"add them to the --hyp yaml (see data/hyps/hyp.scratch.yaml)")


def build_optimizer(model, hyp, batch_size, accumulate, adam=False):
    """SGD (Nesterov) or Adam over the three parameter groups, lr = hyp['lr0'].

    Only group 1 is decayed, by hyp['weight_decay'] scaled with `scaled_weight_decay`. Frozen
    parameters stay in the optimizer (as upstream); they simply never receive gradients.
    """
    _require(hyp, ("lr0", "momentum", "weight_decay"), "the optimizer")
    # torch's own check would be a bare ValueError traceback
    for key, ok, rule in (("lr0", hyp["lr0"] >= 0, ">= 0"), ("weight_decay", hyp["weight_decay"] >= 0, ">= 0"),
                          ("momentum", 0 <= hyp["momentum"] < 1, "in [0, 1)")):
        if not ok:
            raise UserError(f"hyperparameter {key}: {hyp[key]} must be {rule}; fix it in the --hyp yaml")
    norm_weights, weights, biases = split_parameters(model)
    decay = scaled_weight_decay(hyp["weight_decay"], batch_size, accumulate, nominal_batch_size(hyp))
    groups = [{"params": norm_weights, "weight_decay": 0.0},
              {"params": weights, "weight_decay": decay},
              {"params": biases, "weight_decay": 0.0}]
    if adam:
        optimizer = torch.optim.Adam(groups, lr=hyp["lr0"], betas=(hyp["momentum"], 0.999))
    else:
        optimizer = torch.optim.SGD(groups, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    LOGGER.info(f"Scaled weight_decay = {decay}")
    LOGGER.info(f"optimizer: {type(optimizer).__name__} with parameter groups {len(norm_weights)} "
                f"weight (no decay), {len(weights)} weight, {len(biases)} bias")
    return optimizer


def one_cycle(y1=0.0, y2=1.0, steps=100):
    """Half a cosine from y1 at x=0 to y2 at x=steps, then held at y2 (the default schedule: 1 -> lrf).

    Held because `--iters` may run epochs past `--epochs`: the cosine would climb back towards y1.
    """
    def lf(x):
        x = min(x, steps)
        return ((1 - math.cos(x * math.pi / steps)) / 2) * (y2 - y1) + y1
    return lf


def linear(lrf, epochs):
    """Straight line from 1 at x=0 to lrf at x=epochs (v6.1 denominator, see module docstring), then
    held at lrf: epochs that `--iters` adds past `--epochs` would otherwise get a negative rate."""
    def lf(x):
        x = min(x, epochs)
        return (1 - x / epochs) * (1.0 - lrf) + lrf
    return lf


def build_lr_lambda(lrf, epochs, linear_lr=False):
    """The LR multiplier per epoch index for `--linear-lr` or the default cosine one-cycle."""
    return linear(lrf, epochs) if linear_lr else one_cycle(1, lrf, epochs)


def build_scheduler(optimizer, lf, start_epoch=0):
    """LambdaLR over `lf`, stepped once per epoch, positioned as upstream leaves it.

    The constructor already takes one step; upstream then resets last_epoch to start_epoch - 1,
    so epochs 0 and 1 both train at lr0 * lf(0) and epoch e >= 1 at lr0 * lf(e - 1). Kept for
    compatibility of the logged LRs (results.csv x/lr0..x/lr2).
    """
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    scheduler.last_epoch = start_epoch - 1
    return scheduler


def warmup_iterations(warmup_epochs, batches_per_epoch, minimum=MIN_WARMUP_ITERATIONS):
    """nw = max(round(warmup_epochs * nb), minimum); minimum 100 as in v6.2 (module docstring)."""
    return max(round(warmup_epochs * batches_per_epoch), minimum)


def warmup(ni, nw, optimizer, epoch, lf, hyp, batch_size):
    """Apply the warmup ramps for iteration `ni` (counted from epoch 0) and return `accumulate`.

    While ni <= nw, linearly in ni: bias lr falls from warmup_bias_lr and the other groups' lr
    rises from 0, both to initial_lr * lf(epoch); SGD momentum rises from warmup_momentum to
    momentum; accumulation rises from 1 to 64 / bs batches. After warmup nothing is touched (the
    scheduler's values apply) and the full accumulation max(round(64 / bs), 1) is returned.
    """
    nbs = nominal_batch_size(hyp)
    if ni > nw:
        return accumulate_steps(batch_size, nbs)
    _require(hyp, ("warmup_bias_lr", "warmup_momentum", "momentum"), "warmup")
    span = [0, nw]
    accumulate = max(1, int(np.interp(ni, span, [1, nbs / batch_size]).round()))
    for j, group in enumerate(optimizer.param_groups):
        start_lr = hyp["warmup_bias_lr"] if j == BIAS_GROUP else 0.0
        group["lr"] = float(np.interp(ni, span, [start_lr, group["initial_lr"] * lf(epoch)]))
        if "momentum" in group:  # SGD; Adam's groups have betas instead and keep them
            group["momentum"] = float(np.interp(ni, span, [hyp["warmup_momentum"], hyp["momentum"]]))
    return accumulate
