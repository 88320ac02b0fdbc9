"""Non-maximum suppression with YOLOv5 v6.0 semantics, minus its silent time-limit drop.

The model emits one row per anchor: (xc, yc, w, h, objectness, class probabilities...).
This module turns a batch of such rows into per-image detections (x1, y1, x2, y2, score, class).

NMS runs on whatever device the prediction tensor lives on. Where a device runs NMS poorly
(MLU), the caller moves the tensor first: the device layer says where post-processing runs.
"""
import logging
import time

import torch
import torchvision

from utils.boxes import box_iou, xywh2xyxy

LOGGER = logging.getLogger("yolov5")

# Boxes of class k are shifted by k * CLASS_OFFSET pixels so one NMS call never lets boxes of
# different classes suppress each other. v6.0 value (v6.1 raised it to 7680).
CLASS_OFFSET = 4096
MAX_NMS_CANDIDATES = 30000  # more candidates than this: keep only the highest scores
MERGE_MAX_CANDIDATES = 3000  # merge-NMS builds an (n_kept, n) IoU matrix: skip it above this
TIME_BUDGET_BASE_S = 10.0
TIME_BUDGET_PER_IMAGE_S = 0.03

# Indirection so tests can drive the clock without touching the global time module.
_clock = time.perf_counter


def time_budget_s(batch_size):
    """Seconds a batch may take before NMS warns that it is slow (it never stops early)."""
    return TIME_BUDGET_BASE_S + TIME_BUDGET_PER_IMAGE_S * batch_size


def _hybrid_rows(image_labels, num_classes, like):
    """Ground-truth rows (cls, xc, yc, w, h) as prediction rows with objectness 1 and a one-hot class."""
    labels = image_labels.to(device=like.device, dtype=like.dtype)
    rows = torch.zeros((len(labels), num_classes + 5), device=like.device, dtype=like.dtype)
    rows[:, :4] = labels[:, 1:5]
    rows[:, 4] = 1.0
    rows[torch.arange(len(labels), device=like.device), labels[:, 0].long() + 5] = 1.0
    return rows


def _candidates(x, conf_thres, multi_label):
    """(n, 5 + nc) rows that passed the objectness filter -> (m, 6) [x1, y1, x2, y2, score, class].

    Scores are objectness * class probability. Multi-label keeps every (box, class) pair above the
    threshold, in row-major (box, class) order as upstream; otherwise one best class per box.
    """
    scores = x[:, 5:] * x[:, 4:5]
    box = xywh2xyxy(x[:, :4])
    if multi_label:
        i, j = (scores > conf_thres).nonzero(as_tuple=False).T
        return torch.cat((box[i], scores[i, j, None], j[:, None].to(x.dtype)), 1)
    conf, j = scores.max(1, keepdim=True)
    return torch.cat((box, conf, j.to(x.dtype)), 1)[conf.view(-1) > conf_thres]


def _merge_boxes(x, keep, offset_boxes, iou_thres):
    """Merge-NMS: each kept box becomes the score-weighted mean of the boxes it suppressed.

    Kept boxes that suppressed nothing are dropped, as upstream's `redundant` option does.
    """
    overlaps = box_iou(offset_boxes[keep], offset_boxes) > iou_thres
    weights = overlaps * x[:, 4][None]
    x[keep, :4] = torch.mm(weights, x[:, :4]) / weights.sum(1, keepdim=True)
    return keep[overlaps.sum(1) > 1]


def non_max_suppression(prediction, conf_thres=0.25, iou_thres=0.45, classes=None, agnostic=False,
                        multi_label=False, labels=(), max_det=300, *, merge=False):
    """Per-image NMS on a (bs, n, 5 + nc) prediction tensor (v6.0's positional order; merge by keyword).

    Args:
        prediction: decoded model output, boxes as centre xywh in input pixels, already sigmoided.
        conf_thres: candidates need objectness > conf_thres, then objectness * class > conf_thres.
        iou_thres: torchvision NMS IoU threshold.
        classes: optional iterable of class ids to keep.
        agnostic: suppress across classes (no class offset).
        multi_label: one detection per (box, class) above conf_thres (only when nc > 1).
        labels: optional per-image (n, 5) tensors (cls, xc, yc, w, h) in pixels that join the
            candidates with score 1 (autolabelling / --save-hybrid).
        max_det: detections kept per image.
        merge: merge-NMS (weighted box fusion of suppressed boxes); off by default as upstream.

    Returns:
        list (one per image) of (n, 6) float32 tensors [x1, y1, x2, y2, score, class] on the
        prediction's device, sorted by score descending. Work is done in float32 because the class
        offset (up to 79 * 4096 px) overflows float16.

    Unlike v6.0, which silently gives the remaining images no detections once 10 s have passed,
    this logs one warning when the budget (10 s + 0.03 s per image) is exceeded and still
    processes every image.
    """
    _check_arguments(prediction, conf_thres, iou_thres)
    batch_size, num_classes = prediction.shape[0], prediction.shape[2] - 5
    multi_label = multi_label and num_classes > 1
    wanted = None if classes is None else torch.tensor(list(classes), device=prediction.device, dtype=torch.float32)
    budget = time_budget_s(batch_size)
    start, warned = _clock(), False

    output = []
    for xi in range(batch_size):
        x = prediction[xi]
        x = x[x[:, 4] > conf_thres].float()  # boolean indexing copies: the caller's tensor is untouched
        if labels is not None and len(labels) > xi and len(labels[xi]):
            x = torch.cat((x, _hybrid_rows(labels[xi], num_classes, x)), 0)
        det = _candidates(x, conf_thres, multi_label) if len(x) else x.new_zeros((0, 6))
        if wanted is not None and len(det):
            det = det[(det[:, 5:6] == wanted).any(1)]
        output.append(_suppress(det, iou_thres, agnostic, max_det, merge))

        if not warned and _clock() - start > budget:
            warned = True
            LOGGER.warning(f"WARNING: NMS time budget {budget:.2f}s exceeded for a batch of {batch_size} "
                           "images; all images are still processed (consider a higher conf_thres)")
    return output


def _check_arguments(prediction, conf_thres, iou_thres):
    if prediction.ndim != 3 or prediction.shape[2] < 6:
        raise ValueError(f"prediction must be (batch, n, 5 + nc), got shape {tuple(prediction.shape)}")
    if not 0 <= conf_thres <= 1:
        raise ValueError(f"conf_thres must be in [0, 1], got {conf_thres}")
    if not 0 <= iou_thres <= 1:
        raise ValueError(f"iou_thres must be in [0, 1], got {iou_thres}")


def _suppress(det, iou_thres, agnostic, max_det, merge):
    """One image's (m, 6) candidates -> the kept detections, highest score first."""
    if len(det) > MAX_NMS_CANDIDATES:
        det = det[det[:, 4].argsort(descending=True)[:MAX_NMS_CANDIDATES]]
    if not len(det):
        return det
    offset_boxes = det[:, :4] + det[:, 5:6] * (0 if agnostic else CLASS_OFFSET)
    keep = torchvision.ops.nms(offset_boxes, det[:, 4], iou_thres)[:max_det]
    if merge and 1 < len(det) < MERGE_MAX_CANDIDATES:
        keep = _merge_boxes(det, keep, offset_boxes, iou_thres)
    return det[keep]
