"""Image augmentations and letterboxing, behaving like upstream YOLOv5 v6.0.

Every function here works on OpenCV images (H x W x 3, uint8, BGR) and on label arrays in
the layout the dataset uses: (n, 5) rows of [class, x1, y1, x2, y2] in pixels for the geometric
transforms, [class, x, y, w, h] normalised for Albumentations / mixup callers.

Randomness comes from the global `random` (geometry) and `numpy.random` (colour, mixup) generators,
in the same draw order as upstream, so seeding the dataset workers makes runs reproducible.

Flips are done by the dataset itself (np.flipud / np.fliplr plus y := 1 - y / x := 1 - x on the
normalised labels); they need no helper here.

Speed notes (the loader must beat upstream by 1.5x): letterbox resizes straight into its padded
output, augment_hsv uses one 3-channel lookup table and converts back in place, and the perspective
warp is split into matrix / warp / label steps so a mosaic can warp each tile directly into the
output image (see `warp_into`) instead of building and warping a 2x canvas.
"""
import logging
import math
import random

import cv2
import numpy as np

from utils.boxes import resample_segments, segment2box
from utils.upstream_call import upstream_positions

LOGGER = logging.getLogger("yolov5")
PAD_VALUE = 114  # grey used for every border and empty area, as upstream


# --------------------------------------------------------------------------------------- letterbox
def letterbox(im, new_shape=(640, 640), color=(114, 114, 114), auto=True, scaleFill=False, scaleup=True,
              stride=32):
    """Resize keeping the aspect ratio, then pad to `new_shape` (h, w) or an int for a square.

    auto: pad only up to the next multiple of `stride` (minimum rectangle); scaleFill: stretch to
    new_shape with no padding; scaleup=False: never enlarge (validation). Returns (image,
    (ratio_w, ratio_h), (pad_w, pad_h)) where each pad is half the total padding, as a float; an odd
    total puts the extra pixel at the bottom/right. The image is always a new array, so callers may
    augment it in place without touching a cached source image.
    """
    h0, w0 = im.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    out_h, out_w = int(new_shape[0]), int(new_shape[1])

    r = min(out_h / h0, out_w / w0)
    if not scaleup:
        r = min(r, 1.0)
    ratio = r, r
    new_w, new_h = int(round(w0 * r)), int(round(h0 * r))
    dw, dh = out_w - new_w, out_h - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    elif scaleFill:
        dw, dh = 0, 0
        new_w, new_h = out_w, out_h
        ratio = out_w / w0, out_h / h0
    dw, dh = dw / 2, dh / 2

    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    shape = (new_h + top + bottom, new_w + left + right) + im.shape[2:]
    out = np.empty(shape, dtype=im.dtype)
    # Fill only the border strips, then resize (or copy) straight into the centre region.
    for strip in (out[:top], out[top + new_h:], out[top:top + new_h, :left], out[top:top + new_h, left + new_w:]):
        _fill(strip, color)
    inner = out[top:top + new_h, left:left + new_w]
    if (w0, h0) != (new_w, new_h):
        resized = cv2.resize(im, (new_w, new_h), dst=inner, interpolation=cv2.INTER_LINEAR)
        if not np.shares_memory(resized, out):  # the OpenCV binding could not write into the view
            inner[...] = resized
    else:
        inner[...] = im
    return out, ratio, (dw, dh)


def _fill(region, color):
    """Set a (possibly empty) image region to a colour; a scalar fill is ~50x faster than a tuple."""
    if region.size:
        if region.ndim == 2 or len(set(color)) == 1:
            region[...] = color[0]
        else:
            region[...] = np.asarray(color, dtype=region.dtype)


# ------------------------------------------------------------------------------ random perspective
def translation_matrix(dx, dy):
    """3x3 matrix that shifts points by (dx, dy); compose with `M @ translation_matrix(x, y)`."""
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def perspective_matrix(in_shape, out_shape, degrees=10, translate=.1, scale=.1, shear=10, perspective=0.0):
    """Draw one random v6.0 geometric transform; returns (M 3x3 float64, scale factor s).

    in_shape / out_shape are (h, w) of the source and of the output (output = input + 2 * border;
    for a mosaic the source is the 2s x 2s canvas and the output s x s). M = T @ S @ R @ P @ C: C moves
    the source centre to the origin, P adds perspective, R rotates by a ~ U(+-degrees) and scales by
    s ~ U(1 +- scale), S shears in both axes, T moves the origin to a random point near the output
    centre. Draw order matches upstream (P, R, S, T) so seeded `random` gives the same transform.
    s is returned because box_candidates compares new boxes against the original ones scaled by s.
    """
    in_h, in_w = in_shape[:2]
    out_h, out_w = out_shape[:2]
    C = translation_matrix(-in_w / 2, -in_h / 2)

    P = np.eye(3)
    P[2, 0] = random.uniform(-perspective, perspective)
    P[2, 1] = random.uniform(-perspective, perspective)

    R = np.eye(3)
    angle = random.uniform(-degrees, degrees)
    s = random.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(angle=angle, center=(0, 0), scale=s)

    S = np.eye(3)
    S[0, 1] = math.tan(random.uniform(-shear, shear) * math.pi / 180)
    S[1, 0] = math.tan(random.uniform(-shear, shear) * math.pi / 180)

    T = translation_matrix(random.uniform(0.5 - translate, 0.5 + translate) * out_w,
                           random.uniform(0.5 - translate, 0.5 + translate) * out_h)
    return T @ S @ R @ P @ C, s


def is_perspective(M):
    """True when M has a projective part (needs warpPerspective and division by w)."""
    return bool(M[2, 0] != 0 or M[2, 1] != 0 or M[2, 2] != 1)


def warp_image(im, M, out_size, border_value=(PAD_VALUE,) * 3):
    """Warp `im` by the 3x3 matrix M into a new (w, h) = out_size image, bilinear, grey border."""
    if is_perspective(M):
        return cv2.warpPerspective(im, M, dsize=out_size, borderValue=border_value)
    return cv2.warpAffine(im, M[:2], dsize=out_size, borderValue=border_value)


def warp_into(dst, src, M):
    """Warp `src` by M into the existing image `dst`, leaving pixels outside src's footprint as they are.

    For mosaics: fill the s x s output with 114 once, then for each tile call
    `warp_into(out, tile_crop, M @ translation_matrix(x1a, y1a))` where tile_crop is the part of the
    resized image that the 2s canvas would show and (x1a, y1a) its top-left corner on that canvas. The
    result equals warping the full canvas everywhere except a 1-px seam where two tiles (or a tile and the
    grey border) meet: there the bilinear sample mixes with what dst already holds rather than with the
    neighbouring tile. Labels are unaffected (they use M and canvas coordinates as before).
    """
    h, w = dst.shape[:2]
    if is_perspective(M):
        cv2.warpPerspective(src, M, dsize=(w, h), dst=dst, borderMode=cv2.BORDER_TRANSPARENT)
    else:
        cv2.warpAffine(src, M[:2], dsize=(w, h), dst=dst, borderMode=cv2.BORDER_TRANSPARENT)
    return dst


def box_candidates(box1, box2, wh_thr=2, ar_thr=20, area_thr=0.1, eps=1e-16):
    """Boolean mask of boxes worth keeping after a transform; box1 before (scaled), box2 after, both (4, n).

    Kept when the new box is wider and taller than wh_thr pixels, keeps more than area_thr of the
    (scaled) original area, and its aspect ratio stays below ar_thr.
    """
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def _apply(M, points):
    """Transform (n, 2) points by the 3x3 matrix M (with perspective division when needed)."""
    xy = points @ M[:2, :2].T + M[:2, 2]
    if is_perspective(M):
        w = points @ M[2, :2] + M[2, 2]
        xy = xy / w[:, None]
    return xy


def transform_boxes(boxes, M, width, height):
    """Transform (n, 4) xyxy boxes by M via their 4 corners; return enclosing boxes clipped to the image."""
    n = len(boxes)
    corners = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    xy = _apply(M, corners).reshape(n, 4, 2)
    new = np.concatenate((xy.min(1), xy.max(1)), axis=1)
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
    return new


def transform_segments(segments, M, width, height):
    """Transform polygons by M; returns (new segments, (n, 4) boxes of the points inside the image)."""
    out_segments, boxes = [], np.zeros((len(segments), 4))
    for i, segment in enumerate(resample_segments(segments)):
        xy = _apply(M, segment)
        out_segments.append(xy)
        boxes[i] = segment2box(xy, width, height)
    return out_segments, boxes


def transform_labels(targets, M, s, width, height, segments=()):
    """Move (n, 5) [cls, x1, y1, x2, y2] labels through M and drop the ones box_candidates rejects.

    With non-empty polygon segments the boxes come from the transformed polygons (area_thr 0.01),
    otherwise from the transformed box corners (area_thr 0.10). Returns a new array.
    """
    if not len(targets):
        return targets
    use_segments = len(segments) > 0 and any(np.asarray(x).any() for x in segments)
    if use_segments:
        _, new = transform_segments(segments, M, width, height)
    else:
        new = transform_boxes(targets[:, 1:5], M, width, height)
    keep = box_candidates(box1=targets[:, 1:5].T * s, box2=new.T, area_thr=0.01 if use_segments else 0.10)
    targets = targets[keep]
    targets[:, 1:5] = new[keep]
    return targets


@upstream_positions("im", "targets", "segments", "degrees", "translate", "scale", "shear", "perspective", "border")
def random_perspective(im, targets=(), segments=(), *, degrees=10, translate=.1, scale=.1, shear=10,
                       perspective=0.0, border=(0, 0)):
    """Random rotation / scale / shear / translation / perspective of an image and its labels (v6.0).

    targets: (n, 5) [cls, x1, y1, x2, y2] in pixels; border (by, bx) grows (or, negative, shrinks)
    the output: out = (h + 2*by, w + 2*bx). Returns (image, kept targets).
    """
    out_h, out_w = im.shape[0] + border[0] * 2, im.shape[1] + border[1] * 2
    M, s = perspective_matrix(im.shape, (out_h, out_w), degrees, translate, scale, shear, perspective)
    if border[0] != 0 or border[1] != 0 or (M != np.eye(3)).any():
        im = warp_image(im, M, (out_w, out_h))
    targets = transform_labels(np.asarray(targets), M, s, out_w, out_h, segments)
    return im, targets


# ---------------------------------------------------------------------------------------- colour
def augment_hsv(im, hgain=0.5, sgain=0.5, vgain=0.5):
    """Random hue/saturation/value gains on a BGR uint8 image, in place (no-op when all gains are 0).

    Gains g = U(-1, 1) * gain + 1 per channel; hue is multiplied modulo 180 (OpenCV's hue range),
    saturation and value multiplied and clipped to 255. One 3-channel lookup table does all three.
    """
    return apply_hsv(im, hsv_gains(hgain, sgain, vgain))


def hsv_gains(hgain=0.5, sgain=0.5, vgain=0.5):
    """Draw the 3 HSV gains from numpy's generator; None (and no draw) when all gains are 0."""
    if not (hgain or sgain or vgain):
        return None
    return np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1


def hsv_lut(g):
    """(256, 3) uint8 lookup table of the gains g for the H, S and V channels (OpenCV ranges)."""
    x = np.arange(0, 256, dtype=g.dtype)
    lut = np.empty((256, 3), dtype=np.uint8)
    lut[:, 0] = ((x * g[0]) % 180).astype(np.uint8)
    lut[:, 1] = np.clip(x * g[1], 0, 255).astype(np.uint8)
    lut[:, 2] = np.clip(x * g[2], 0, 255).astype(np.uint8)
    return lut


def apply_hsv(im, g):
    """Apply drawn HSV gains (or None: nothing) to a BGR uint8 image in place."""
    if g is None:
        return im
    hsv = cv2.cvtColor(im, cv2.COLOR_BGR2HSV)
    cv2.LUT(hsv, hsv_lut(g).reshape(256, 1, 3), dst=hsv)
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=im)
    return im


def hist_equalize(im, clahe=True, bgr=False):
    """Equalise the luminance histogram of an RGB (or BGR) uint8 image; returns a new image."""
    yuv = cv2.cvtColor(im, cv2.COLOR_BGR2YUV if bgr else cv2.COLOR_RGB2YUV)
    if clahe:
        yuv[:, :, 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(yuv[:, :, 0])
    else:
        yuv[:, :, 0] = cv2.equalizeHist(yuv[:, :, 0])
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR if bgr else cv2.COLOR_YUV2RGB)


# ----------------------------------------------------------------------------------- mixing, cutout
def mixup(im, labels, im2, labels2):
    """Blend two same-size images with ratio r ~ Beta(32, 32) and concatenate their labels."""
    return blend(im, im2, mixup_ratio()), np.concatenate((labels, labels2), 0)


def mixup_ratio():
    """Draw mixup's blend ratio r ~ Beta(32, 32) from numpy's generator."""
    return np.random.beta(32.0, 32.0)


def blend(im, im2, r):
    """im * r + im2 * (1 - r), truncated to uint8."""
    return (im.astype(np.float32) * r + im2.astype(np.float32) * (1 - r)).astype(np.uint8)


def cutout(im, labels, p=0.5):
    """Paint random grey-ish rectangles (disabled in v6.0 training); drops labels more than 60% hidden.

    labels: (n, 5) [cls, x1, y1, x2, y2] in pixels. Modifies im in place; returns kept labels.
    """
    if random.random() >= p:
        return labels
    h, w = im.shape[:2]
    for fraction in [0.5] * 1 + [0.25] * 2 + [0.125] * 4 + [0.0625] * 8 + [0.03125] * 16:
        mask_h, mask_w = random.randint(1, int(h * fraction)), random.randint(1, int(w * fraction))
        x1, y1 = max(0, random.randint(0, w) - mask_w // 2), max(0, random.randint(0, h) - mask_h // 2)
        x2, y2 = min(w, x1 + mask_w), min(h, y1 + mask_h)
        im[y1:y2, x1:x2] = [random.randint(64, 191) for _ in range(3)]
        if len(labels) and fraction > 0.03:
            boxes = labels[:, 1:5]
            inter_w = (np.minimum(boxes[:, 2], x2) - np.maximum(boxes[:, 0], x1)).clip(0)
            inter_h = (np.minimum(boxes[:, 3], y2) - np.maximum(boxes[:, 1], y1)).clip(0)
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + 1e-7
            labels = labels[inter_w * inter_h / area < 0.60]
    return labels


# ---------------------------------------------------------------------------------- albumentations
class Albumentations:
    """Upstream v6.0's optional extra transforms, used only when `albumentations` is installed.

    Called as `im, labels = Albumentations()(im, labels, p)` with labels (n, 5) [cls, x, y, w, h]
    normalised (yolo bbox format). Without the package it returns its inputs and logs that once.
    """
    _missing_logged = False

    def __init__(self):
        self.transform = None
        try:
            import albumentations as A
        except ImportError:
            if not Albumentations._missing_logged:
                LOGGER.info("albumentations: not installed, its optional transforms are skipped "
                            "(pip install albumentations to enable them)")
                Albumentations._missing_logged = True
            return
        self.transform = A.Compose(
            [A.Blur(p=0.01), A.MedianBlur(p=0.01), A.ToGray(p=0.01), A.CLAHE(p=0.01),
             A.RandomBrightnessContrast(p=0.0), A.RandomGamma(p=0.0), _image_compression(A)],
            bbox_params=A.BboxParams(format="yolo", label_fields=["class_labels"]))
        LOGGER.info("albumentations: " + ", ".join(f"{t}" for t in self.transform.transforms if t.p))

    def __call__(self, im, labels, p=1.0):
        if self.transform is not None and random.random() < p:
            new = self.transform(image=im, bboxes=labels[:, 1:], class_labels=labels[:, 0])
            im = new["image"]
            labels = np.array([[c, *b] for c, b in zip(new["class_labels"], new["bboxes"])],
                              dtype=np.float32).reshape(-1, 5)
        return im, labels


def _image_compression(A):
    """ImageCompression(quality >= 75, p=0): the keyword changed from quality_lower to quality_range."""
    try:
        return A.ImageCompression(quality_range=(75, 100), p=0.0)
    except TypeError:
        return A.ImageCompression(quality_lower=75, p=0.0)
