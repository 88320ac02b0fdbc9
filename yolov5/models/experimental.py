"""Loading trained weights for inference: attempt_load and model Ensembles (upstream v6.0 API).

Deployment scripts written for YOLOv5 import `models.experimental.attempt_load`; it keeps the v6.0
signature and behaviour, but reads files through the allow-list loader in utils.io.checkpoint, so a
checkpoint cannot run code.
"""
import logging
from pathlib import Path

import torch
import torch.nn as nn

from utils.io.checkpoint import load_checkpoint, model_from_checkpoint
from utils.io.train_imgsz import common_train_imgsz, stored_train_imgsz

LOGGER = logging.getLogger("yolov5")

_INPLACE_ACTIVATIONS = (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)


class Ensemble(nn.ModuleList):
    """Several detection models run on the same input; their boxes are pooled for one NMS."""

    def forward(self, x, augment=False, profile=False, visualize=False):
        # Each member returns (inference boxes (bs, N_i, no), raw levels); boxes are concatenated
        # along the box dimension and the raw outputs dropped, as upstream does.
        y = [m(x, augment=augment, profile=profile, visualize=visualize)[0] for m in self]
        return torch.cat(y, 1), None


def _set_inplace(model, inplace):
    """Apply the `inplace` choice to activations, Detect and Model (attributes pickled with them)."""
    for m in model.modules():
        if isinstance(m, _INPLACE_ACTIVATIONS) or type(m).__name__ in ("Detect", "Model"):
            m.inplace = inplace


def attempt_load(weights, map_location=None, inplace=True, fuse=True, cfg=None):
    """Load one checkpoint (or a list of them as an Ensemble) for inference.

    Per file: the EMA weights when present, else the model; float32; Conv+BN fused when `fuse`;
    eval mode. A list gives an Ensemble whose `names` come from the last member and `stride` from
    the member with the largest stride. `map_location` (None = CPU) is where the result is moved
    after loading on CPU. `cfg` (model yaml) is needed only for files holding a plain state_dict.
    The result's `train_imgsz` is the training image size stored in the file(s) (None if absent or,
    for an Ensemble, if the members disagree).
    """
    paths = weights if isinstance(weights, (list, tuple)) else [weights]
    models = Ensemble()
    for w in paths:
        ckpt = load_checkpoint(w)
        model = model_from_checkpoint(ckpt, cfg=cfg, source=str(w))
        model.train_imgsz = stored_train_imgsz(ckpt)
        if fuse and hasattr(model, "fuse"):
            model = model.fuse()
        models.append(model.eval())
    for m in models:
        _set_inplace(m, inplace)
    if map_location is not None:
        models.to(map_location)

    if len(models) == 1:
        return models[-1]
    LOGGER.info(f"Ensemble created with {[str(Path(w)) for w in paths]}")
    models.names = getattr(models[-1], "names", None)
    models.train_imgsz = common_train_imgsz(models)
    largest = int(torch.argmax(torch.tensor([float(m.stride.max()) for m in models])))
    models.stride = models[largest].stride
    return models
