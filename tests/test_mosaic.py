"""Mosaic: v6.0 placement, and our direct tile warps against an upstream-style 2s canvas + warp."""
import random

import cv2
import numpy as np
import pytest

from utils.data import mosaic
from utils.data.augmentations import random_perspective
from utils.boxes import xywhn2xyxy
from utils.data.detection_dataset import LoadImagesAndLabels
from utils.data.mosaic import load_mosaic, paste_scaled, tile_placement


pytestmark = pytest.mark.usefixtures("user_cache")  # caches stay in tmp_path


def v6_placement(q, xc, yc, w, h, s):
    """The four quadrant cases written out the long way (large canvas a, small image b)."""
    if q == 0:
        a = max(xc - w, 0), max(yc - h, 0), xc, yc
        b = w - (a[2] - a[0]), h - (a[3] - a[1]), w, h
    elif q == 1:
        a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
        b = 0, h - (a[3] - a[1]), min(w, a[2] - a[0]), h
    elif q == 2:
        a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
        b = w - (a[2] - a[0]), 0, w, min(a[3] - a[1], h)
    else:
        a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
        b = 0, 0, min(w, a[2] - a[0]), min(a[3] - a[1], h)
    return a, b


@pytest.mark.parametrize("xc, yc, w, h", [(320, 320, 640, 480), (100, 900, 500, 300), (959, 400, 640, 640),
                                           (500, 959, 213, 640)])
def test_tile_placement_matches_v6(xc, yc, w, h):
    s = 640
    for q in range(4):
        (x1, y1, x2, y2), (padw, padh) = tile_placement(q, xc, yc, w, h, s)
        a, b = v6_placement(q, xc, yc, w, h, s)
        assert (x1, y1, x2, y2) == a
        assert (x1 - padw, y1 - padh, x2 - padw, y2 - padh) == b  # source crop
        assert (padw, padh) == (a[0] - b[0], a[1] - b[1])


@pytest.mark.parametrize("a, tx, ty", [(0.5, -100.3, -77.7), (0.73, -150.2, -201.9), (1.0, -321.5, -319.25),
                                        (1.37, -500.6, -480.45)])
def test_paste_scaled_equals_warp_with_returned_matrix(a, tx, ty):
    rng = np.random.default_rng(0)
    crop = cv2.GaussianBlur(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8), (3, 3), 0)
    x1, y1 = 333, 365
    M = np.array([[a, 0, tx], [0, a, ty], [0, 0, 1.0]])
    out = np.full((320, 320, 3), 114, np.uint8)
    Mt = paste_scaled(out, crop, x1, y1, M)
    assert abs(Mt[0, 2] - tx) <= 0.5 and abs(Mt[1, 2] - ty) <= 0.5 and Mt[0, 0] == a
    shift = np.array([[1, 0, x1], [0, 1, y1], [0, 0, 1.0]])
    ref = cv2.warpAffine(crop, (Mt @ shift)[:2], (320, 320), borderValue=(114, 114, 114))
    # compare where the tile is at least 2 px inside its footprint
    inside = cv2.warpAffine(np.ones(crop.shape[:2], np.uint8), (Mt @ shift)[:2], (320, 320))
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8)).astype(bool)
    assert inside.sum() > 1000
    diff = np.abs(out.astype(int) - ref.astype(int))[inside]
    assert diff.max() <= 2 and diff.mean() < 0.3  # fixed-point rounding only: no sub-pixel offset
    assert (out[~cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)] == 114).all()


@pytest.fixture
def coco_dataset(tmp_path, coco128_copy):
    return coco128_copy(12, tmp_path / "images" / "t")


def reference_mosaic(ds, index):
    """Upstream's route with the same draws: fill a 2s canvas, then random_perspective on it."""
    s, hyp = ds.img_size, ds.hyp
    yc, xc = (int(random.uniform(-b, 2 * s + b)) for b in ds.mosaic_border)
    indices = [index] + random.choices(ds.indices, k=3)
    random.shuffle(indices)
    canvas = np.full((2 * s, 2 * s, 3), 114, np.uint8)
    labels4 = []
    for q, i in enumerate(indices):
        img, _, (h, w) = ds.load_image(i)
        (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = v6_placement(q, xc, yc, w, h, s)
        canvas[ay1:ay2, ax1:ax2] = img[by1:by2, bx1:bx2]
        lb = ds.labels[i].copy()
        lb[:, 1:] = xywhn2xyxy(lb[:, 1:], w, h, ax1 - bx1, ay1 - by1)
        labels4.append(lb)
    labels4 = np.concatenate(labels4, 0)
    np.clip(labels4[:, 1:], 0, 2 * s, out=labels4[:, 1:])
    return random_perspective(canvas, labels4, degrees=hyp["degrees"], translate=hyp["translate"],
                              scale=hyp["scale"], shear=hyp["shear"], perspective=hyp["perspective"],
                              border=ds.mosaic_border)


@pytest.mark.parametrize("geometry", [{}, {"degrees": 15.0, "shear": 3.0, "perspective": 0.0005}])
def test_tile_warps_match_canvas_warp(coco_dataset, monkeypatch, geometry, hyp):
    """Warp path (any geometry): same labels exactly, same pixels except the 1-px seams."""
    hyp = dict(hyp, **geometry)
    ds = LoadImagesAndLabels(str(coco_dataset), img_size=320, batch_size=4, augment=True, hyp=hyp)
    monkeypatch.setattr(mosaic, "is_scale_translate", lambda M: False)  # force per-tile warpAffine
    for seed in range(6):
        random.seed(seed)
        ref_img, ref_labels = reference_mosaic(ds, seed)
        random.seed(seed)
        img, labels = load_mosaic(ds, seed)
        assert np.allclose(labels, ref_labels, atol=1e-4)
        differs = np.abs(img.astype(int) - ref_img.astype(int)).max(-1) > 2
        assert differs.mean() < 0.01, differs.mean()


def test_fast_path_stays_within_half_a_pixel_of_canvas_warp(coco_dataset, hyp):
    ds = LoadImagesAndLabels(str(coco_dataset), img_size=320, batch_size=4, augment=True, hyp=hyp)
    n_labels = 0
    for seed in range(8):
        random.seed(seed)
        ref_img, ref_labels = reference_mosaic(ds, seed)
        random.seed(seed)
        img, labels = load_mosaic(ds, seed)
        assert labels.shape == ref_labels.shape and np.array_equal(labels[:, 0], ref_labels[:, 0])
        assert np.abs(labels[:, 1:] - ref_labels[:, 1:]).max(initial=0) <= 0.5 + 1e-4
        # same content: grey area identical up to the seams, image statistics alike
        grey, ref_grey = (img == 114).all(-1), (ref_img == 114).all(-1)
        assert (grey != ref_grey).mean() < 0.01
        assert abs(img.astype(float).mean() - ref_img.astype(float).mean()) < 1.0
        n_labels += len(labels)
    assert n_labels > 20
