"""Upstream v6.0 import path `utils.augmentations`: re-exports only; the code is utils/data/augmentations.py."""
from utils.data import augmentations as _real
from utils.data.augmentations import (  # noqa: F401
    Albumentations,
    LOGGER,
    PAD_VALUE,
    apply_hsv,
    augment_hsv,
    blend,
    box_candidates,
    cutout,
    hist_equalize,
    hsv_gains,
    hsv_lut,
    is_perspective,
    letterbox,
    mixup,
    mixup_ratio,
    perspective_matrix,
    random_perspective,
    transform_boxes,
    transform_labels,
    transform_segments,
    translation_matrix,
    warp_image,
    warp_into,
)
from utils.upstream_call import forward_other_names

__getattr__ = forward_other_names(__name__, _real)
