"""Pictures of images, labels and predictions: train_batch*.jpg, val_batch*_{labels,pred}.jpg, labels.jpg.

Drawing uses OpenCV only (no font files, nothing downloaded), so it works on headless
machines and offline clusters. Metric curves live with the metrics (utils/evaluation/metrics.py).
"""
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.boxes import xywh2xyxy
from utils.data.image_files import write_image
from utils.printable import printable

# 20 distinct BGR colours, cycled by class id.
_PALETTE_HEX = ("FF3838 FF9D97 FF701F FFB21D CFD231 48F90A 92CC17 3DDB86 1A9334 00D4BB "
                "2C99A8 00C2FF 344593 6473FF 0018EC 8438FF 520085 CB38FF FF95C8 FF37C7").split()


def class_colour(index):
    """BGR colour for a class index (stable across runs)."""
    h = _PALETTE_HEX[int(index) % len(_PALETTE_HEX)]
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def auto_line_width(shape):
    """Box line width for an image of `shape` (h, w[, c]): 0.3% of the mean side, at least 2 px.

    The sum runs over every axis of the shape, channels included, as upstream's annotated images do,
    so widths match upstream's: 2 px up to about 1000 px sides, 3 at 1280x720, 5 at 1920x1080.
    """
    return max(round(sum(shape) / 2 * 0.003), 2)


def draw_box(im, xyxy, label="", colour=(128, 128, 128), line_width=2):
    """Draw one box with an optional filled caption on a BGR uint8 image, in place."""
    p1 = int(xyxy[0]), int(xyxy[1])
    p2 = int(xyxy[2]), int(xyxy[3])
    cv2.rectangle(im, p1, p2, colour, thickness=line_width, lineType=cv2.LINE_AA)
    if label:
        label = printable(label)  # OpenCV crashes on undecodable file-name bytes
        font_scale = max(line_width / 3, 0.35)
        thickness = max(line_width - 1, 1)
        (w, h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        above = p1[1] - h - 3 >= 0
        top_right = (p1[0] + w, p1[1] - h - 3 if above else p1[1] + h + 3)
        cv2.rectangle(im, p1, top_right, colour, -1, cv2.LINE_AA)
        text_org = (p1[0], p1[1] - 2 if above else p1[1] + h + 2)
        cv2.putText(im, label, text_org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return im


def _to_numpy(x):
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def plot_images(images, targets, paths=None, fname="images.jpg", names=None, max_size=1920, max_subplots=16,
                conf_thres=0.25):
    """Save a square grid of up to 16 images with their boxes.

    images: (B, 3, H, W) RGB, uint8 or float in [0, 1]. targets: (N, 6) [image, class, x, y, w, h]
    (labels, normalised or pixel) or (N, 7) [image, class, x, y, w, h, conf] (predictions, pixels);
    predictions below `conf_thres` are not drawn. Returns the written path.
    """
    images, targets = _to_numpy(images), _to_numpy(targets)
    if images.size and images.max() <= 1.0:
        images = images * 255
    bs, _, h, w = images.shape
    bs = min(bs, max_subplots)
    grid = math.ceil(bs ** 0.5)
    scale = min(1.0, max_size / max(h, w) / grid)
    cell_h, cell_w = math.ceil(scale * h), math.ceil(scale * w)
    mosaic = np.full((grid * cell_h, grid * cell_w, 3), 255, dtype=np.uint8)
    line_width = max(1, round(cell_w / 200))

    for i in range(bs):
        x0, y0 = cell_w * (i % grid), cell_h * (i // grid)
        tile = np.ascontiguousarray(images[i].transpose(1, 2, 0)[:, :, ::-1]).astype(np.uint8)  # RGB->BGR
        if scale < 1:
            tile = cv2.resize(tile, (cell_w, cell_h), interpolation=cv2.INTER_AREA)
        tile = np.ascontiguousarray(tile)
        rows = targets[targets[:, 0] == i] if len(targets) else targets
        if len(rows):
            boxes = xywh2xyxy(rows[:, 2:6].astype(np.float64))
            is_label = rows.shape[1] == 6
            if boxes.max() <= 1.01:  # normalised
                boxes[:, [0, 2]] *= w
                boxes[:, [1, 3]] *= h
            boxes *= scale
            for j, box in enumerate(boxes):
                cls = int(rows[j, 1])
                conf = None if is_label else float(rows[j, 6])
                if conf is not None and conf < conf_thres:
                    continue
                name = names[cls] if names is not None and cls < len(names) else str(cls)
                label = name if conf is None else f"{name} {conf:.1f}"
                draw_box(tile, box, label, class_colour(cls), line_width)
        mosaic[y0:y0 + cell_h, x0:x0 + cell_w] = tile[:cell_h, :cell_w]
        if paths is not None:
            caption = printable(Path(paths[i]).name)[:40]
            cv2.putText(mosaic, caption, (x0 + 5, y0 + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (220, 220, 220), 1,
                        cv2.LINE_AA)
        cv2.rectangle(mosaic, (x0, y0), (x0 + cell_w, y0 + cell_h), (255, 255, 255), 2)

    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    write_image(fname, mosaic)
    return fname


def output_to_target(outputs):
    """NMS outputs (list of (n, 6) xyxy, conf, cls) to plot_images rows [image, class, x, y, w, h, conf]."""
    rows = []
    for i, det in enumerate(outputs):
        det = _to_numpy(det)
        if not len(det):
            continue
        xywh = det[:, :4].copy()
        xywh[:, 2:] = det[:, 2:4] - det[:, :2]
        xywh[:, :2] = det[:, :2] + xywh[:, 2:] / 2
        rows.append(np.column_stack([np.full(len(det), i), det[:, 5], xywh, det[:, 4]]))
    return np.concatenate(rows, 0) if rows else np.zeros((0, 7))


def plot_labels(labels, names=(), save_dir=Path("")):
    """labels.jpg: class histogram, box centres and box sizes of a label set.

    labels: (N, 5) [class, x, y, w, h] normalised.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _to_numpy(labels).reshape(-1, 5)
    classes = labels[:, 0].astype(int)
    nc = int(classes.max()) + 1 if len(classes) else 1
    fig, ax = plt.subplots(2, 2, figsize=(8, 8), tight_layout=True)
    ax = ax.ravel()
    counts = np.bincount(classes, minlength=nc)
    ax[0].bar(range(nc), counts, color=[np.array(class_colour(c)[::-1]) / 255 for c in range(nc)])
    ax[0].set_ylabel("instances")
    if 0 < len(names) < 30:
        ax[0].set_xticks(range(len(names)))
        ax[0].set_xticklabels(list(names), rotation=90, fontsize=8)
    else:
        ax[0].set_xlabel("classes")
    # box outlines centred at the image centre, to show the shape distribution
    canvas = np.full((500, 500, 3), 255, dtype=np.uint8)
    for cls, (bw, bh) in zip(classes[:1000], labels[:1000, 3:5]):
        box = np.array([0.5 - bw / 2, 0.5 - bh / 2, 0.5 + bw / 2, 0.5 + bh / 2]) * 500
        draw_box(canvas, box, "", class_colour(cls), 1)
    ax[1].imshow(canvas[:, :, ::-1])
    ax[1].axis("off")
    ax[2].hist2d(labels[:, 1], labels[:, 2], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[2].set_xlabel("x")
    ax[2].set_ylabel("y")
    ax[3].hist2d(labels[:, 3], labels[:, 4], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[3].set_xlabel("width")
    ax[3].set_ylabel("height")
    out = Path(save_dir) / "labels.jpg"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=200)
    plt.close(fig)
    return out
