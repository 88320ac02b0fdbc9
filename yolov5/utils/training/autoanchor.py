"""AutoAnchor: check that the model's anchors fit the dataset's boxes, re-fit them if they do not.

Behaviour of upstream v6.0 `check_anchors` / `kmean_anchors`:

* Label sizes in pixels at training scale: each image's (w, h) scaled so its long side is
  `imgsz`, times a per-image random factor U(0.9, 1.1) for the check (not for k-means).
* A label fits an anchor when both its width and height ratios lie within [1/thr, thr]. Best
  Possible Recall (BPR) = fraction of labels that fit at least one anchor; anchors/target = mean
  number of anchors each label fits.
* BPR < 0.98 -> k-means (scipy, 30 restarts) on whitened label sizes, then 1000 generations of
  genetic mutation maximising mean(best ratio, counted only where it passes 1/thr). The new set
  replaces the model's only if its BPR is higher.

Post-v6.0 changes: when the labels hold fewer distinct sizes than anchors, k-means returns fewer
than n centres. v6.0 then gave up and v6.2 (#6668, #6854) restarted from random anchors, which the
small genetic steps rarely rescue; we keep the centres found and fill up with jittered copies, so
such datasets (synthetic or tiny ones) still get anchors that fit every box. As in v6.2 (#7060)
the new anchors are put in level order by comparing mean pixel area
per level with the stride order (models.yolo.check_anchor_order), never the v6.0 grid-space test
that could reverse a good set.

Randomness comes from a numpy Generator seeded by `seed`, so results are reproducible and do not
disturb the global random state used by the data pipeline. `dataset` is any object with
`.shapes` ((n, 2) image width, height) and `.labels` (n arrays (k, 5): class, x, y, w, h
normalised); the model is any module whose Detect layer has an `anchors` buffer (nl, na, 2) in
grid units and a `stride` tensor.
"""
import logging

import numpy as np
import torch

from models.yolo import check_anchor_order
from utils.device.parallel import de_parallel

LOGGER = logging.getLogger("yolov5")
PREFIX = "AutoAnchor: "
BPR_GOOD_ENOUGH = 0.98


def _detect_layer(model):
    """The Detect layer: model.model[-1] for YOLOv5 models, else the last module with anchors."""
    model = de_parallel(model)
    layers = getattr(model, "model", None)
    candidates = [layers[-1]] if isinstance(layers, torch.nn.Sequential) and len(layers) else []
    candidates += list(reversed(list(model.modules())))
    for m in candidates:
        if isinstance(getattr(m, "anchors", None), torch.Tensor) and getattr(m, "stride", None) is not None:
            return m
    raise ValueError("model has no Detect layer with `anchors` and `stride`; AutoAnchor needs one")


def label_wh(dataset, img_size, rng=None):
    """(N, 2) pixel width/height of every label at training scale, optionally randomly scaled."""
    shapes = np.asarray(dataset.shapes, dtype=np.float64)
    labels = list(dataset.labels)
    if shapes.ndim != 2 or shapes.shape[1] != 2 or len(shapes) != len(labels):
        raise ValueError(f"dataset.shapes must be (n, 2) for n = {len(labels)} label arrays, got {shapes.shape}")
    shapes = img_size * shapes / shapes.max(1, keepdims=True)
    if rng is not None:
        shapes = shapes * rng.uniform(0.9, 1.1, size=(len(shapes), 1))
    wh = [np.asarray(lb, dtype=np.float64).reshape(-1, 5)[:, 3:5] * s for s, lb in zip(shapes, labels)]
    return np.concatenate(wh, 0) if wh else np.zeros((0, 2))


def _ratio_fit(anchors, wh):
    """x[i, j]: worst of the w and h ratios (<= 1) between label i and anchor j."""
    r = wh[:, None] / anchors[None]
    return np.minimum(r, 1 / r).min(2)


def anchor_metrics(anchors, wh, thr=4.0):
    """(BPR, anchors per target) of pixel `anchors` (k, 2) on label sizes `wh` (n, 2)."""
    x = _ratio_fit(np.asarray(anchors, dtype=np.float64).reshape(-1, 2), wh)
    bpr = float((x.max(1) > 1 / thr).mean())
    aat = float((x > 1 / thr).sum(1).mean())
    return bpr, aat


def _forget_cached_grids(det):
    """Drop Detect's cached pixel anchor grids so the next eval forward uses the new anchors."""
    for name in ("grid", "anchor_grid"):
        cached = getattr(det, name, None)
        if isinstance(cached, list):
            setattr(det, name, [torch.zeros(1)] * len(cached))


def check_anchors(dataset, model, thr=4.0, imgsz=640, seed=0):
    """Log the anchors' fit; if BPR < 0.98 and k-means anchors do better, write them into Detect.

    Returns True when the model's anchors were replaced.
    """
    det = _detect_layer(model)
    stride = torch.as_tensor(det.stride, dtype=torch.float64).cpu().numpy().reshape(-1)
    anchors = det.anchors.detach().cpu().double().numpy() * stride.reshape(-1, 1, 1)  # pixels
    wh = label_wh(dataset, imgsz, rng=np.random.default_rng(seed))
    if len(wh) == 0:
        LOGGER.warning(f"{PREFIX}no labels in the dataset, anchors left unchanged")
        return False
    bpr, aat = anchor_metrics(anchors, wh, thr)
    message = f"{PREFIX}{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
    if bpr >= BPR_GOOD_ENOUGH:
        LOGGER.info(message + "Current anchors are a good fit to dataset.")
        return False
    LOGGER.info(message + "Anchors are a poor fit to dataset, computing better ones...")
    n = det.anchors.numel() // 2
    try:
        new = kmean_anchors(dataset, n=n, img_size=imgsz, thr=thr, gen=1000, verbose=False, seed=seed)
    except ValueError as e:
        LOGGER.warning(f"{PREFIX}could not compute new anchors ({e}); keeping the original ones")
        return False
    new_bpr, _ = anchor_metrics(new, wh, thr)
    if new_bpr <= bpr:
        LOGGER.info(f"{PREFIX}original anchors are better than new ones ({new_bpr:.3f} BPR), keeping them.")
        return False
    # As Model.__init__ does: pixel anchors in, level order checked (v6.2 rule), then grid units.
    det.anchors[:] = torch.from_numpy(new.reshape(anchors.shape)).to(det.anchors)
    check_anchor_order(det)
    det.anchors /= torch.as_tensor(det.stride).to(det.anchors).view(-1, 1, 1)
    _forget_cached_grids(det)
    LOGGER.info(f"{PREFIX}new anchors saved to model ({new_bpr:.3f} BPR). "
                f"Update the model *.yaml to use these anchors in the future.")
    return True


def kmean_anchors(dataset, n=9, img_size=640, thr=4.0, gen=1000, verbose=True, seed=0):
    """`n` anchors (pixels, (n, 2), sorted by area) fitted to the dataset's label sizes.

    k-means on whitened sizes, then `gen` generations of genetic mutation (probability 0.9,
    sigma 0.1, factors clipped to [0.3, 3], anchors kept >= 2 px) keeping improvements of
    fitness = mean over labels of the best ratio where it passes 1/thr.
    """
    rng = np.random.default_rng(seed)
    min_ratio = 1 / thr
    wh0 = label_wh(dataset, img_size).astype(np.float32)
    tiny = int((wh0 < 3.0).any(1).sum())
    if tiny:
        LOGGER.warning(f"{PREFIX}extremely small objects found: {tiny} of {len(wh0)} labels are < 3 pixels in size")
    wh = wh0[(wh0 >= 2.0).any(1)]
    if len(wh) == 0:
        raise ValueError("no labels of at least 2 pixels to fit anchors to")

    def fitness(k):
        best = _ratio_fit(k, wh).max(1)
        return float((best * (best > min_ratio)).mean())

    k = _evolve_anchors(_initial_anchors(wh, n, rng), fitness, gen, rng, verbose)
    k = k[np.argsort(k.prod(1))]
    x = _ratio_fit(k, wh0)
    best = x.max(1)
    LOGGER.info(f"{PREFIX}thr={min_ratio:.2f}: {(best > min_ratio).mean():.4f} best possible recall, "
                f"{(x > min_ratio).mean() * n:.2f} anchors past thr")
    LOGGER.info(f"{PREFIX}n={n}, img_size={img_size}, metric_all={x.mean():.3f}/{best.mean():.3f}-mean/best, "
                f"anchors: " + ", ".join(f"{round(w)},{round(h)}" for w, h in k))
    return k


def _initial_anchors(wh, n, rng):
    """k-means centres of the whitened sizes (or the distinct sizes when fewer than n), >= 2 px."""
    from scipy.cluster.vq import kmeans

    if len(wh) >= n:
        LOGGER.info(f"{PREFIX}running kmeans for {n} anchors on {len(wh)} points...")
        scale = wh.std(0)
        scale[scale == 0] = 1.0  # all boxes equally wide/high: nothing to whiten
        try:
            centres, _ = kmeans(wh / scale, n, iter=30, rng=rng)
        except TypeError:  # scipy < 1.15 calls the argument `seed`
            centres, _ = kmeans(wh / scale, n, iter=30, seed=rng)
        k = centres * scale
    else:
        k = np.unique(wh, axis=0)
    if len(k) < n:  # fewer distinct box sizes than anchors
        LOGGER.warning(f"{PREFIX}only {len(k)} distinct box-size clusters for {n} anchors; "
                       f"filling up with jittered copies")
        extra = k[rng.integers(len(k), size=n - len(k))] * rng.uniform(0.8, 1.25, size=(n - len(k), 2))
        k = np.concatenate([k, extra])
    return k.clip(min=2.0).astype(np.float32)  # the same 2 px floor the mutations respect


def _evolve_anchors(k, fitness, gen, rng, verbose):
    """`gen` generations of random multiplicative mutations; a mutant replaces k when it is fitter."""
    f, mutate_p, sigma = fitness(k), 0.9, 0.1
    for g in range(gen):
        v = np.ones(k.shape)
        while (v == 1).all():  # mutate until something changes
            v = ((rng.random(k.shape) < mutate_p) * rng.random() * rng.standard_normal(k.shape) * sigma + 1)
            v = v.clip(0.3, 3.0)
        candidate = (k * v).clip(min=2.0).astype(np.float32)
        fg = fitness(candidate)
        if fg > f:
            f, k = fg, candidate
            if verbose:
                LOGGER.info(f"{PREFIX}generation {g + 1}/{gen}: fitness {f:.4f}")
    return k
