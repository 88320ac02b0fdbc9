"""Everything train.py prepares before the first batch: files, hyperparameters, model, freezing.

The three ways to start (as upstream v6.0 train.py):
- from scratch: `--weights '' --cfg yolov5m.yaml` builds Model(cfg);
- from pretrained: `--weights yolov5m.pt` loads the checkpoint through the safe loader (CPU first),
  builds Model(cfg or the checkpoint's yaml) and transfers every key whose name and shape match
  (anchors excluded when --cfg or hyp['anchors'] override them);
- resume: the checkpoint's raw model weights load whole; optimizer, EMA, epoch and the rest are
  restored by the trainer (only on --resume: the v6.2 fix of v6.0's silent continuation).
"""
import logging
from pathlib import Path

import torch
import yaml

from utils.errors import UserError
from utils.io.model_files import find_yaml

LOGGER = logging.getLogger("yolov5")
HYP_KEYS = ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
            "box", "cls", "cls_pw", "obj", "obj_pw", "iou_t", "anchor_t", "fl_gamma", "hsv_h", "hsv_s", "hsv_v",
            "degrees", "translate", "scale", "shear", "perspective", "flipud", "fliplr", "mosaic", "mixup")


def load_hyp(hyp):
    """Hyperparameters from a yaml path/name (or a dict), checked for the keys training reads."""
    if isinstance(hyp, dict):
        hyp_dict, source = dict(hyp), "hyp dict"
    else:
        source = find_yaml(hyp, "--hyp")
        try:
            hyp_dict = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise UserError(f"--hyp {source}: not valid YAML ({e})") from None
    if not isinstance(hyp_dict, dict):
        raise UserError(f"--hyp {source}: expected a mapping of hyperparameter names to values")
    missing = [k for k in HYP_KEYS if k not in hyp_dict]
    if missing:
        raise UserError(f"--hyp {source}: missing {', '.join(missing)}; start from data/hyps/hyp.scratch.yaml")
    bad = [k for k, v in hyp_dict.items() if not isinstance(v, (int, float)) or isinstance(v, bool)]
    if bad:
        raise UserError(f"--hyp {source}: values must be numbers, check {', '.join(bad)}")
    hyp_dict.setdefault("copy_paste", 0.0)
    return hyp_dict


def check_weights_file(weights):
    """The --weights checkpoint's path ('' = from scratch); we never download behind the user's back."""
    from utils.io.model_files import find_weights
    return find_weights(weights, alternative="train from scratch with --weights '' --cfg yolov5s.yaml")


def transfer_state(model, state, exclude=()):
    """Copy the entries of `state` whose key and shape match `model`; returns (copied, total)."""
    own = model.state_dict()
    kept = {k: v.float() if v.is_floating_point() else v for k, v in state.items()
            if k in own and v.shape == own[k].shape and not any(x in k for x in exclude)}
    model.load_state_dict(kept, strict=False)
    return len(kept), len(own)


def build_model(cfg, weights, nc, hyp, resume):
    """(model on CPU, loaded checkpoint dict or None) for the three ways to start."""
    from models.yolo import Model
    from utils.io.checkpoint import load_checkpoint

    if not weights:
        return Model(cfg, ch=3, nc=nc, anchors=hyp.get("anchors")), None
    ckpt = load_checkpoint(weights)  # safe unpickler, mapped to CPU
    if not isinstance(ckpt, dict) or ckpt.get("model") is None:
        raise UserError(f"--weights {weights}: not a YOLOv5 training checkpoint (no 'model' entry)")
    source = ckpt["model"]
    if isinstance(source, torch.nn.Module):
        state = source.float().state_dict()
        arch = cfg or source.yaml
    else:  # a plain state_dict under 'model'
        state = source
        if not cfg:
            raise UserError(f"--weights {weights} holds only a state_dict: also give --cfg")
        arch = cfg
    model = Model(arch, ch=3, nc=nc, anchors=hyp.get("anchors"))
    exclude = ["anchor"] if (cfg or hyp.get("anchors")) and not resume else []
    copied, total = transfer_state(model, state, exclude)
    LOGGER.info(f"Transferred {copied}/{total} items from {weights}")
    return model, ckpt


def freeze_layers(model, n):
    """Freeze the first n layers (parameter names model.0. ... model.{n-1}.); returns frozen names."""
    prefixes = tuple(f"model.{x}." for x in range(n))
    frozen = []
    for name, p in model.named_parameters():
        p.requires_grad = True
        if name.startswith(prefixes):
            p.requires_grad = False
            frozen.append(name)
    if frozen:
        LOGGER.info(f"freezing {len(frozen)} parameters of the first {n} layers")
    return frozen


def dataset_classes(data, single_cls):
    """(nc, names) of a data config, as training sees them (single-class: 1, ['item'])."""
    nc = 1 if single_cls else int(data["nc"])
    names = data["names"]
    if isinstance(names, dict):
        names = [names[i] for i in sorted(names)]
    if single_cls:
        names = list(names) if len(names) == 1 else ["item"]
    return nc, list(names)
