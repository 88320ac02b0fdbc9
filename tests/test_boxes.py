"""Box format conversions, rescaling and IoU against hand-computed values."""
import math

import numpy as np
import pytest
import torch

from utils.boxes import (bbox_iou, box_iou, clip_coords, resample_segments, scale_coords, segment2box,
                         segments2boxes, xywh2xyxy, xywhn2xyxy, xyn2xy, xyxy2xywh, xyxy2xywhn)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_format_round_trips(as_tensor):
    xyxy = np.array([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 640.0, 480.0]])
    x = torch.tensor(xyxy) if as_tensor else xyxy
    xywh = xyxy2xywh(x)
    assert np.allclose(np.asarray(xywh), [[30, 50, 40, 60], [320, 240, 640, 480]])
    assert np.allclose(np.asarray(xywh2xyxy(xywh)), xyxy)
    n = xyxy2xywhn(x, w=640, h=480)
    assert np.allclose(np.asarray(n[0]), [30 / 640, 50 / 480, 40 / 640, 60 / 480])
    assert np.allclose(np.asarray(xywhn2xyxy(n, w=640, h=480, padw=5, padh=7)), xyxy + [5, 7, 5, 7])
    assert type(xywh) is type(x)
    # conversions never modify their input
    assert np.allclose(np.asarray(x), xyxy)


def test_xyxy2xywhn_clip_limits_to_image():
    boxes = np.array([[-10.0, -5.0, 700.0, 100.0]])
    out = xyxy2xywhn(boxes, w=640, h=480, clip=True)
    assert np.allclose(out, [[0.5, 50 / 480, 1.0, 100 / 480]])
    assert boxes[0, 0] == -10.0


def test_segments_to_boxes():
    square = np.array([[10, 10], [30, 10], [30, 40], [10, 40]], dtype=float)
    assert np.allclose(segments2boxes([square]), [[20, 25, 20, 30]])
    outside = np.vstack([square, [[900, 900]]])
    assert np.allclose(segment2box(outside, 640, 640), [10, 10, 30, 40])
    assert np.allclose(segment2box(np.array([[-5.0, -5.0]]), 640, 640), 0)
    res = resample_segments([square], n=9)[0]
    assert res.shape == (9, 2) and np.allclose(res[0], square[0]) and np.allclose(res[-1], square[0])
    assert np.allclose(xyn2xy(np.array([[0.5, 0.25]]), 200, 100, 3, 4), [[103, 29]])


def test_scale_coords_inverts_letterbox():
    # 480x640 image letterboxed to 320x320: gain 0.5, pad (0, 40)
    pred = torch.tensor([[100.0, 60.0, 200.0, 140.0]])
    out = scale_coords((320, 320), pred.clone(), (480, 640))
    assert torch.allclose(out, torch.tensor([[200.0, 40.0, 400.0, 200.0]]))
    out = scale_coords((320, 320), pred.clone(), (480, 640), ratio_pad=((0.5, 0.5), (0, 40)))
    assert torch.allclose(out, torch.tensor([[200.0, 40.0, 400.0, 200.0]]))
    clipped = clip_coords(torch.tensor([[-3.0, 5.0, 700.0, 500.0]]), (480, 640))
    assert clipped.tolist() == [[0.0, 5.0, 640.0, 480.0]]


def test_box_iou_pairwise():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 5.0, 10.0]])
    iou = box_iou(a, b)
    expected = torch.tensor([[1.0, 0.0, 0.5], [25 / 175, 25 / 175, 0.0]])
    assert torch.allclose(iou, expected)


def test_bbox_iou_variants_hand_computed():
    eps = 1e-7
    p = torch.tensor([[5.0, 5.0, 4.0, 2.0]]).T  # xywh, column layout as the loss passes it
    t = torch.tensor([[6.0, 5.0, 2.0, 2.0]])
    # corners: p (3,4)-(7,6), t (5,4)-(7,6): inter 2*2=4
    h1, h2 = 2 + eps, 2 + eps
    union = 4 * h1 + 2 * h2 - 4 + eps
    iou = 4 / union
    assert bbox_iou(p, t, x1y1x2y2=False).item() == pytest.approx(iou, rel=1e-6)
    # enclosing box is p itself: 4 x 2
    giou = iou - (4 * 2 + eps - union) / (4 * 2 + eps)
    assert bbox_iou(p, t, x1y1x2y2=False, GIoU=True).item() == pytest.approx(giou, rel=1e-6)
    c2 = 4 ** 2 + 2 ** 2 + eps
    rho2 = 1.0
    assert bbox_iou(p, t, x1y1x2y2=False, DIoU=True).item() == pytest.approx(iou - rho2 / c2, rel=1e-6)
    v = 4 / math.pi ** 2 * (math.atan(2 / h2) - math.atan(4 / h1)) ** 2
    alpha = v / (v - iou + 1 + eps)
    ciou = iou - (rho2 / c2 + v * alpha)
    assert bbox_iou(p, t, x1y1x2y2=False, CIoU=True).item() == pytest.approx(ciou, rel=1e-6)


def _ciou_by_hand(p, t, detach_alpha, eps=1e-7):
    """CIoU of one xywh pair, written out in float64; alpha optionally cut from the graph."""
    (px, py, pw, ph), (tx, ty, tw, th) = p, t
    ph, th = ph + eps, th + eps
    iw = (torch.min(px + pw / 2, tx + tw / 2) - torch.max(px - pw / 2, tx - tw / 2)).clamp(0)
    ih = (torch.min(py + ph / 2, ty + th / 2) - torch.max(py - ph / 2, ty - th / 2)).clamp(0)
    inter = iw * ih
    iou = inter / (pw * ph + tw * th - inter + eps)
    cw = torch.max(px + pw / 2, tx + tw / 2) - torch.min(px - pw / 2, tx - tw / 2)
    ch = torch.max(py + ph / 2, ty + th / 2) - torch.min(py - ph / 2, ty - th / 2)
    rho2 = (tx - px) ** 2 + (ty - py) ** 2
    v = 4 / math.pi ** 2 * (torch.atan(tw / th) - torch.atan(pw / ph)) ** 2
    alpha = v / (v - iou + (1 + eps))
    if detach_alpha:
        alpha = alpha.detach()
    return iou - (rho2 / (cw ** 2 + ch ** 2 + eps) + v * alpha)


def test_ciou_alpha_carries_no_gradient():
    """The gradient equals CIoU's with alpha held constant, and differs from the one through alpha."""
    box, target = [5.0, 5.0, 4.0, 2.0], torch.tensor([6.0, 5.0, 2.0, 3.0], dtype=torch.float64)
    p = torch.tensor([box], requires_grad=True)
    bbox_iou(p.T, target[None].float(), x1y1x2y2=False, CIoU=True).sum().backward()
    grads = {}
    for detach in (True, False):
        q = torch.tensor(box, dtype=torch.float64, requires_grad=True)
        _ciou_by_hand(q, target, detach_alpha=detach).backward()
        grads[detach] = q.grad.float()
    assert torch.allclose(p.grad[0], grads[True], rtol=1e-5, atol=1e-7)
    assert not torch.allclose(grads[True], grads[False], rtol=1e-3, atol=1e-5)  # the case can tell them apart
