"""The image size a model was trained at, kept in its checkpoint, as the default size for val and detect.

Weights trained at 192 px score far worse at 640 px (objects appear about three times larger than in
training), so val.py and detect.py without --img use the training size stored in the checkpoint under
TRAIN_IMGSZ_KEY (written by the trainer, kept by strip_optimizer). An explicit size always wins. Checkpoints without the key (upstream releases, older
runs) keep the upstream default of 640. The key is one extra int; upstream tools ignore it.
"""
import logging

LOGGER = logging.getLogger("yolov5")
TRAIN_IMGSZ_KEY = "train_imgsz"
UPSTREAM_DEFAULT_IMGSZ = 640


def stored_train_imgsz(ckpt):
    """The training image size of a loaded checkpoint, or None where it has none (or not a usable one)."""
    value = ckpt.get(TRAIN_IMGSZ_KEY) if isinstance(ckpt, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def common_train_imgsz(models):
    """The training size shared by all loaded `models` (attribute set by attempt_load), else None."""
    sizes = {getattr(m, "train_imgsz", None) for m in models}
    return sizes.pop() if len(sizes) == 1 else None


def resolve_imgsz(imgsz, model, script):
    """`imgsz` when given; else the training size attempt_load found in the checkpoint (saying so in one
    line); else 640. `script` names the caller in that line, e.g. 'val.py'."""
    if imgsz is not None:
        return imgsz
    trained = getattr(model, "train_imgsz", None)
    if trained is None:
        return UPSTREAM_DEFAULT_IMGSZ
    LOGGER.info(f"{script}: image size {trained}, the size these weights were trained at (from the checkpoint); "
                f"--img N sets another")
    return trained
