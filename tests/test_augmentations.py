"""Augmentations: letterbox parity with upstream v6.0, and labels that stay glued to the pixels.

Consistency tests draw filled rectangles of unique colours, transform image and labels, then recover
each rectangle's box from the transformed pixels and compare it with the transformed label.
"""
import random

import cv2
import numpy as np
import pytest

from utils.data.augmentations import (Albumentations, augment_hsv, box_candidates, cutout, letterbox, mixup,
                                 perspective_matrix, random_perspective, transform_labels, translation_matrix,
                                 warp_image, warp_into)

COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
                    (255, 255, 255), (0, 128, 255)], np.uint8)

@pytest.fixture(scope="module")
def letterbox_fixture(fixtures_dir):
    return np.load(fixtures_dir / "letterbox.npz")


def test_letterbox_matches_upstream_exactly(letterbox_fixture, fixture_manifest):
    cases = fixture_manifest["letterbox"]  # each: source array, letterbox kwargs, upstream's results
    assert len(cases) == 4
    for case in cases:
        out, ratio, pad = letterbox(letterbox_fixture[case["src_key"]], **case["kwargs"])
        expected = letterbox_fixture[f"{case['name']}_out"]
        assert out.shape == expected.shape == tuple(case["out_shape"]) and out.dtype == np.uint8, case["name"]
        assert np.array_equal(out, expected), case["name"]
        assert ratio == tuple(letterbox_fixture[f"{case['name']}_ratio"]), case["name"]
        assert pad == tuple(letterbox_fixture[f"{case['name']}_pad"]) == tuple(case["pad"]), case["name"]


def test_letterbox_odd_padding_goes_bottom(letterbox_fixture, fixture_manifest):
    case = next(c for c in fixture_manifest["letterbox"] if c["name"] == "odd_pad")
    out, _, (dw, dh) = letterbox(letterbox_fixture[case["src_key"]], **case["kwargs"])
    assert dh % 1 == 0.5  # an odd total padding: the extra row goes below
    top = int(dh)
    assert (out[:top] == 114).all() and not (out[top] == 114).all()
    assert (out[-(top + 1):] == 114).all() and not (out[-(top + 2)] == 114).all()


def test_letterbox_returns_a_new_array_even_without_change():
    im = np.full((64, 96, 3), 7, np.uint8)
    out, ratio, pad = letterbox(im, (64, 96), auto=False)
    assert ratio == (1.0, 1.0) and pad == (0.0, 0.0)
    out[:] = 0
    assert (im == 7).all()


def test_letterbox_scalefill_and_no_upscale():
    im = np.zeros((100, 50, 3), np.uint8)
    out, ratio, pad = letterbox(im, (64, 96), auto=False, scaleFill=True)
    assert out.shape == (64, 96, 3) and ratio == (96 / 50, 64 / 100) and pad == (0.0, 0.0)
    out, ratio, pad = letterbox(im, 320, auto=False, scaleup=False)
    assert out.shape == (320, 320, 3) and ratio == (1.0, 1.0) and pad == (135.0, 110.0)
    out, ratio, pad = letterbox(im, (300, 300), auto=True, stride=32)  # minimum rectangle
    assert out.shape == (300, 172, 3) and ratio == (3.0, 3.0) and pad == (11.0, 0.0)  # 150 + 150 % 32


def draw_rects(shape, boxes, background=0):
    """Image with rectangle i (xyxy, pixel edges) filled with COLOURS[i]."""
    im = np.full(shape, background, np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        im[y1:y2, x1:x2] = COLOURS[i]
    return im


def recover_box(im, i, tol=40):
    """Box (pixel edges) of the pixels close to COLOURS[i], or None when there are none."""
    mask = (np.abs(im.astype(int) - COLOURS[i].astype(int)).max(2) <= tol)
    if mask.sum() < 4:
        return None
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


RECT_BOXES = np.array([[20, 30, 120, 90], [150, 40, 190, 200], [40, 130, 130, 230], [210, 220, 300, 290],
                       [230, 20, 290, 60]], float)


@pytest.mark.parametrize("new_shape,kwargs", [(320, dict(auto=False)), (256, dict(auto=True)),
                                               ((200, 300), dict(auto=False, scaleFill=True)),
                                               (640, dict(auto=False))])
def test_letterbox_labels_follow_pixels(new_shape, kwargs):
    im = draw_rects((300, 320, 3), RECT_BOXES)
    out, (rw, rh), (pw, ph) = letterbox(im, new_shape, **kwargs)
    expected = RECT_BOXES * [rw, rh, rw, rh] + [pw, ph, pw, ph]
    left, top = int(round(pw - 0.1)), int(round(ph - 0.1))
    assert (out[:top] == 114).all() and (out[:, :left] == 114).all()
    for i, box in enumerate(expected):
        # top/left padding is round(pad - 0.1): pixels sit up to half a pixel from the float pad
        assert np.abs(recover_box(out, i) - box).max() <= 1.5, (i, recover_box(out, i), box)


@pytest.mark.parametrize("seed", range(6))
def test_random_perspective_labels_follow_pixels(seed):
    im = draw_rects((320, 320, 3), RECT_BOXES)
    targets = np.concatenate([np.arange(len(RECT_BOXES))[:, None], RECT_BOXES], 1)
    random.seed(seed)
    out, new = random_perspective(im, targets.copy(), degrees=20, translate=0.15, scale=0.4, shear=8,
                                  perspective=0.0005 if seed % 2 else 0.0)
    assert out.shape == im.shape
    kept = set(new[:, 0].astype(int))
    for row in new:
        i, box = int(row[0]), row[1:5]
        found = recover_box(out, i)
        assert found is not None, f"label {i} kept but its pixels are gone"
        if box[0] > 0.5 and box[1] > 0.5 and box[2] < 319.5 and box[3] < 319.5:
            assert np.abs(found - box).max() <= 2.5, (i, found, box)
        else:  # cut by the border: v6.0 boxes the whole transformed rectangle, then clips, so they may
            # be looser than the visible part, never tighter
            assert (found[:2] >= box[:2] - 2.5).all() and (found[2:] <= box[2:] + 2.5).all(), (i, found, box)
    for i in set(range(len(RECT_BOXES))) - kept:  # dropped labels: little or nothing left in view
        found = recover_box(out, i)
        assert found is None or (found[2] - found[0]) * (found[3] - found[1]) < 0.25 * np.prod(
            RECT_BOXES[i, 2:] - RECT_BOXES[i, :2]) * 2.0 ** 2
    assert len(new) >= 1


def test_random_perspective_mosaic_border_shrinks_output_and_keeps_labels():
    im = draw_rects((640, 640, 3), RECT_BOXES * 2)
    targets = np.concatenate([np.arange(len(RECT_BOXES))[:, None], RECT_BOXES * 2], 1)
    random.seed(3)
    out, new = random_perspective(im, targets, degrees=0, translate=0.1, scale=0.5, shear=0,
                                  border=(-160, -160))
    assert out.shape == (320, 320, 3)
    assert len(new) > 0 and (new[:, [1, 3]] >= 0).all() and (new[:, [2, 4]] <= 320).all()
    for row in new:
        assert np.abs(recover_box(out, int(row[0])) - row[1:5]).max() <= 2.5


def test_random_perspective_identity_leaves_everything():
    im = draw_rects((128, 160, 3), RECT_BOXES[:2] / 2)
    targets = np.array([[3, 10, 15, 60, 45], [1, 75, 20, 95, 100]], float)
    out, new = random_perspective(im, targets.copy(), degrees=0, translate=0.0, scale=0.0, shear=0)
    assert out is im and np.array_equal(new, targets)


def test_transform_labels_matches_random_perspective():
    im = draw_rects((320, 320, 3), RECT_BOXES)
    targets = np.concatenate([np.arange(len(RECT_BOXES))[:, None], RECT_BOXES], 1)
    random.seed(11)
    _, expected = random_perspective(im, targets.copy(), degrees=30, translate=0.2, scale=0.5, shear=10)
    random.seed(11)
    M, s = perspective_matrix((320, 320), (320, 320), degrees=30, translate=0.2, scale=0.5, shear=10)
    assert np.array_equal(transform_labels(targets.copy(), M, s, 320, 320), expected)


def test_perspective_matrix_order_is_T_S_R_P_C():
    random.seed(5)
    draws = [random.uniform(-1e-3, 1e-3), random.uniform(-1e-3, 1e-3), random.uniform(-10, 10),
             random.uniform(0.5, 1.5), random.uniform(-5, 5), random.uniform(-5, 5),
             random.uniform(0.4, 0.6) * 300, random.uniform(0.4, 0.6) * 200]
    random.seed(5)
    M, s = perspective_matrix((100, 120), (200, 300), degrees=10, translate=0.1, scale=0.5, shear=5,
                              perspective=1e-3)
    C = translation_matrix(-60, -50)
    P = np.eye(3)
    P[2, :2] = draws[:2]
    a = np.deg2rad(draws[2])
    R = np.diag([draws[3], draws[3], 1.0])
    R[:2, :2] = draws[3] * np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])  # OpenCV's convention
    S = np.eye(3)
    S[0, 1], S[1, 0] = np.tan(np.deg2rad(draws[4])), np.tan(np.deg2rad(draws[5]))
    T = translation_matrix(draws[6], draws[7])
    assert s == draws[3]
    np.testing.assert_allclose(M, T @ S @ R @ P @ C, rtol=1e-12, atol=1e-12)


def test_warp_into_tiles_equals_canvas_warp_away_from_seams():
    s, xc, yc = 160, 130, 190
    rng = np.random.default_rng(0)
    tiles = [cv2.GaussianBlur(rng.integers(0, 256, (s, s, 3), dtype=np.uint8), (0, 0), 3) for _ in range(4)]
    places = [(max(xc - s, 0), max(yc - s, 0), xc, yc), (xc, max(yc - s, 0), min(xc + s, 2 * s), yc),
              (max(xc - s, 0), yc, xc, min(2 * s, yc + s)), (xc, yc, min(xc + s, 2 * s), min(yc + s, 2 * s))]
    canvas = np.full((2 * s, 2 * s, 3), 114, np.uint8)
    crops = []
    for tile, (x1, y1, x2, y2) in zip(tiles, places):
        canvas[y1:y2, x1:x2] = tile[:y2 - y1, :x2 - x1]
        crops.append((tile[:y2 - y1, :x2 - x1], x1, y1))
    random.seed(2)
    M, _ = perspective_matrix(canvas.shape, (s, s), degrees=10, translate=0.1, scale=0.5, shear=5)
    expected = warp_image(canvas, M, (s, s))
    out = np.full((s, s, 3), 114, np.uint8)
    for crop, x1, y1 in crops:
        warp_into(out, crop, M @ translation_matrix(x1, y1))
    diff = np.abs(out.astype(int) - expected.astype(int)).max(2)
    # map every output pixel back to the canvas; only pixels sampling within 1 px of a seam may differ
    ys, xs = np.mgrid[0:s, 0:s]
    src = np.linalg.solve(M, np.stack([xs.ravel(), ys.ravel(), np.ones(s * s)]))
    u, v = src[0].reshape(s, s), src[1].reshape(s, s)
    near_seam = (np.abs(u - xc) < 1.5) | (np.abs(v - yc) < 1.5) | (u < 1.5) | (v < 1.5) | \
                (u > 2 * s - 2.5) | (v > 2 * s - 2.5)
    assert diff[~near_seam].max() <= 1
    assert (diff > 1).sum() < 0.02 * s * s


def test_box_candidates_rules():
    before = np.array([[0, 0, 100, 100]] * 5, float).T
    after = np.array([[0, 0, 50, 50],  # 25% of the area: kept
                      [0, 0, 2, 50],  # 2 px wide: dropped
                      [0, 0, 30, 30],  # 9% of the area: dropped
                      [0, 0, 100, 4.9],  # aspect 20.4: dropped
                      [0, 0, 100, 5.1]], float).T  # aspect 19.6, 5.1% area: dropped by area only
    assert box_candidates(before, after).tolist() == [True, False, False, False, False]
    assert box_candidates(before, after, area_thr=0.01).tolist() == [True, False, True, False, True]
    assert box_candidates(before, after, area_thr=0.01, ar_thr=100).tolist() == [True, False, True, True, True]


def test_augment_hsv_zero_gains_is_identity():
    im = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    before = im.copy()
    assert augment_hsv(im, 0, 0, 0) is im
    assert np.array_equal(im, before)


def test_augment_hsv_changes_only_colour():
    rng = np.random.default_rng(2)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    index = rng.integers(0, 6, (60, 80))
    im = palette[index]
    np.random.seed(0)
    out = augment_hsv(im.copy(), 0.5, 0.7, 0.4)
    assert out.shape == im.shape and not np.array_equal(out, im)
    # every pixel of one input colour maps to one output colour (OpenCV's SIMD and scalar paths may
    # round 1 level apart): the change is per pixel, positions and shapes are untouched
    for k in range(6):
        colours = out[index == k].astype(int)
        assert (colours.max(0) - colours.min(0)).max() <= 1
    perm = rng.permutation(60 * 80)  # a pixel permutation commutes with the colour change
    np.random.seed(0)
    out_perm = augment_hsv(im.reshape(-1, 1, 3)[perm].copy(), 0.5, 0.7, 0.4)
    assert np.abs(out_perm.astype(int) - out.reshape(-1, 1, 3)[perm]).max() <= 1


def test_augment_hsv_value_gain_scales_grey():
    im = np.full((4, 4, 3), 100, np.uint8)
    np.random.seed(3)
    gain = np.random.uniform(-1, 1, 3)[2] * 0.4 + 1
    np.random.seed(3)
    augment_hsv(im, 0, 0, 0.4)
    assert (im == int(100 * gain)).all()  # grey stays grey, brightness times the drawn gain


def test_mixup_blends_and_concatenates():
    a, b = np.full((8, 8, 3), 200, np.uint8), np.full((8, 8, 3), 20, np.uint8)
    la, lb = np.array([[0, 1, 2, 3, 4.0]]), np.array([[5, 6, 7, 8, 9.0], [1, 1, 1, 2, 2.0]])
    np.random.seed(4)
    r = np.random.beta(32.0, 32.0)
    np.random.seed(4)
    im, labels = mixup(a, la, b, lb)
    assert im.dtype == np.uint8 and abs(int(im[0, 0, 0]) - int(200 * r + 20 * (1 - r))) <= 1
    assert np.array_equal(labels, np.concatenate([la, lb]))


def test_albumentations_without_package_is_a_noop():
    try:
        import albumentations  # noqa: F401
        pytest.skip("albumentations installed: the no-op path does not apply")
    except ImportError:
        pass
    im = np.zeros((10, 10, 3), np.uint8)
    labels = np.array([[1, 0.5, 0.5, 0.2, 0.2]], np.float32)
    out, out_labels = Albumentations()(im, labels)
    assert out is im and out_labels is labels


def test_cutout_paints_grey_patches_and_drops_hidden_labels():
    im = np.zeros((200, 200, 3), np.uint8)
    labels = np.array([[0, 10, 10, 190, 190], [1, 100, 100, 104, 104.0]])
    random.seed(0)
    kept = cutout(im, labels.copy(), p=1.0)
    painted = im.max(2) > 0
    assert painted.any() and im[painted].min() >= 64 and im[painted].max() <= 191
    assert 0 in kept[:, 0]  # the big box is never 60% hidden by one patch
    assert np.array_equal(cutout(im.copy(), labels, p=0.0), labels)


def test_random_perspective_v6_positional_order():
    """v6.0 order: im, targets, segments, degrees, translate, scale, shear, perspective, border."""
    im = np.full((128, 160, 3), 50, np.uint8)
    im[64, 80] = 255  # the centre pixel
    targets = np.array([[3, 10, 15, 60, 45], [1, 75, 20, 95, 100]], float)
    # no warp, border (-16, -32): a centred 96 x 96 crop, labels shifted by (-32, -16) and clipped
    out, new = random_perspective(im, targets.copy(), (), 0, 0.0, 0.0, 0, 0.0, (-16, -32))
    assert out.shape == (96, 96, 3) and np.argwhere(out[..., 0] == 255).tolist() == [[48, 48]]
    assert new.tolist() == [[3, 0, 0, 28, 29], [1, 43, 4, 63, 84]]
    triangle = np.array([[80, 30], [90, 30], [85, 60]], float)  # boxes come from the segments when given
    segments = [np.array([[10, 15], [60, 15], [60, 45], [10, 45]], float), triangle]
    _, new = random_perspective(im, targets.copy(), segments, 0, 0.0, 0.0, 0, 0.0, (-16, -32))
    assert new[1].tolist() == [1, 48, 14, 58, 44]
    # each warp option in its v6.0 position does what the same keyword does
    names = ("degrees", "translate", "scale", "shear", "perspective")
    for i, value in enumerate((30, 0.2, 0.5, 10, 0.001)):
        options = [0, 0.0, 0.0, 0, 0.0]
        options[i] = value
        random.seed(i)
        by_position = random_perspective(im, targets.copy(), (), *options, (0, 0))
        random.seed(i)
        by_name = random_perspective(im, targets.copy(), **dict(zip(names, options)), border=(0, 0))
        assert np.array_equal(by_position[0], by_name[0]) and np.array_equal(by_position[1], by_name[1])
        assert not np.array_equal(by_position[0], im), names[i]  # the option took effect
