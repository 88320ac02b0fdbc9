"""Verification of one image and its label file (run once per image, results go to the label cache).

Checks, as upstream v6.0/v6.1, with our choices where they differ:
* image: PIL can identify and verify it; its format is one of IMG_FORMATS; both sides >= 10 px
  (EXIF-rotated size); it decodes completely (JPEGs are decoded at 1/8 scale, which reads every
  entropy-coded block, so truncation is caught at a fraction of the cost of a full decode).
* JPEG whose bytes do not end with the FF D9 end-of-image marker: v6.0 re-saved the user's file
  in place (quality 100). We never modify user data: if the data up to the last FF D9 marker
  decodes completely, that byte range (lossless, pixel-identical) is written as a repaired copy
  into a repair folder beside the label cache (or the user cache folder if that is read-only),
  the dataset reads the copy, and a warning names it. A JPEG whose data is cut short cannot be
  restored and is skipped as corrupt (v6.0 skipped it too: its re-save failed).
* labels: numeric; any row with more than 8 values makes the file polygon segments (boxes are the
  polygons' extents); exactly 5 columns; finite; non-negative; class ids integers; coordinates
  <= 1. Duplicate rows are dropped with a warning (v6.1 behaviour; v6.0 dropped the image).
Counting follows upstream: found/empty/missing are set as the label file is examined and remain
when a later check fails, so a corrupt label file counts as both found and corrupt, and an image
that fails before its labels are read counts as corrupt only.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from utils.boxes import segments2boxes
from utils.data.image_files import IMG_FORMATS, exif_size, printable

JPEG_EOI = b"\xff\xd9"
MIN_SIDE = 10


@dataclass
class Verified:
    """Outcome of verifying one image/label pair (labels None when the image is unusable)."""
    im_file: str
    labels: np.ndarray | None = None  # (n, 5) float32 [cls, x, y, w, h] normalised
    shape: tuple = (0, 0)  # (width, height) after EXIF rotation
    segments: list = field(default_factory=list)  # (k, 2) float32 polygons, normalised
    repaired: str = ""  # path of a repaired copy to read instead of im_file
    missing: int = 0
    found: int = 0
    empty: int = 0
    corrupt: int = 0
    msg: str = ""


class LabelError(ValueError):
    """A label file breaks a format rule; the message names the line."""


def _decode_fully(data: bytes, fmt: str):
    """Decode every pixel (JPEG at reduced scale); raises OSError on truncated/corrupt data."""
    im = Image.open(io.BytesIO(data))
    if fmt in ("JPEG", "MPO"):
        im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
    im.load()


def _repair_jpeg(im_file: str, data: bytes, repair_dirs) -> str:
    """Write data up to the last EOI marker as a copy; returns its path. Raises if impossible."""
    end = data.rfind(JPEG_EOI)
    if end < 0:
        raise OSError("JPEG data is truncated (no end-of-image marker) and cannot be restored")
    fixed = data[: end + 2]
    _decode_fully(fixed, "JPEG")  # raises if the image data itself is cut short
    tag = hashlib.md5(os.fsencode(os.path.abspath(im_file))).hexdigest()[:10]
    # not an image suffix, so a folder listing never picks the copy up as a training image;
    # decoding goes by content (cv2.imdecode), not by suffix
    name = f"{os.path.splitext(os.path.basename(im_file))[0]}_{tag}.jpg.repaired"
    errors = []
    for d in repair_dirs:
        try:
            os.makedirs(d, exist_ok=True)
            out = os.path.join(d, name)
            tmp = f"{out}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(fixed)
            os.replace(tmp, out)
            return out
        except OSError as e:
            errors.append(f"{d}: {e.strerror or e}")
    raise OSError(f"corrupt JPEG could not be repaired, no writable folder ({'; '.join(errors)})")


def check_image(im_file: str, repair_dirs=()):
    """-> ((width, height), repaired_copy_path_or_empty, warning). Raises on an unusable image."""
    with open(im_file, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
        fmt = im.format
    with Image.open(io.BytesIO(data)) as im:
        shape = exif_size(im)
    if (fmt or "").lower() not in IMG_FORMATS:
        raise OSError(f"unsupported image format {fmt}")
    if shape[0] < MIN_SIDE or shape[1] < MIN_SIDE:
        raise OSError(f"image size {shape[0]}x{shape[1]} is under {MIN_SIDE} pixels per side")
    if fmt in ("JPEG", "MPO") and not data.endswith(JPEG_EOI):
        copy = _repair_jpeg(im_file, data, repair_dirs)
        return shape, copy, f"corrupt JPEG end restored losslessly into {printable(copy)}"
    _decode_fully(data, fmt)
    return shape, "", ""


def parse_label_file(lb_file: str):
    """-> (labels (n, 5) float32, segments list, number of duplicate rows removed).

    Raises LabelError naming the offending line.
    """
    with open(lb_file, encoding="utf-8", errors="replace") as f:
        lines = [(i + 1, ln.split()) for i, ln in enumerate(f.read().splitlines()) if ln.strip()]
    rows = []
    for lineno, parts in lines:
        try:
            rows.append((lineno, np.array([float(v) for v in parts], dtype=np.float32)))
        except ValueError:
            raise LabelError(f"line {lineno}: non-numeric value in {' '.join(parts)[:60]!r}") from None
    segments = []
    if any(len(r) > 8 for _, r in rows):  # polygon segments: class x1 y1 x2 y2 ...
        for lineno, r in rows:
            if len(r) < 3 or len(r) % 2 == 0:
                raise LabelError(f"line {lineno}: a polygon row needs a class and x y pairs, "
                                 f"got {len(r)} values")
        segments = [r[1:].reshape(-1, 2) for _, r in rows]
        boxes = segments2boxes(segments)
        rows = [(ln, np.concatenate(([r[0]], b)).astype(np.float32)) for (ln, r), b in zip(rows, boxes)]
    for lineno, r in rows:
        if len(r) != 5:
            raise LabelError(f"line {lineno}: labels need 5 columns (class x y w h), got {len(r)}")
        if not np.isfinite(r).all():
            raise LabelError(f"line {lineno}: non-finite value (NaN or inf)")
        if (r < 0).any():
            raise LabelError(f"line {lineno}: negative value")
        if r[0] != int(r[0]):
            raise LabelError(f"line {lineno}: class id {r[0]:g} is not an integer")
        if (r[1:] > 1).any():
            raise LabelError(f"line {lineno}: coordinates must be normalised to 0-1 "
                             f"(got {' '.join(f'{v:g}' for v in r[1:])})")
    labels = np.stack([r for _, r in rows]) if rows else np.zeros((0, 5), np.float32)
    _, first = np.unique(labels, axis=0, return_index=True)
    dups = len(labels) - len(first)
    if dups:
        keep = np.sort(first)
        labels = labels[keep]
        segments = [segments[i] for i in keep] if segments else segments
    return labels, segments, dups


def verify_image_label(args) -> Verified:
    """(im_file, lb_file, repair_dirs, prefix) -> Verified. Never raises for bad files."""
    im_file, lb_file, repair_dirs, prefix = args
    v = Verified(im_file)
    warnings = []
    try:
        v.shape, v.repaired, warn = check_image(im_file, repair_dirs)
        if warn:
            warnings.append(warn)
        if os.path.isfile(lb_file):
            v.found = 1
            labels, segments, dups = parse_label_file(lb_file)
            if dups:
                warnings.append(f"{dups} duplicate label rows removed from {printable(lb_file)}")
            v.empty = int(len(labels) == 0)
        else:
            v.missing = 1
            labels, segments = np.zeros((0, 5), np.float32), []
        v.labels, v.segments = labels, segments
        v.msg = "; ".join(f"{prefix}WARNING: {printable(im_file)}: {w}" for w in warnings)
    except Exception as e:  # any failure excludes the image; the message says why
        v.corrupt, v.labels, v.repaired = 1, None, ""
        where = f"{printable(lb_file)} " if isinstance(e, LabelError) else ""
        v.msg = f"{prefix}WARNING: {printable(im_file)}: ignoring corrupt image/label: {where}{e}"
    return v
