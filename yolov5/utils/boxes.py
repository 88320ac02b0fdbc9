"""Box formats, coordinate rescaling and IoU.

Every function that upstream YOLOv5 v6.0 offers on boxes accepts both torch tensors and
numpy arrays where upstream does, so scripts written against `utils.general` keep working.
Formats: xyxy = corners (x1, y1, x2, y2); xywh = centre, width, height; the `n` suffix means
normalised to [0, 1] by image width and height.
"""
import math

import numpy as np
import torch


def _empty_like(x):
    return x.clone() if isinstance(x, torch.Tensor) else np.copy(x)


def xywh2xyxy(x):
    """(n, 4) centre/size boxes to corner boxes."""
    y = _empty_like(x)
    half_w, half_h = x[:, 2] / 2, x[:, 3] / 2
    y[:, 0] = x[:, 0] - half_w
    y[:, 1] = x[:, 1] - half_h
    y[:, 2] = x[:, 0] + half_w
    y[:, 3] = x[:, 1] + half_h
    return y


def xyxy2xywh(x):
    """(n, 4) corner boxes to centre/size boxes."""
    y = _empty_like(x)
    y[:, 0] = (x[:, 0] + x[:, 2]) / 2
    y[:, 1] = (x[:, 1] + x[:, 3]) / 2
    y[:, 2] = x[:, 2] - x[:, 0]
    y[:, 3] = x[:, 3] - x[:, 1]
    return y


def xywhn2xyxy(x, w=640, h=640, padw=0, padh=0):
    """Normalised centre/size boxes to pixel corners, shifted by a letterbox/mosaic offset."""
    y = _empty_like(x)
    y[:, 0] = w * (x[:, 0] - x[:, 2] / 2) + padw
    y[:, 1] = h * (x[:, 1] - x[:, 3] / 2) + padh
    y[:, 2] = w * (x[:, 0] + x[:, 2] / 2) + padw
    y[:, 3] = h * (x[:, 1] + x[:, 3] / 2) + padh
    return y


def xyxy2xywhn(x, w=640, h=640, clip=False, eps=0.0):
    """Pixel corners to normalised centre/size; `clip` first limits boxes to (h - eps, w - eps)."""
    if clip:
        x = _empty_like(x)
        clip_coords(x, (h - eps, w - eps))
    y = _empty_like(x)
    y[:, 0] = ((x[:, 0] + x[:, 2]) / 2) / w
    y[:, 1] = ((x[:, 1] + x[:, 3]) / 2) / h
    y[:, 2] = (x[:, 2] - x[:, 0]) / w
    y[:, 3] = (x[:, 3] - x[:, 1]) / h
    return y


def xyn2xy(x, w=640, h=640, padw=0, padh=0):
    """Normalised (n, 2) polygon points to pixels, shifted by an offset."""
    y = _empty_like(x)
    y[:, 0] = w * x[:, 0] + padw
    y[:, 1] = h * x[:, 1] + padh
    return y


def segment2box(segment, width=640, height=640):
    """Bounding box (x1, y1, x2, y2) of the polygon points that lie inside the image."""
    x, y = segment.T
    inside = (x >= 0) & (y >= 0) & (x <= width) & (y <= height)
    x, y = x[inside], y[inside]
    if not len(x):
        return np.zeros(4)
    return np.array([x.min(), y.min(), x.max(), y.max()])


def segments2boxes(segments):
    """List of (n, 2) polygons to an (m, 4) array of centre/size boxes."""
    boxes = [[s[:, 0].min(), s[:, 1].min(), s[:, 0].max(), s[:, 1].max()] for s in segments]
    return xyxy2xywh(np.array(boxes, dtype=np.float64).reshape(-1, 4))


def resample_segments(segments, n=1000):
    """Resample each closed polygon to n points by linear interpolation along its index."""
    resampled = []
    for s in segments:
        closed = np.concatenate((s, s[0:1, :]), axis=0)
        pos = np.linspace(0, len(closed) - 1, n)
        index = np.arange(len(closed))
        resampled.append(np.stack([np.interp(pos, index, closed[:, i]) for i in range(2)], axis=1))
    return resampled


def clip_coords(boxes, shape):
    """Clip xyxy boxes in place to an image of shape (height, width)."""
    height, width = shape[0], shape[1]
    if isinstance(boxes, torch.Tensor):
        boxes[:, 0].clamp_(0, width)
        boxes[:, 1].clamp_(0, height)
        boxes[:, 2].clamp_(0, width)
        boxes[:, 3].clamp_(0, height)
    else:
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


def scale_coords(img1_shape, coords, img0_shape, ratio_pad=None):
    """Map xyxy boxes from the letterboxed network input (img1_shape) back to the original image.

    Without `ratio_pad` the gain and padding are recomputed as letterbox would have made them;
    with it, ((gain_w, gain_h), (pad_w, pad_h)) and only gain[0] is used (as v6.0 does).
    """
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        pad = (img1_shape[1] - img0_shape[1] * gain) / 2, (img1_shape[0] - img0_shape[0] * gain) / 2
    else:
        gain = ratio_pad[0][0]
        pad = ratio_pad[1]
    coords[:, [0, 2]] -= pad[0]
    coords[:, [1, 3]] -= pad[1]
    coords[:, :4] /= gain
    clip_coords(coords, img0_shape)
    return coords


def box_area(box):
    """Area of (n, 4) xyxy boxes given as a tensor or array."""
    return (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])


def box_iou(box1, box2):
    """Pairwise IoU of xyxy tensors: (N, 4) x (M, 4) -> (N, M)."""
    top_left = torch.max(box1[:, None, :2], box2[None, :, :2])
    bottom_right = torch.min(box1[:, None, 2:], box2[None, :, 2:])
    inter = (bottom_right - top_left).clamp(0).prod(2)
    return inter / (box_area(box1)[:, None] + box_area(box2)[None, :] - inter)


def bbox_iou(box1, box2, x1y1x2y2=True, GIoU=False, DIoU=False, CIoU=False, eps=1e-7):
    """Element-wise IoU (or GIoU / DIoU / CIoU) of box1 against box2.

    box1 is one box (4,) or boxes laid out column-wise (4, n), box2 is (n, 4): the v6.0 call
    convention (the loss passes `pbox.T`).

    Follows v6.0 numerics: eps is added to the heights and to the union, and the CIoU
    aspect-ratio weight alpha is computed without gradient.
    """
    box2 = box2.T
    if x1y1x2y2:
        b1_x1, b1_y1, b1_x2, b1_y2 = box1[0], box1[1], box1[2], box1[3]
        b2_x1, b2_y1, b2_x2, b2_y2 = box2[0], box2[1], box2[2], box2[3]
    else:
        b1_x1, b1_x2 = box1[0] - box1[2] / 2, box1[0] + box1[2] / 2
        b1_y1, b1_y2 = box1[1] - box1[3] / 2, box1[1] + box1[3] / 2
        b2_x1, b2_x2 = box2[0] - box2[2] / 2, box2[0] + box2[2] / 2
        b2_y1, b2_y2 = box2[1] - box2[3] / 2, box2[1] + box2[3] / 2

    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * \
            (torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)).clamp(0)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not (GIoU or DIoU or CIoU):
        return iou

    enclose_w = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)
    enclose_h = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)
    if GIoU:
        enclose_area = enclose_w * enclose_h + eps
        return iou - (enclose_area - union) / enclose_area
    diag_sq = enclose_w ** 2 + enclose_h ** 2 + eps
    centre_dist_sq = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
    if DIoU:
        return iou - centre_dist_sq / diag_sq
    v = (4 / math.pi ** 2) * torch.pow(torch.atan(w2 / h2) - torch.atan(w1 / h1), 2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre_dist_sq / diag_sq + v * alpha)
