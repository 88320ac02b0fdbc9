"""One training sample's random augmentation, drawn apart from making its pixels.

The dataset draws everything random about a sample here (mosaic or letterbox + perspective,
mixup, then HSV gains and flips) and computes its labels on the host in float64. The pixels are
made afterwards, either on the CPU with OpenCV (`render_geometry`, `apply_finish`) or as batched
tensor ops on the training device (utils/data/device_augment.py), from the same plan: so both paths
keep the same images, crops, matrices and boxes for the same seed.

Draw order (Python's `random` for geometry and flips, numpy's for mixup and colour) is the one
the dataset always used; Albumentations, when installed, runs on the CPU between the geometry and
the finishing draws.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from utils.data.augmentations import blend, hsv_gains, letterbox, mixup_ratio, perspective_matrix, \
    transform_labels, warp_image
from utils.boxes import xywhn2xyxy, xyxy2xywhn
from utils.data.mosaic import MosaicPlan, plan_mosaic, render_mosaic


@dataclass
class GeometryPlan:
    """Where a sample's pixels come from. Either `mosaics` (1, or 2 blended with ratio `mix_r`)
    or `image` (letterboxed) warped by `M` (None: used as it is). labels: (n, 5) [cls, x1, y1,
    x2, y2] in output pixels; out_hw: output (h, w); shapes: v6.0's letterbox shapes or None."""
    labels: np.ndarray
    out_hw: tuple
    mosaics: tuple = ()
    mix_r: float | None = None
    image: np.ndarray | None = None
    M: np.ndarray | None = None
    shapes: tuple | None = None


@dataclass
class FinishPlan:
    """Colour and flips after the geometry: HSV gains (None: none) and the two flip flags."""
    gains: np.ndarray | None
    flipud: bool
    fliplr: bool


def plan_geometry(dataset, index) -> GeometryPlan:
    """Draw the sample's geometry: mosaic (and mixup) or letterbox (+ random perspective)."""
    hyp = dataset.hyp
    if dataset.mosaic and random.random() < hyp["mosaic"]:
        first = plan_mosaic(dataset, index)
        if random.random() < hyp["mixup"]:
            second = plan_mosaic(dataset, random.randint(0, dataset.n - 1))
            return GeometryPlan(np.concatenate((first.labels, second.labels), 0), first.out_hw,
                                mosaics=(first, second), mix_r=mixup_ratio())
        return GeometryPlan(first.labels, first.out_hw, mosaics=(first,))
    img, (h0, w0), (h, w) = dataset.load_image(index)
    shape = dataset.batch_shapes[dataset.batch[index]] if dataset.rect else dataset.img_size
    img, ratio, pad = letterbox(img, shape, auto=False, scaleup=dataset.augment)
    shapes = (h0, w0), ((h / h0, w / w0), pad)
    labels = dataset.labels[index].copy()
    if labels.size:
        labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
    M = None
    out_h, out_w = img.shape[:2]
    if dataset.augment:
        M, s = perspective_matrix(img.shape, (out_h, out_w), hyp["degrees"], hyp["translate"], hyp["scale"],
                                  hyp["shear"], hyp["perspective"])
        labels = transform_labels(np.asarray(labels), M, s, out_w, out_h)
        if not (M != np.eye(3)).any():  # identity: no warp, as random_perspective
            M = None
    return GeometryPlan(labels, (out_h, out_w), image=img, M=M, shapes=shapes)


def render_geometry(plan: GeometryPlan):
    """The plan's BGR uint8 pixels on the CPU (OpenCV)."""
    if plan.mosaics:
        img = render_mosaic(plan.mosaics[0])
        if len(plan.mosaics) > 1:
            img = blend(img, render_mosaic(plan.mosaics[1]), plan.mix_r)
        return img
    if plan.M is None:
        return plan.image
    out_h, out_w = plan.out_hw
    return warp_image(plan.image, plan.M, (out_w, out_h))


def normalised_labels(labels, out_hw):
    """Pixel xyxy labels -> normalised xywh (clipped), as the dataset returns them."""
    if len(labels):
        labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=out_hw[1], h=out_hw[0], clip=True, eps=1e-3)
    return labels


def plan_finish(hyp) -> FinishPlan:
    """Draw HSV gains (numpy) and the up-down then left-right flips (Python's random)."""
    gains = hsv_gains(hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"])
    return FinishPlan(gains, random.random() < hyp["flipud"], random.random() < hyp["fliplr"])


def flip_labels(labels, finish: FinishPlan):
    """Mirror normalised xywh labels as the finishing flips do (in place)."""
    if len(labels):
        if finish.flipud:
            labels[:, 2] = 1 - labels[:, 2]
        if finish.fliplr:
            labels[:, 1] = 1 - labels[:, 1]
    return labels


__all__ = ["GeometryPlan", "FinishPlan", "MosaicPlan", "plan_geometry", "render_geometry", "normalised_labels",
           "plan_finish", "flip_labels"]
