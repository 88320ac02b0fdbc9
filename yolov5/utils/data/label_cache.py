"""Label cache: verify every image/label pair once, in parallel, and keep the result on disk.

Where: as upstream, `<list>.cache` beside a .txt image list, else `<label folder>.cache`
(`labels/train2017.cache` for `images/train2017/`). When that folder is read-only the cache
goes to the user cache folder (`$YOLOV5_CACHE_DIR`, else `$XDG_CACHE_HOME/yolov5`, else
`~/.cache/yolov5`) under a name derived from the upstream path, so datasets never collide.

Format: an .npz of plain arrays read with `allow_pickle=False` (upstream pickles a dict; loading
a pickle from a dataset folder could run code). Upstream cache files therefore fail to load
here and are rebuilt, and ours are rebuilt by upstream.

Validity: same CACHE_VERSION and same fingerprint, an md5 over every label and image path with
its size and mtime (upstream hashes only the total size and the paths). Any added, removed,
resized or touched file rebuilds the cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.data.image_files import printable
from utils.data.label_checks import verify_image_label
from utils.progress import progress_kwargs

LOGGER = logging.getLogger("yolov5")
CACHE_VERSION = "yolov5-mlu-labels-1"
NUM_THREADS = min(8, os.cpu_count() or 1)  # PIL decoding releases the GIL: threads are enough


def user_cache_dir() -> Path:
    env = os.environ.get("YOLOV5_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "yolov5"


def is_writable_dir(path) -> bool:
    """Writable for us AND not marked read-only: root ignores permissions, but a folder whose
    mode has no write bit at all (e.g. a shared read-only dataset) is treated as read-only."""
    path = Path(path)
    while not path.exists() and path != path.parent:  # a folder we would create: judge its parent
        path = path.parent
    try:
        return path.is_dir() and os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)
    except OSError:
        return False


def cache_paths(sources, label_files) -> list:
    """[upstream location, user-cache fallback] of the label cache for a dataset."""
    last = Path(str(sources[-1] if isinstance(sources, (list, tuple)) else sources))
    primary = last.with_suffix(".cache") if last.is_file() else Path(label_files[0]).parent.with_suffix(".cache")
    tag = hashlib.md5(os.fsencode(os.path.abspath(primary))).hexdigest()[:12]
    return [primary, user_cache_dir() / "labels" / f"{primary.stem}-{tag}.cache"]


def fingerprint(label_files, im_files) -> str:
    """md5 over (path, size, mtime) of all label then image files; missing files count too."""
    h = hashlib.md5()
    for p in list(label_files) + list(im_files):
        try:
            st = os.stat(p)
            h.update(os.fsencode(p) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(os.fsencode(p) + b"|-\n")
    return h.hexdigest()


@dataclass
class LabelScan:
    """Verified images of one split (only usable ones) plus the scan counters and messages."""
    im_files: list
    labels: list  # (n, 5) float32 per image
    shapes: np.ndarray  # (N, 2) int (width, height)
    segments: list  # list of (k, 2) float32 polygons per image
    repaired: dict  # im_file -> repaired copy path
    found: int = 0
    missing: int = 0
    empty: int = 0
    corrupt: int = 0
    total: int = 0
    msgs: list = field(default_factory=list)
    cache_file: str = ""
    from_cache: bool = False

    def summary(self, label_dir: str) -> str:
        return (f"Scanning '{printable(label_dir)}' images and labels... {self.found} found, "
                f"{self.missing} missing, {self.empty} empty, {self.corrupt} corrupt")


def _str_array(items) -> np.ndarray:
    return np.array(list(items) or [""], dtype=str)[: len(items)]


def save_cache(scan: LabelScan, digest: str, paths) -> str:
    """Write the cache to the first writable location; returns its path ('' if none)."""
    segs = [s for per_image in scan.segments for s in per_image]
    arrays = dict(
        version=np.array(CACHE_VERSION), hash=np.array(digest),
        im_files=_str_array(scan.im_files),
        labels=np.concatenate(scan.labels) if scan.labels else np.zeros((0, 5), np.float32),
        nlabels=np.array([len(x) for x in scan.labels], dtype=np.int64),
        shapes=np.asarray(scan.shapes, dtype=np.int64).reshape(-1, 2),
        seg_points=np.concatenate(segs).astype(np.float32) if segs else np.zeros((0, 2), np.float32),
        seg_npoints=np.array([len(s) for s in segs], dtype=np.int64),
        seg_counts=np.array([len(s) for s in scan.segments], dtype=np.int64),
        repaired=_str_array([scan.repaired.get(f, "") for f in scan.im_files]),
        results=np.array([scan.found, scan.missing, scan.empty, scan.corrupt, scan.total], dtype=np.int64),
        msgs=np.array(json.dumps(scan.msgs)),
    )
    for path in paths:
        if not is_writable_dir(path.parent):
            continue
        tmp = Path(f"{path}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
            return str(path)
        except OSError:  # read-only or full: try the next location
            try:
                tmp.unlink()
            except OSError:
                pass
    LOGGER.warning(f"WARNING: label cache not saved: no writable folder among {[str(p) for p in paths]}")
    return ""


def load_cache(path, digest: str) -> LabelScan | None:
    """The cached scan if the file is ours, current and consistent; else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["version"]) != CACHE_VERSION or str(z["hash"]) != digest:
                return None
            im_files = [str(s) for s in z["im_files"]]
            nl, labels = z["nlabels"], z["labels"]
            ends = np.cumsum(nl)
            per_image = [labels[e - n:e] for n, e in zip(nl, ends)]
            npts, pts = z["seg_npoints"], z["seg_points"]
            polys = np.split(pts, np.cumsum(npts)[:-1]) if len(npts) else []
            seg_ends = np.cumsum(z["seg_counts"])
            segments = [list(polys[e - n:e]) for n, e in zip(z["seg_counts"], seg_ends)]
            repaired = {f: str(r) for f, r in zip(im_files, z["repaired"]) if str(r)}
            found, missing, empty, corrupt, total = (int(v) for v in z["results"])
            msgs = json.loads(str(z["msgs"]))
            shapes = z["shapes"]
    except (OSError, KeyError, ValueError, EOFError):  # missing, foreign (pickled upstream) or damaged
        return None
    if not all(os.path.isfile(r) for r in repaired.values()):
        return None
    return LabelScan(im_files, per_image, shapes, segments, repaired, found, missing, empty, corrupt,
                     total, msgs, str(path), True)


def build_scan(im_files, label_files, repair_dirs, prefix="", label_dir="", workers=NUM_THREADS) -> LabelScan:
    """Verify all pairs in a thread pool with a progress bar (ordered, so results are reproducible)."""
    scan = LabelScan([], [], np.zeros((0, 2), np.int64), [], {}, total=len(im_files))
    shapes = []
    jobs = [(im, lb, repair_dirs, prefix) for im, lb in zip(im_files, label_files)]
    with ThreadPool(max(1, workers)) as pool:
        bar = tqdm(pool.imap(verify_image_label, jobs, chunksize=8), total=len(jobs), **progress_kwargs())
        for v in bar:
            scan.missing += v.missing
            scan.found += v.found
            scan.empty += v.empty
            scan.corrupt += v.corrupt
            if v.labels is not None:
                scan.im_files.append(v.im_file)
                scan.labels.append(v.labels)
                scan.segments.append(v.segments)
                shapes.append(v.shape)
                if v.repaired:
                    scan.repaired[v.im_file] = v.repaired
            if v.msg:
                scan.msgs.append(v.msg)
            bar.desc = prefix + scan.summary(label_dir)
        bar.close()
    scan.shapes = np.array(shapes, dtype=np.int64).reshape(-1, 2)
    return scan


def scan_labels(sources, im_files, label_files, prefix="", workers=NUM_THREADS) -> LabelScan:
    """Load the label cache if valid, else verify everything and save a new cache."""
    paths = cache_paths(sources, label_files)
    digest = fingerprint(label_files, im_files)
    label_dir = str(paths[0].parent / paths[0].stem)
    for p in paths:
        scan = load_cache(p, digest)
        if scan is not None:
            n = scan.total
            tqdm(None, desc=prefix + scan.summary(label_dir) + " (cached)", total=n, initial=n,
                 **progress_kwargs()).close()
            break
    else:
        repair_dirs = [str(p.parent / f"{p.stem}.repaired") for p in paths if is_writable_dir(p.parent)]
        scan = build_scan(im_files, label_files, repair_dirs, prefix, label_dir, workers)
        scan.cache_file = save_cache(scan, digest, paths)
        if scan.cache_file:
            LOGGER.info(f"{prefix}New label cache created: {printable(scan.cache_file)}")
    for msg in scan.msgs:
        LOGGER.warning(msg)
    return scan
