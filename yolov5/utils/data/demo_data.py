"""A small, deterministic, download-free detection dataset: coloured shapes on textured backgrounds.

    python -m utils.data.demo_data --out ../datasets/demo [--n-train 256 --n-val 64 --imgsz 320 --seed 0]

It is the default data of the README's main command, the notebook and many tests, so it must be
quick to make (a few seconds), identical for the same seed, and learnable:

* 6 classes, each a distinct shape AND colour family (OpenCV hue +-6 around its own centre):
  circle red, square blue, triangle green, star yellow, ring magenta, cross cyan. Objects are
  strongly saturated (HSV S >= 190) and shaded; backgrounds are low-saturation grey textures with
  smooth blotches, a brightness gradient, grey clutter (lines, boxes, ellipses) and sensor noise.
* 0-8 objects per image (3% are background-only images with an empty label file), side 6-40% of the
  image, aspect ratio 0.74-1.35, any rotation, overlapping one another and the image border.
* Labels are exact: each object is rasterised into an instance map in drawing order, and its box is the
  extent of the pixels it still owns (visible pixels), so boxes bound exactly what is visible.
* Occlusion rule: a placement is rejected (and retried elsewhere) if it would leave any object, itself
  included, with less than half of its full area visible (hidden by later objects or cut by the
  border). Hence every drawn object stays at least 50% visible and is labelled; no visible object is
  left unlabelled.

Layout written (YOLO format): images/{train,val}/*.jpg, labels/{train,val}/*.txt, and demo.yaml (path,
train, val, nc, names). `ensure_demo_dataset(path)` generates it only when absent, atomically (into a
temporary sibling folder that is then renamed), so concurrent callers never see half a dataset.
`yolov5/data/demo.yaml` points at the default location DEFAULT_DIR (<repo>/datasets/demo, i.e.
`../datasets/demo` from yolov5/); the trainer calls ensure_demo_dataset on that folder before reading it.
"""
import argparse
import logging
import os
import secrets
import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml

from utils.cli import set_logging
from utils.errors import UserError, exit_on_user_error
from utils.printable import printable

LOGGER = logging.getLogger("yolov5")

NAMES = ("circle", "square", "triangle", "star", "ring", "cross")
HUES = (0, 120, 60, 30, 150, 90)  # OpenCV hue (0-179) of each class: red, blue, green, yellow, magenta, cyan
DEFAULT_DIR = Path(__file__).resolve().parents[3] / "datasets" / "demo"
YAML_NAME = "demo.yaml"
MIN_VISIBLE = 0.5  # every object keeps at least this fraction of its full area visible
SIZE_RANGE = (0.06, 0.40)  # object side as a fraction of the image side (log-uniform)
JPEG_QUALITY = 90


# ------------------------------------------------------------------------------------------ shapes
def _unit_polygons():
    """Outline(s) of each class in unit coordinates (radius ~1); a second contour is a hole."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    star_t = np.linspace(0, 2 * np.pi, 10, endpoint=False) - np.pi / 2
    star_r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    a = 0.33  # half-width of the cross arms
    return {
        0: [circle],
        1: [np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]])],
        2: [np.array([[0.0, -1.0], [0.866, 0.5], [-0.866, 0.5]])],
        3: [np.stack([np.cos(star_t) * star_r, np.sin(star_t) * star_r], 1)],
        4: [circle, circle * 0.55],
        5: [np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
                      [-1, -a], [-a, -a]])],
    }


POLYGONS = _unit_polygons()


def _object_mask(cls, w, h, angle):
    """Rasterise one object (size w x h before rotation) into a local mask; returns (mask, centre offset)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    contours = [(p * [w / 2, h / 2]) @ rot.T for p in POLYGONS[cls]]
    lo = np.floor(contours[0].min(0)) - 1
    hi = np.ceil(contours[0].max(0)) + 1
    size = (hi - lo).astype(int)
    mask = np.zeros((size[1], size[0]), np.uint8)
    for i, contour in enumerate(contours):  # sub-pixel vertices (shift=4): 1/16 px precision
        pts = np.round((contour - lo) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1 if i == 0 else 0, lineType=cv2.LINE_8, shift=4)
    return mask, lo


# -------------------------------------------------------------------------------------- rendering
def _smooth_noise(rng, cells, shape):
    """Smooth random field: a cells x cells grid of N(0, 1) upsampled with cubic interpolation."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _background(rng, size):
    """Low-saturation textured background as float32 (size, size, 3) BGR."""
    lum = np.full((size, size), rng.uniform(80, 180), np.float32)
    for cells, amp in ((3, 40), (8, 22), (24, 10)):
        lum += _smooth_noise(rng, cells, (size, size)) * amp * rng.uniform(0.5, 1.0)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    lum += rng.uniform(-30, 30) * ramp[None, :] + rng.uniform(-30, 30) * ramp[:, None]
    for _ in range(rng.integers(2, 9)):  # grey clutter: lines, boxes and ellipses
        grey = float(rng.uniform(50, 220))
        p1, p2 = (tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2))
        kind = rng.integers(3)
        if kind == 0:
            cv2.line(lum, p1, p2, grey, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(lum, p1, p2, grey, int(rng.choice([-1, 1, 2])))
        else:
            axes = tuple(int(v) for v in rng.integers(3, size // 6, 2))
            cv2.ellipse(lum, p1, axes, float(rng.uniform(0, 180)), 0, 360, grey, int(rng.choice([-1, 2])))
    np.clip(lum, 60, 235, out=lum)
    tint = (1 + rng.uniform(-0.06, 0.06, 3)).astype(np.float32)
    return lum[:, :, None] * tint


def _object_colour(rng, cls):
    """A strongly saturated BGR colour (float32) in the class's hue family."""
    hue = (HUES[cls] + rng.integers(-6, 7)) % 180
    hsv = np.array([[[hue, rng.integers(190, 256), rng.integers(150, 256)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _place_objects(rng, size, n):
    """Choose and rasterise up to n objects obeying the occlusion rule; returns (id map, classes, boxes)."""
    id_map = np.zeros((size, size), np.uint8)  # 0 = background, k = k-th object (1-based)
    classes, full_area, visible, regions = [], [], [], []
    for _ in range(n):
        for _attempt in range(10):
            cls = int(rng.integers(len(NAMES)))
            side = size * np.exp(rng.uniform(*np.log(SIZE_RANGE)))
            aspect = np.exp(rng.uniform(-0.3, 0.3))
            mask, lo = _object_mask(cls, side * np.sqrt(aspect), side / np.sqrt(aspect), rng.uniform(0, 2 * np.pi))
            x0, y0 = np.floor(rng.uniform(0, size, 2) + lo).astype(int)  # top-left of the mask in the image
            ix1, iy1 = max(x0, 0), max(y0, 0)
            ix2, iy2 = min(x0 + mask.shape[1], size), min(y0 + mask.shape[0], size)
            if ix2 - ix1 < 3 or iy2 - iy1 < 3:
                continue
            inside = mask[iy1 - y0:iy2 - y0, ix1 - x0:ix2 - x0].astype(bool)
            full, own = int(mask.sum()), int(inside.sum())
            if own < MIN_VISIBLE * full:
                continue
            region = id_map[iy1:iy2, ix1:ix2]
            covered = np.bincount(region[inside], minlength=len(classes) + 1)[1:]
            still_visible = np.asarray(visible, np.int64) - covered
            if (still_visible < MIN_VISIBLE * np.asarray(full_area)).any():
                continue
            region[inside] = len(classes) + 1
            classes.append(cls)
            full_area.append(full)
            visible = list(still_visible) + [own]
            regions.append((ix1, iy1, ix2, iy2))
            break
    boxes = []
    for k, (ix1, iy1, ix2, iy2) in enumerate(regions, start=1):
        ys, xs = np.nonzero(id_map[iy1:iy2, ix1:ix2] == k)
        boxes.append((ix1 + xs.min(), iy1 + ys.min(), ix1 + xs.max() + 1, iy1 + ys.max() + 1))
    return id_map, classes, np.array(boxes, np.float64).reshape(-1, 4)


def render_image(rng, size=320):
    """One image and its objects: returns (BGR uint8 image, classes (n,), pixel xyxy boxes (n, 4), id map).

    Box edges are pixel edges: an object owning pixel columns 10..19 has x1 = 10, x2 = 20.
    """
    img = _background(rng, size)
    n = 0 if rng.random() < 0.03 else int(rng.integers(1, 9))
    id_map, classes, boxes = _place_objects(rng, size, n)
    for k, (cls, box) in enumerate(zip(classes, boxes), start=1):
        x1, y1, x2, y2 = box.astype(int)
        owned = id_map[y1:y2, x1:x2] == k
        h, w = owned.shape
        # Shading: a linear light gradient across the object plus blotchy texture, both multiplicative
        # (they change brightness but keep the hue and saturation of the class colour).
        gx, gy = rng.uniform(-0.15, 0.15, 2)
        shade = (1 + gx * np.linspace(-1, 1, w, dtype=np.float32)[None, :]
                 + gy * np.linspace(-1, 1, h, dtype=np.float32)[:, None]
                 + 0.05 * _smooth_noise(rng, 4, (h, w)))
        img[y1:y2, x1:x2][owned] = shade[owned][:, None] * _object_colour(rng, cls)
    img += rng.normal(0, 2.5, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (3, 3), 0.5)
    return np.clip(img, 0, 255).astype(np.uint8), np.array(classes, int), boxes, id_map


def label_text(classes, boxes, size):
    """YOLO label lines (class x y w h, normalised, 6 decimals) for pixel xyxy boxes."""
    lines = []
    for cls, (x1, y1, x2, y2) in zip(classes, boxes):
        lines.append(f"{cls} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
                     f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}\n")
    return "".join(lines)


# ------------------------------------------------------------------------------------ writing files
def generate_demo_dataset(out, n_train=256, n_val=64, imgsz=320, seed=0, yaml_path_value=None):
    """Write the dataset into `out` (created; existing files overwritten). Returns the yaml path.

    Image i of split j depends only on (seed, j, i), so files are identical for the same arguments.
    yaml_path_value: what to write as the yaml's `path` (default: `out` resolved), so a caller that
    renames the folder afterwards can write the final location.
    """
    if imgsz < 32 or n_train < 1 or n_val < 1:
        raise UserError(f"demo dataset: need imgsz >= 32 and at least 1 train and 1 val image "
                        f"(got imgsz={imgsz}, n_train={n_train}, n_val={n_val}).")
    out = Path(out)
    for split_index, (split, count) in enumerate((("train", n_train), ("val", n_val))):
        img_dir, lbl_dir = out / "images" / split, out / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            img, classes, boxes, _ = render_image(rng, imgsz)
            stem = f"demo_{split}_{i:06d}"
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            (img_dir / f"{stem}.jpg").write_bytes(buf.tobytes())
            (lbl_dir / f"{stem}.txt").write_text(label_text(classes, boxes, imgsz))
    data = {"path": str(yaml_path_value or out.resolve()), "train": "images/train", "val": "images/val",
            "nc": len(NAMES), "names": list(NAMES),
            "demo_generator": {"seed": seed, "n_train": n_train, "n_val": n_val, "imgsz": imgsz}}
    yaml_file = out / YAML_NAME  # written last: its presence marks a complete dataset
    yaml_file.write_text("# Demo dataset generated by python -m utils.data.demo_data (coloured shapes)\n"
                         + yaml.safe_dump(data, sort_keys=False))
    return yaml_file


def ensure_demo_dataset(path=DEFAULT_DIR, n_train=256, n_val=64, imgsz=320, seed=0, force=False):
    """Return `path` holding a complete demo dataset, generating it first if absent (idempotent, atomic).

    An existing complete dataset is kept as is (whatever its generation settings) unless force=True.
    """
    path = Path(path).resolve()
    if (path / YAML_NAME).is_file() and not force:
        return path
    if path.exists() and not force and any(path.iterdir()):
        raise UserError(f"{path} exists but holds no {YAML_NAME}, so it is not a complete demo dataset. "
                        f"Delete it or choose another --out.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        generate_demo_dataset(tmp, n_train, n_val, imgsz, seed, yaml_path_value=path)
        if force and path.exists():
            shutil.rmtree(path)
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / YAML_NAME).is_file():  # not a concurrent generator that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the demo detection dataset (coloured shapes).")
    parser.add_argument("--out", default=str(DEFAULT_DIR), help=f"output folder (default {DEFAULT_DIR})")
    parser.add_argument("--n-train", type=int, default=256, help="number of training images")
    parser.add_argument("--n-val", type=int, default=64, help="number of validation images")
    parser.add_argument("--imgsz", type=int, default=320, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical files)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the folder already holds one")
    opt = parser.parse_args(argv)
    set_logging()
    path = ensure_demo_dataset(opt.out, opt.n_train, opt.n_val, opt.imgsz, opt.seed, force=opt.force)
    LOGGER.info(f"demo dataset ready: {printable(path / YAML_NAME)}")


if __name__ == "__main__":
    main()
