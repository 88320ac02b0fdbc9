"""Image files on disk: which files count as images, where their labels live, how to decode them.

Every image is decoded the same way, here: raw bytes -> `cv2.imdecode(IMREAD_COLOR)`. That one call
applies the EXIF orientation and turns grayscale, RGBA, palette and 16-bit images into 8-bit BGR,
so the rest of the pipeline only ever sees HxWx3 uint8. Reading the bytes with numpy (not
`cv2.imread`) also works for file names that are not valid UTF-8.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from utils.errors import UserError
from utils.printable import is_printable, printable  # noqa: F401 (printable: imported from here too)

IMG_FORMATS = ("bmp", "jpg", "jpeg", "png", "tif", "tiff", "dng", "webp", "mpo")
VID_FORMATS = ("mov", "avi", "mp4", "mpg", "mpeg", "m4v", "wmv", "mkv")
EXIF_ORIENTATION = 0x0112


def has_suffix(path: str, formats) -> bool:
    return path.rpartition(".")[2].lower() in formats if "." in os.path.basename(path) else False


def _expand_list_file(txt: Path) -> list:
    """Lines of a .txt image list; relative entries are taken relative to the list's folder."""
    out = []
    with open(txt, encoding="utf-8", errors="surrogateescape") as f:
        for line in f.read().splitlines():
            line = line.strip()
            if not line:
                continue
            p = Path(line)
            if not p.is_absolute():
                local = txt.parent / p
                p = local if line.startswith("./") or local.exists() else p
            out.append(os.path.normpath(p))
    return out


def list_files(sources, formats=IMG_FORMATS, what="images") -> list:
    """Sorted files with a suffix in `formats` from folders (recursive), .txt lists, globs or files.

    `sources` is one entry or a list of them. A missing entry or no match at all is a UserError.
    """
    found = []
    for src in sources if isinstance(sources, (list, tuple)) else [sources]:
        s = str(src)
        p = Path(s).expanduser()
        if any(c in s for c in "*?["):
            found += glob.glob(str(p), recursive=True)
        elif p.is_dir():
            found += [os.path.join(r, f) for r, _, fs in os.walk(p, followlinks=True) for f in fs]
        elif p.is_file():
            found += _expand_list_file(p) if p.suffix.lower() == ".txt" else [str(p)]
        else:
            raise UserError(f"{printable(s)} does not exist (expected a folder, a .txt list of {what} "
                            f"or a glob)")
    files = sorted(os.path.normpath(f) for f in found if has_suffix(f, formats))
    if not files:
        raise UserError(f"no {what} found in {printable(sources)} (supported suffixes: "
                        f"{', '.join(formats)})")
    return files


def img2label_path(im_file: str) -> str:
    """Label file of an image: last '/images/' -> '/labels/', suffix -> .txt (v6.0 rule)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = im_file.rpartition(sa)
    path = head + sb + tail if sep else im_file
    return path.rsplit(".", 1)[0] + ".txt"


def img2label_paths(im_files) -> list:
    return [img2label_path(f) for f in im_files]


def exif_size(img: Image.Image) -> tuple:
    """(width, height) as displayed: swapped when EXIF orientation is a 90-degree rotation."""
    w, h = img.size
    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not hide a usable image
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def decode_image(path) -> np.ndarray | None:
    """File -> HxWx3 uint8 BGR, EXIF-oriented; None if it cannot be decoded."""
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if buf.size == 0:
        return None
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def read_image(path) -> np.ndarray:
    """Like decode_image, but a file that fails to decode is an error naming the file."""
    im = decode_image(path)
    if im is None:
        raise UserError(f"cannot decode image {printable(path)} (deleted or changed since the label "
                        f"cache was built?)")
    return im


def write_image(path, im) -> None:
    """Encode `im` (BGR) by the suffix of `path` and write the file; names need not be valid UTF-8
    (cv2.imwrite crashes the process on such a str, so OpenCV only sees the image here)."""
    path = str(path)
    ok, buf = cv2.imencode("." + path.rpartition(".")[2] if "." in os.path.basename(path) else ".jpg", im)
    if not ok:
        raise UserError(f"cannot encode an image for {printable(path)}; use a .jpg or .png name")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def open_video(path):
    """cv2.VideoCapture of a video file, also when its name is not valid UTF-8.

    OpenCV crashes on such a str, so the file is opened here and OpenCV reads it through the
    name /proc gives the descriptor (Linux); elsewhere the user is asked to rename the file.
    """
    path = str(path)
    if is_printable(path):
        return cv2.VideoCapture(path)
    if not os.path.isdir("/proc/self/fd"):
        raise UserError(f"video {printable(path)}: OpenCV cannot open files whose name is not valid UTF-8 "
                        "on this system; rename it")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return cv2.VideoCapture()  # not opened: the caller reports it as for any missing video
    try:
        return cv2.VideoCapture(f"/proc/self/fd/{fd}")  # OpenCV opens its own descriptor
    finally:
        os.close(fd)
