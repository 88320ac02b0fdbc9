"""4-image mosaic (v6.0 geometry), warped tile by tile straight into the s x s output.

Upstream builds a 2s x 2s grey canvas, copies the four resized images into it around a random
centre (xc, yc) ~ U(s/2, 3s/2), then warps the whole canvas with random_perspective into s x s.
Here the same random transform M is drawn (same draws, same order), but each tile's visible crop
is warped directly into the output with M composed with the tile's canvas offset, and only over
the output rectangle the tile can reach. No canvas is filled or copied, and each output pixel is
computed about once. Pixels equal upstream's except along the 1-px seams where two tiles meet
(bilinear samples there blend with the grey fill instead of the neighbouring tile). Labels go
through exactly upstream's path (canvas coordinates, clip to [0, 2s], transform by M, filter).

Fast path for the default hyps (degrees = shear = perspective = 0): M is then a pure scale a
plus translation, and each tile is produced with `cv2.resize(fx=a)` (3-5x cheaper than a warp)
and pasted. cv2.resize samples on a grid whose origin is tied to the crop's integer start, so
the tile lands up to half an output pixel from where M would put it; that tile's labels are
moved with the same shifted translation, so labels stay exactly consistent with pixels. The
random draws (and so the scale and the placement statistics) are upstream's.

When copy-paste is active (hyp copy_paste > 0 and polygon labels exist) it needs the canvas,
so that case takes the canvas route.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import cv2
import numpy as np

from utils.data.augmentations import (PAD_VALUE, perspective_matrix, transform_labels,
                                 translation_matrix, warp_image, warp_into)
from utils.boxes import xyn2xy, xywhn2xyxy


def tile_placement(quadrant: int, xc: int, yc: int, w: int, h: int, size: int):
    """Canvas rectangle (x1, y1, x2, y2) of a tile and its offset (padw, padh) on the canvas.

    Quadrant 0/1/2/3 = top-left/top-right/bottom-left/bottom-right: the tile's inner corner sits
    on (xc, yc). The rectangle is clipped to the 2*size canvas; the source crop is the rectangle
    minus the offset.
    """
    padw = xc - w if quadrant in (0, 2) else xc
    padh = yc - h if quadrant in (0, 1) else yc
    x1, y1 = max(padw, 0), max(padh, 0)
    x2, y2 = min(padw + w, 2 * size), min(padh + h, 2 * size)
    return (x1, y1, x2, y2), (padw, padh)


def _footprint(M, rect, out_w, out_h):
    """Output sub-rectangle (x0, y0, x1, y1) a canvas rectangle can reach under M (1-px margin)."""
    x1, y1, x2, y2 = rect
    pts = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1]], dtype=np.float64) @ M.T
    if (pts[:, 2] <= 0).any():  # degenerate perspective: use the whole output
        return 0, 0, out_w, out_h
    xy = pts[:, :2] / pts[:, 2:]
    x0, y0 = np.floor(xy.min(0)).astype(int) - 1
    xe, ye = np.ceil(xy.max(0)).astype(int) + 2
    return max(x0, 0), max(y0, 0), min(xe, out_w), min(ye, out_h)


def is_scale_translate(M) -> bool:
    """True when M only scales (positively) and translates: no rotation, shear or perspective."""
    return M[0, 1] == 0 and M[1, 0] == 0 and M[0, 0] > 0 and M[1, 1] > 0 and tuple(M[2]) == (0, 0, 1)


def _plan_axis(a, t, start, length, out_len):
    """One axis of pasting a crop scaled by `a` (crop index i sits at canvas start + i; ideal output
    position a*(start + i) + t). Returns (c0, c1, u0, shift, lo, hi) or None when nothing shows:
    resize crop[c0:c1] with fx=a and place it at output u0; `shift` (|shift| <= 0.5) is how far
    that is from the ideal; output range [lo, hi) is this tile's (one extra pixel so that
    neighbouring tiles overlap rather than leave a grey seam)."""
    c0 = max(0, math.floor(-t / a - start))  # first crop index any output pixel samples
    c1 = min(length, math.ceil((out_len - 1 - t) / a - start) + 2)
    if c1 <= c0:
        return None
    v = a * (start + c0) + t + 0.5 - 0.5 * a  # output position where cv2.resize's grid starts
    u0 = round(v)
    shift = u0 - v
    lo = max(0, math.ceil(a * (start - 0.5) + t + shift))
    hi = min(out_len, math.ceil(a * (start + length - 0.5) + t + shift) + 1)
    return (c0, c1, u0, shift, lo, hi) if hi > lo else None


def paste_scaled(out, crop, x1, y1, M):
    """Scale `crop` (canvas top-left (x1, y1)) by scale-translate M into `out`.

    Returns the tile's actual 3x3 matrix (M with its translation shifted by < 0.5 px), or None
    when the tile is outside the output."""
    h, w = crop.shape[:2]
    ax, ay = _plan_axis(M[0, 0], M[0, 2], x1, w, out.shape[1]), _plan_axis(M[1, 1], M[1, 2], y1, h, out.shape[0])
    if ax is None or ay is None:
        return None
    _paste(out, crop, M, ax, ay)
    Mt = M.copy()
    Mt[0, 2] += ax[3]
    Mt[1, 2] += ay[3]
    return Mt


def _paste(out, crop, M, ax, ay):
    """Resize the planned part of `crop` by M's scale and place it at the planned output rectangle."""
    (c0, c1, u0, _, ulo, uhi), (r0, r1, v0, _, vlo, vhi) = ax, ay
    scaled = cv2.resize(crop[r0:r1, c0:c1], (0, 0), fx=M[0, 0], fy=M[1, 1], interpolation=cv2.INTER_LINEAR)
    uhi, vhi = min(uhi, u0 + scaled.shape[1]), min(vhi, v0 + scaled.shape[0])
    if uhi > ulo and vhi > vlo:
        out[vlo:vhi, ulo:uhi] = scaled[vlo - v0:vhi - v0, ulo - u0:uhi - u0]


def bbox_ioa(box, boxes, eps=1e-7):
    """Intersection of one xyxy box with each of (n, 4) boxes, over each of those boxes' area."""
    iw = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(0)
    ih = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(0)
    return iw * ih / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + eps)


def copy_paste(im, labels, segments, p=0.5):
    """v6.0 copy-paste: mirror round(p*n) random polygons left-right and paste those that cover
    less than 30% of every existing box. labels (n, 5) pixel xyxy; segments list of (k, 2)."""
    n = len(segments)
    if not (p and n):
        return im, labels, segments
    w = im.shape[1]
    mask = np.zeros(im.shape, np.uint8)
    for j in random.sample(range(n), k=round(p * n)):
        cls, x1, y1, x2, y2 = labels[j]
        mirrored = np.array([w - x2, y1, w - x1, y2])
        if (bbox_ioa(mirrored, labels[:, 1:5]) < 0.30).all():
            labels = np.concatenate((labels, [[cls, *mirrored]]), 0)
            segments.append(np.concatenate((w - segments[j][:, :1], segments[j][:, 1:2]), 1))
            cv2.drawContours(mask, [segments[j].astype(np.int32)], -1, (255, 255, 255), cv2.FILLED)
    pasted = cv2.flip(cv2.bitwise_and(im, mask), 1)
    sel = pasted > 0
    im[sel] = pasted[sel]
    return im, labels, segments


@dataclass
class TilePlan:
    """One mosaic tile: its resized source image, its rectangle on the 2s canvas and offset there,
    the 3x3 matrix (canvas -> output) its pixels and labels use, and how the pixels get there:
    `paste` = the two axis plans of the scale-translate fast path, None = a general warp.
    `visible` is False when no output pixel comes from this tile."""
    img: np.ndarray
    rect: tuple
    pad: tuple
    M: np.ndarray
    paste: tuple | None = None
    visible: bool = True

    def crop(self):
        """The part of the source image the canvas shows (a view)."""
        (x1, y1, x2, y2), (padw, padh) = self.rect, self.pad
        return self.img[y1 - padh:y2 - padh, x1 - padw:x2 - padw]


@dataclass
class MosaicPlan:
    """Everything random about one mosaic, drawn before any output pixel is made: the tiles,
    the perspective matrix M and scale, the final labels (n, 5) [cls, x1, y1, x2, y2] in output
    pixels, the output size (h, w), and the 2s canvas when copy-paste needed one."""
    tiles: list
    M: np.ndarray
    scale: float
    labels: np.ndarray
    out_hw: tuple
    canvas: np.ndarray | None = None


def load_mosaic(dataset, index):
    """Mosaic of image `index` and 3 random others -> (s x s BGR image, (n, 5) [cls, x1, y1, x2, y2])."""
    plan = plan_mosaic(dataset, index)
    return render_mosaic(plan), plan.labels


def plan_mosaic(dataset, index) -> MosaicPlan:
    """Draw one mosaic (same draws, same order as ever) and compute its labels; no output pixels."""
    s, hyp = dataset.img_size, dataset.hyp
    yc, xc = (int(random.uniform(-b, 2 * s + b)) for b in dataset.mosaic_border)
    indices = [index] + random.choices(dataset.indices, k=3)
    random.shuffle(indices)

    tiles, labels4, segments4 = [], [], []
    for quadrant, i in enumerate(indices):
        img, _, (h, w) = dataset.load_image(i)
        rect, (padw, padh) = tile_placement(quadrant, xc, yc, w, h, s)
        tiles.append((img, rect, padw, padh))
        labels = dataset.labels[i].copy()
        if labels.size:
            labels[:, 1:] = xywhn2xyxy(labels[:, 1:], w, h, padw, padh)
        labels4.append(labels)
        segments4.append([xyn2xy(x, w, h, padw, padh) for x in dataset.segments[i]])
    for x in (*(lb[:, 1:] for lb in labels4), *(p for segs in segments4 for p in segs)):
        np.clip(x, 0, 2 * s, out=x)

    canvas = None
    if hyp.get("copy_paste", 0.0) and any(segments4):  # copy-paste works on the 2s canvas
        canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, dtype=np.uint8)
        for img, (x1, y1, x2, y2), padw, padh in tiles:
            canvas[y1:y2, x1:x2] = img[y1 - padh:y2 - padh, x1 - padw:x2 - padw]
        labels4, segments4 = [np.concatenate(labels4, 0)], [[p for segs in segments4 for p in segs]]
        canvas, labels4[0], segments4[0] = copy_paste(canvas, labels4[0], segments4[0], p=hyp["copy_paste"])

    border = dataset.mosaic_border
    out_h, out_w = 2 * s + 2 * border[0], 2 * s + 2 * border[1]
    M, scale = perspective_matrix((2 * s, 2 * s), (out_h, out_w), hyp["degrees"], hyp["translate"],
                                  hyp["scale"], hyp["shear"], hyp["perspective"])
    if canvas is not None:
        plans, matrices = [], [M]
    else:
        plans = [plan_tile(img, rect, (padw, padh), M, out_w, out_h) for img, rect, padw, padh in tiles]
        matrices = [t.M for t in plans]
    parts = [transform_labels(lb, Mt, scale, out_w, out_h, segs)
             for lb, segs, Mt in zip(labels4, segments4, matrices)]
    return MosaicPlan(plans, M, scale, np.concatenate(parts, 0), (out_h, out_w), canvas)


def plan_tile(img, rect, pad, M, out_w, out_h) -> TilePlan:
    """How one tile reaches the output: fast scaled paste (its matrix shifted < 0.5 px to where
    cv2.resize puts it) or a general warp by M; invisible when it cannot reach the output."""
    x1, y1, x2, y2 = rect
    if x2 <= x1 or y2 <= y1:
        return TilePlan(img, rect, pad, M, visible=False)
    if is_scale_translate(M):
        ax = _plan_axis(M[0, 0], M[0, 2], x1, x2 - x1, out_w)
        ay = _plan_axis(M[1, 1], M[1, 2], y1, y2 - y1, out_h)
        if ax is None or ay is None:
            return TilePlan(img, rect, pad, M, visible=False)
        Mt = M.copy()
        Mt[0, 2] += ax[3]
        Mt[1, 2] += ay[3]
        return TilePlan(img, rect, pad, Mt, paste=(ax, ay))
    return TilePlan(img, rect, pad, M)


def render_mosaic(plan: MosaicPlan):
    """The mosaic's pixels (BGR uint8, out_hw) from its plan, on the CPU with OpenCV."""
    out_h, out_w = plan.out_hw
    if plan.canvas is not None:
        return warp_image(plan.canvas, plan.M, (out_w, out_h))
    out = np.full((out_h, out_w, 3), PAD_VALUE, dtype=np.uint8)
    for tile in plan.tiles:
        if tile.visible:
            _draw_tile(out, tile)
    return out


def _draw_tile(out, tile: TilePlan):
    """Draw one visible tile's crop into `out` as its plan says."""
    crop = tile.crop()
    if tile.paste is not None:
        _paste(out, crop, tile.M, *tile.paste)
        return
    x1, y1 = tile.rect[:2]
    fx0, fy0, fx1, fy1 = _footprint(tile.M, tile.rect, out.shape[1], out.shape[0])
    if fx1 > fx0 and fy1 > fy0:
        Mt = translation_matrix(-fx0, -fy0) @ tile.M @ translation_matrix(x1, y1)
        warp_into(out[fy0:fy1, fx0:fx1], crop, Mt)
