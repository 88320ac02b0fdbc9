"""Exponential moving average (EMA) of model weights, as upstream YOLOv5 v6.0 keeps it.

The EMA copy is what gets validated each epoch, chooses best.pt and is stored as `ckpt['ema']`;
averaging smooths out the noise of single SGD steps. Behaviour (upstream v6.0 `ModelEMA`):

* decay ramps up with the number of updates u: d(u) = decay * (1 - exp(-u / tau)), tau = 2000,
  so the first updates follow the model almost exactly and later ones average over ~10k steps;
* every floating-point state_dict entry is averaged: parameters AND buffers (BatchNorm running
  statistics, Detect anchors); integer buffers (num_batches_tracked) are left alone;
* the model may be wrapped in DataParallel / DistributedDataParallel: the bare model is read.

Post-v6.0 fix followed (upstream v7.0, #9056): the update runs under `no_grad` on
detached model tensors, never under `inference_mode` (v6.2's inference_mode version produced
inference tensors that later broke training, reported as zero mAP).
"""
import copy
import math

import torch
import torch.nn as nn

from utils.device.parallel import de_parallel

# Devices whose torch build has the foreach kernels; others (an MLU) get the per-tensor loop.
_FOREACH_DEVICES = ("cpu", "cuda")

# Attributes train.py copies onto the EMA once per epoch, so the EMA pickles as a complete model.
EMA_ATTRIBUTES = ("yaml", "nc", "hyp", "names", "stride", "class_weights")


class ModelEMA:
    """Holds `self.ema`, an eval-mode, gradient-free copy of the model that tracks its weights.

    `updates` counts optimizer steps seen so far; checkpoints store it as `ckpt['updates']` so a
    resumed run continues the decay ramp where it stopped.
    """

    def __init__(self, model, decay=0.9999, updates=0, tau=2000):
        self.ema = copy.deepcopy(de_parallel(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.updates = int(updates)
        self.max_decay = float(decay)
        self.tau = float(tau)

    def decay(self, updates):
        """Decay used for the update number `updates` (1 for the first update)."""
        return self.max_decay * (1.0 - math.exp(-updates / self.tau))

    def update(self, model):
        """Fold the current weights of `model` into the average (call after each optimizer step)."""
        with torch.no_grad():
            self.updates += 1
            d = self.decay(self.updates)
            current = de_parallel(model).state_dict()
            averages, values = [], []
            for name, average in self.ema.state_dict().items():
                if average.dtype.is_floating_point:
                    averages.append(average)
                    values.append(current[name].detach().to(average.dtype))
            # state_dict tensors share storage with the EMA module, so this edits it in place.
            if averages and averages[0].device.type in _FOREACH_DEVICES:
                # one call per operation instead of two per tensor: the same multiply and add on
                # every element (bit-identical), with far less per-call overhead
                torch._foreach_mul_(averages, d)
                torch._foreach_add_(averages, values, alpha=1.0 - d)
            else:
                for average, value in zip(averages, values):
                    average.mul_(d).add_(value, alpha=1.0 - d)

    def update_attr(self, model, include=EMA_ATTRIBUTES, exclude=("process_group", "reducer")):
        """Copy plain attributes (yaml, nc, hyp, names, ...) from the bare model onto the EMA.

        With an empty `include`, every public attribute except `exclude` is copied. Attributes are
        read from the bare model, so train.py should attach nc/hyp/names to the de-paralleled model.
        """
        source = de_parallel(model)
        for key, value in vars(source).items():
            if key.startswith("_") or key in exclude or (include and key not in include):
                continue
            setattr(self.ema, key, value)

    def restore(self, ema_weights, updates):
        """Resume: load averaged weights (a module or a state_dict, fp16 is fine) and the step count."""
        state = ema_weights.state_dict() if isinstance(ema_weights, nn.Module) else ema_weights
        self.ema.load_state_dict(state)  # copies into the existing tensors, converting fp16 -> fp32
        self.updates = int(updates)
