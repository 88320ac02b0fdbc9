"""Detection metrics as YOLOv5 v6.0 reports them: matching, P/R/AP per class, mAP, fitness.

Everything here works on detections and labels already in the same pixel space
(validation rescales both to the original image before matching).

One deliberate change from v6.0: `match_predictions` repeats the one-to-one assignment at every
IoU threshold (the v6.2 fix). v6.0 assigned once at IoU 0.5 and then thresholded those pairs, so a
label taken by a loose detection at 0.5 could not go to a tighter one at 0.75. The v6.0 rule is
still available with `per_threshold=False` (used by the parity tests).
"""
import logging
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch

from utils.boxes import box_iou  # noqa: F401  (public path utils.evaluation.metrics.box_iou, as upstream)
from utils.evaluation.metric_plots import plot_confusion_matrix, plot_mc_curve, plot_pr_curve

LOGGER = logging.getLogger("yolov5")

FITNESS_WEIGHTS = np.array([0.0, 0.0, 0.1, 0.9])  # [P, R, mAP@0.5, mAP@0.5:0.95]
CURVE_POINTS = 1000  # confidence grid of the P, R and F1 curves
EPS = 1e-16
_trapezoid = getattr(np, 'trapezoid', None) or np.trapz  # numpy 2 renamed trapz


def fitness(x):
    """Model fitness for best.pt selection: 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95 per row of x."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    return (x[:, :4] * FITNESS_WEIGHTS).sum(1)


def smooth(y, f=0.05):
    """Box-filter y with a window of about 2*f of its length (odd), padding with the end values."""
    y = np.asarray(y, dtype=np.float64)
    window = round(len(y) * f * 2) // 2 + 1
    pad = np.ones(window // 2)
    padded = np.concatenate((pad * y[0], y, pad * y[-1]))
    return np.convolve(padded, np.ones(window) / window, mode='valid')


def _one_to_one(pairs, resort_by_iou):
    """Reduce candidate (label, detection, iou) rows so each label and each detection appears once.

    First every detection keeps its highest-IoU label (rows end up ordered by detection index).
    Then every label keeps its first remaining row: the lowest detection index, i.e. the most
    confident detection because NMS output is score-sorted, unless `resort_by_iou` re-orders by
    IoU first (the confusion matrix does). This is upstream's rule, kept for identical numbers.
    """
    if len(pairs) < 2:
        return pairs
    pairs = pairs[np.argsort(-pairs[:, 2], kind='stable')]
    pairs = pairs[np.unique(pairs[:, 1], return_index=True)[1]]
    if resort_by_iou:
        pairs = pairs[np.argsort(-pairs[:, 2], kind='stable')]
    return pairs[np.unique(pairs[:, 0], return_index=True)[1]]


def match_predictions(detections, labels, iouv, per_threshold=True):
    """Which detections are true positives at each IoU threshold.

    Args:
        detections: (N, 6) tensor [x1, y1, x2, y2, conf, class], score-sorted as NMS returns it.
        labels: (M, 5) tensor [class, x1, y1, x2, y2].
        iouv: (T,) IoU thresholds, e.g. torch.linspace(0.5, 0.95, 10).
        per_threshold: True (default, v6.2 fix) assigns labels to detections separately at each
            threshold; False reproduces v6.0, which assigns once at iouv[0] and reuses those pairs.

    Returns:
        (N, T) bool tensor on iouv's device.
    """
    thresholds = iouv.detach().cpu().numpy()
    correct = np.zeros((detections.shape[0], len(thresholds)), dtype=bool)
    if len(detections) and len(labels):
        iou = box_iou(labels[:, 1:], detections[:, :4]).cpu().numpy()
        same_class = (labels[:, 0:1] == detections[:, 5]).cpu().numpy()
        li, di = np.nonzero((iou >= thresholds[0]) & same_class)
        pairs = np.stack((li, di, iou[li, di]), 1).astype(np.float64)
        if per_threshold:
            for t, thr in enumerate(thresholds):
                kept = _one_to_one(pairs[iou[li, di] >= thr], resort_by_iou=False)
                correct[kept[:, 1].astype(int), t] = True
        else:
            kept = _one_to_one(pairs, resort_by_iou=False)
            ious = iou[kept[:, 0].astype(int), kept[:, 1].astype(int)]
            correct[kept[:, 1].astype(int)] = ious[:, None] >= thresholds
    return torch.from_numpy(correct).to(iouv.device)


process_batch = match_predictions  # v6.0 val.py name


def compute_ap(recall, precision):
    """AP from one recall/precision curve, as upstream: 101-point interpolation, trapezoid rule.

    Sentinels (recall 0, precision 1) and (recall 1, precision 0) are added, precision is made
    non-increasing from the right, sampled at recall 0, 0.01, ..., 1 by linear interpolation and
    integrated with the trapezoid rule. Returns (ap, envelope precision, recall with sentinels).
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    ap = float(_trapezoid(np.interp(x, mrec, mpre), x))
    return ap, mpre, mrec


def ap_per_class(tp, conf, pred_cls, target_cls, plot=False, save_dir='.', names=()):
    """Precision, recall, AP and F1 for every class that has labels.

    Args:
        tp: (n, T) bool true-positive matrix (T IoU thresholds); conf, pred_cls: (n,) per prediction.
        target_cls: (m,) classes of all labels. Only these classes are scored: predictions of a
            class that is never labelled are ignored, as upstream.
        plot: write PR_curve.png, F1_curve.png, P_curve.png and R_curve.png to save_dir.
        names: class names (list or {index: name}) for the plot legends.

    Returns:
        p, r, f1: (nc,) at the single confidence that maximises the mean F1 over classes (read
        from curves on a 1000-point confidence grid); ap: (nc, T); unique_classes: (nc,) int32.
    """
    tp, conf = np.asarray(tp), np.asarray(conf, dtype=np.float64)
    pred_cls, target_cls = np.asarray(pred_cls), np.asarray(target_cls)
    order = np.argsort(-conf, kind='stable')
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]

    unique_classes = np.unique(target_cls)
    nc = len(unique_classes)
    px = np.linspace(0, 1, CURVE_POINTS)
    ap = np.zeros((nc, tp.shape[1]))
    p, r = np.zeros((nc, CURVE_POINTS)), np.zeros((nc, CURVE_POINTS))
    pr_curves = np.zeros((nc, CURVE_POINTS))
    for ci, c in enumerate(unique_classes):
        mine = pred_cls == c
        n_labels = (target_cls == c).sum()
        if not mine.any() or n_labels == 0:
            continue
        tpc = tp[mine].cumsum(0)
        fpc = (1 - tp[mine]).cumsum(0)
        recall = tpc / (n_labels + EPS)
        precision = tpc / (tpc + fpc)
        # np.interp needs increasing x: walk the confidence axis negated (conf is descending)
        r[ci] = np.interp(-px, -conf[mine], recall[:, 0], left=0)
        p[ci] = np.interp(-px, -conf[mine], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
            if j == 0:
                pr_curves[ci] = np.interp(px, mrec, mpre)

    f1 = 2 * p * r / (p + r + EPS)
    if plot:
        save_dir = Path(save_dir)
        plot_pr_curve(px, pr_curves, ap, save_dir / 'PR_curve.png', names, classes=unique_classes)
        plot_mc_curve(px, f1, save_dir / 'F1_curve.png', names, ylabel='F1', classes=unique_classes)
        plot_mc_curve(px, p, save_dir / 'P_curve.png', names, ylabel='Precision', classes=unique_classes)
        plot_mc_curve(px, r, save_dir / 'R_curve.png', names, ylabel='Recall', classes=unique_classes)

    best = f1.mean(0).argmax() if nc else 0
    return p[:, best], r[:, best], ap, f1[:, best], unique_classes.astype('int32')


MapSummary = namedtuple('MapSummary', 'mp mr map50 map p r ap50 ap f1 ap_class nt maps')


def _as_numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def summarize_stats(stats, nc, plot=False, save_dir='.', names=()):
    """The numbers validation reports, from per-image (correct, conf, pred_cls, target_cls) tuples.

    As v6.0 val.py: if no prediction is correct at any threshold, every metric is 0. mp, mr, map50
    and map are means over the classes that have labels; maps (length nc) holds each class's
    AP@0.5:0.95, and the overall map for classes without labels.
    """
    if not len(stats):
        stats = [(np.zeros((0, 1), bool), np.zeros(0), np.zeros(0), np.zeros(0))]
    correct, conf, pred_cls, target_cls = (np.concatenate([_as_numpy(s[k]) for s in stats], 0) for k in range(4))
    nt = np.bincount(target_cls.astype(np.int64), minlength=nc)
    if not correct.any():
        empty = np.zeros(0)
        return MapSummary(0.0, 0.0, 0.0, 0.0, empty, empty, empty, empty, empty, empty.astype('int32'), nt,
                          np.zeros(nc))
    p, r, ap, f1, ap_class = ap_per_class(correct, conf, pred_cls, target_cls, plot, save_dir, names)
    ap50, ap_mean = ap[:, 0], ap.mean(1)
    mp, mr, map50, map_ = p.mean(), r.mean(), ap50.mean(), ap_mean.mean()
    maps = np.zeros(nc) + map_
    maps[ap_class] = ap_mean
    return MapSummary(mp, mr, map50, map_, p, r, ap50, ap_mean, f1, ap_class, nt, maps)


class ConfusionMatrix:
    """(nc + 1) x (nc + 1) counts: rows predicted class, columns true class, last index background.

    Matching is class-agnostic: detections above `conf` pair with labels at IoU > `iou_thres`, one to
    one. A matched pair counts at [predicted, true]; a label left unmatched counts as missed
    [background, true]; a detection left unmatched counts as [predicted, background], but only in an
    image where at least one pair matched (as upstream).
    """

    def __init__(self, nc, conf=0.25, iou_thres=0.45):
        self.matrix = np.zeros((nc + 1, nc + 1))
        self.nc = nc
        self.conf = conf
        self.iou_thres = iou_thres

    def process_batch(self, detections, labels):
        """detections: (N, 6) [x1, y1, x2, y2, conf, class] or None; labels: (M, 5) [class, x1, y1, x2, y2].

        With no detections every label counts as missed (v6.2 behaviour; v6.0's val.py simply
        skipped such images, which the caller can still do).
        """
        gt_classes = labels[:, 0].int().tolist()
        if detections is None or not len(detections):
            for gc in gt_classes:
                self.matrix[self.nc, gc] += 1
            return
        detections = detections[detections[:, 4] > self.conf]
        det_classes = detections[:, 5].int().tolist()
        iou = box_iou(labels[:, 1:], detections[:, :4]).cpu().numpy()
        li, di = np.nonzero(iou > self.iou_thres)
        pairs = _one_to_one(np.stack((li, di, iou[li, di]), 1), resort_by_iou=True)
        label_to_det = {int(l): int(d) for l, d, _ in pairs}

        for i, gc in enumerate(gt_classes):
            if i in label_to_det:
                self.matrix[det_classes[label_to_det[i]], gc] += 1
            else:
                self.matrix[self.nc, gc] += 1
        if label_to_det:
            matched = set(label_to_det.values())
            for i, dc in enumerate(det_classes):
                if i not in matched:
                    self.matrix[dc, self.nc] += 1

    def plot(self, normalize=True, save_dir='', names=()):
        """Write confusion_matrix.png into save_dir; returns its path."""
        return plot_confusion_matrix(self.matrix, Path(save_dir) / 'confusion_matrix.png', names, normalize)

    def print(self):
        for row in self.matrix:
            LOGGER.info(' '.join(map(str, row)))
