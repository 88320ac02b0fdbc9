"""Decoded-image caching for `--cache ram|disk`, and the one function that loads a training image.

ram : every image, already resized to `img_size` (long side), kept in memory. Before filling,
      the exact size is computed from the verified shapes and compared with the memory that
      is actually available (psutil); if it does not fit with a 10% margin the run stops with
      a UserError instead of being killed by the OS half-way through an epoch.
disk: every decoded ORIGINAL image stored as `<image>.npy` beside the image (or under the user
      cache folder when the image folder is read-only) and read back with `np.load` instead of
      decoding the JPEG. v6.0 stored the resized image in a sibling `_npy` folder, which made
      its reported original size (h0, w0) wrong; storing the original (as v6.2 does) keeps
      every returned value identical to an uncached run. A .npy older than its image is redone.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from multiprocessing.pool import ThreadPool
from pathlib import Path

import cv2
import numpy as np
import psutil
from tqdm import tqdm

from utils.errors import UserError
from utils.data.image_files import printable, read_image
from utils.data.label_cache import NUM_THREADS, is_writable_dir, user_cache_dir
from utils.progress import progress_kwargs

RAM_SAFETY_MARGIN = 0.10
GB = 1 << 30


def resized_hw(h0: int, w0: int, img_size: int) -> tuple:
    """(h, w) after resizing the long side to img_size (v6.0: int() truncation, also upscaling)."""
    r = img_size / max(h0, w0)
    return (int(h0 * r), int(w0 * r)) if r != 1 else (h0, w0)


def resize_long_side(im: np.ndarray, img_size: int, augment: bool) -> np.ndarray:
    """v6.0 load_image resize: INTER_AREA when shrinking without augmentation, else INTER_LINEAR."""
    h0, w0 = im.shape[:2]
    h, w = resized_hw(h0, w0, img_size)
    if (h, w) == (h0, w0):
        return im
    interp = cv2.INTER_AREA if (h < h0 and not augment) else cv2.INTER_LINEAR
    return cv2.resize(im, (w, h), interpolation=interp)


def ram_bytes_needed(shapes_wh, img_size: int) -> int:
    """Exact bytes of all resized 3-channel images; shapes are (width, height) rows."""
    return int(sum(np.prod(resized_hw(int(h), int(w), img_size)) * 3 for w, h in shapes_wh))


def check_ram(nbytes: int, prefix: str = "") -> None:
    available = psutil.virtual_memory().available
    if nbytes * (1 + RAM_SAFETY_MARGIN) > available:
        raise UserError(f"{prefix}--cache ram needs {nbytes / GB:.1f} GB (+{RAM_SAFETY_MARGIN:.0%} margin) "
                        f"but only {available / GB:.1f} GB of memory is available; use --cache disk "
                        f"or no --cache, or a smaller --imgsz")


def npy_path(im_file: str) -> str:
    """Where the decoded image of im_file is cached: beside it, else in the user cache folder."""
    parent = os.path.dirname(im_file)
    stem = os.path.splitext(os.path.basename(im_file))[0]
    if is_writable_dir(parent):
        return os.path.join(parent, stem + ".npy")
    tag = hashlib.md5(os.fsencode(os.path.abspath(parent))).hexdigest()[:12]
    return str(user_cache_dir() / "images" / tag / (stem + ".npy"))


def _npy_fresh(npy: str, im_file: str) -> bool:
    try:
        return os.stat(npy).st_mtime_ns >= os.stat(im_file).st_mtime_ns
    except OSError:
        return False


def _save_npy(npy: str, im: np.ndarray) -> None:
    os.makedirs(os.path.dirname(npy), exist_ok=True)
    tmp = f"{npy}.{os.getpid()}.tmp.npy"
    np.save(tmp, im, allow_pickle=False)
    os.replace(tmp, npy)


def load_original(read_path: str, npy: str | None) -> np.ndarray:
    """Decoded BGR image, from the disk cache when one is given and present."""
    if npy and os.path.isfile(npy):
        try:
            return np.load(npy, allow_pickle=False)
        except (OSError, ValueError):  # damaged cache file: fall back to the image itself
            pass
    return read_image(read_path)


def fill_disk_cache(read_paths, shapes_wh, prefix: str = "") -> list:
    """Write missing/stale .npy files (threaded, with a progress bar); returns their paths."""
    npys = [npy_path(p) for p in read_paths]
    todo = [i for i, (p, n) in enumerate(zip(read_paths, npys)) if not _npy_fresh(n, p)]
    need = sum(int(shapes_wh[i][0]) * int(shapes_wh[i][1]) * 3 + 128 for i in todo)
    for folder in {os.path.dirname(npys[i]) for i in todo}:
        probe = Path(folder)
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if need > free:
            raise UserError(f"{prefix}--cache disk needs {need / GB:.1f} GB in {printable(folder)} but only "
                            f"{free / GB:.1f} GB is free; free space or drop --cache")

    def work(i):
        _save_npy(npys[i], read_image(read_paths[i]))

    if todo:
        with ThreadPool(NUM_THREADS) as pool:
            for _ in tqdm(pool.imap_unordered(work, todo), total=len(todo), **progress_kwargs(),
                          desc=f"{prefix}Caching images ({need / GB:.1f}GB disk)"):
                pass
    return npys


def fill_ram_cache(load, n: int, nbytes: int, prefix: str = "") -> list:
    """[load(i) for i in range(n)] in a thread pool with a progress bar (order preserved)."""
    with ThreadPool(NUM_THREADS) as pool:
        return list(tqdm(pool.imap(load, range(n)), total=n, **progress_kwargs(),
                         desc=f"{prefix}Caching images ({nbytes / GB:.1f}GB ram)"))
