"""Training loss with YOLOv5 v6.0 semantics: target assignment, CIoU box loss, IoU-weighted
objectness and class BCE (upstream v6.0 `ComputeLoss`).

    compute_loss = ComputeLoss(model)             # model carries .hyp (box/cls/obj gains scaled by train.py)
    loss, loss_items = compute_loss(preds, targets)

`preds` are the nl train-mode head outputs (bs, na, ny, nx, no) as raw logits; `targets` is
(N, 6) = [image, class, x, y, w, h] with coordinates normalised to [0, 1].
"""
import torch
import torch.nn as nn

from utils.boxes import bbox_iou
from utils.errors import UserError

# hyp keys the loss reads; a hyp yaml without them cannot train
LOSS_HYP_KEYS = ("box", "obj", "cls", "cls_pw", "obj_pw", "fl_gamma", "anchor_t")

# objectness weight per output level (P3 first); P3 sees most cells, so it gets the largest weight
_BALANCE_3 = [4.0, 1.0, 0.4]
_BALANCE_OTHER = [4.0, 1.0, 0.25, 0.06, 0.02]

# a target centre within this fraction of a cell edge also claims the neighbouring cell
_NEIGHBOUR_MARGIN = 0.5


def smooth_BCE(eps=0.1):
    """Positive and negative BCE targets after label smoothing by eps: (1 - eps/2, eps/2)."""
    return 1.0 - 0.5 * eps, 0.5 * eps


def scale_loss_gains(hyp, nl, nc, imgsz, label_smoothing=0.0):
    """Return a copy of hyp with the loss gains scaled as v6.0 train.py does.

    The yaml values are tuned for 3 output levels, 80 classes and 640-px images: box scales with
    3/nl, cls with nc/80 and 3/nl, obj with (imgsz/640)^2 and 3/nl. train.py also always sets
    label_smoothing from its --label-smoothing option (default 0.0).
    """
    scaled = dict(hyp)
    levels = 3.0 / nl
    scaled["box"] = hyp["box"] * levels
    scaled["cls"] = hyp["cls"] * (nc / 80.0 * levels)
    scaled["obj"] = hyp["obj"] * ((imgsz / 640) ** 2 * levels)
    scaled["label_smoothing"] = label_smoothing
    return scaled


class FocalLoss(nn.Module):
    """Focal loss wrapped around a BCE-with-logits criterion.

    Each element's BCE is weighted by alpha (positives) / 1 - alpha (negatives) and by
    (1 - p_t)^gamma, p_t being the probability given to the target, so confident easy
    examples contribute little. The wrapped criterion's reduction is applied afterwards.
    """

    def __init__(self, loss_fcn, gamma=1.5, alpha=0.25):
        super().__init__()
        self.loss_fcn = loss_fcn
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = loss_fcn.reduction
        self.loss_fcn.reduction = "none"  # weights are applied per element

    def forward(self, pred, true):
        loss = self.loss_fcn(pred, true)
        prob = torch.sigmoid(pred)
        p_t = true * prob + (1 - true) * (1 - prob)
        alpha_factor = true * self.alpha + (1 - true) * (1 - self.alpha)
        loss = loss * alpha_factor * (1.0 - p_t) ** self.gamma
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


def _unwrap(model):
    """The bare model inside a DataParallel / DistributedDataParallel wrapper."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


class ComputeLoss:
    """YOLOv5 v6.0 detection loss, built from a model carrying `.hyp` and a Detect head last."""

    sort_obj_iou = False  # v6.0 writes objectness targets in match order (last duplicate wins)

    def __init__(self, model, autobalance=False):
        model = _unwrap(model)
        hyp = getattr(model, "hyp", None)
        if not isinstance(hyp, dict):
            raise UserError("ComputeLoss: the model has no .hyp dict; attach the (scaled) hyperparameters "
                            "with model.hyp = scale_loss_gains(hyp, nl, nc, imgsz) before building the loss")
        missing = [k for k in LOSS_HYP_KEYS if k not in hyp]
        if missing:
            raise UserError(f"hyperparameters are missing loss keys {missing}: add them to the --hyp yaml "
                            f"(defaults are in data/hyps/hyp.scratch.yaml)")
        params = next(model.parameters(), None)
        device = params.device if params is not None else torch.device("cpu")

        self.hyp = hyp
        self.BCEcls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([hyp["cls_pw"]], device=device))
        self.BCEobj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([hyp["obj_pw"]], device=device))
        self.cp, self.cn = smooth_BCE(eps=hyp.get("label_smoothing", 0.0))
        if hyp["fl_gamma"] > 0:
            self.BCEcls = FocalLoss(self.BCEcls, hyp["fl_gamma"])
            self.BCEobj = FocalLoss(self.BCEobj, hyp["fl_gamma"])

        det = model.model[-1]
        self.det = det
        self.na, self.nc, self.nl = det.na, det.nc, det.nl
        self.balance = list(_BALANCE_3 if det.nl == 3 else _BALANCE_OTHER[:det.nl])
        self.autobalance = autobalance
        self.ssi = 0  # index of the level the balances are normalised by (stride 16)
        if autobalance:
            strides = [float(s) for s in det.stride]
            if 16.0 not in strides:
                raise ValueError(f"autobalance needs an output level of stride 16, model strides are {strides}")
            self.ssi = strides.index(16.0)
        self.gr = 1.0  # objectness target = (1 - gr) + gr * IoU
        self._offset_cache = {}

    @property
    def anchors(self):
        """Detect's anchors (nl, na, 2) in grid units; read live so AutoAnchor and .to() are seen."""
        return self.det.anchors

    def __call__(self, p, targets):
        device = targets.device
        lcls = torch.zeros(1, device=device)
        lbox = torch.zeros(1, device=device)
        lobj = torch.zeros(1, device=device)
        tcls, tbox, indices, anchors = self.build_targets(p, targets)

        for i, pi in enumerate(p):
            b, a, gj, gi = indices[i]
            tobj = torch.zeros_like(pi[..., 0])
            n = b.shape[0]
            if n:
                ps = pi[b, a, gj, gi]  # (n, no) predictions at the assigned cells
                # decoded box in grid units relative to the cell: xy in (-0.5, 1.5), wh up to 4x anchor
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors[i]
                pbox = torch.cat((pxy, pwh), 1)
                iou = bbox_iou(pbox.T, tbox[i], x1y1x2y2=False, CIoU=True)
                lbox += (1.0 - iou).mean()

                score_iou = iou.detach().clamp(0).type(tobj.dtype)
                if self.sort_obj_iou:
                    order = score_iou.argsort()
                    b, a, gj, gi, score_iou = b[order], a[order], gj[order], gi[order], score_iou[order]
                tobj[b, a, gj, gi] = (1.0 - self.gr) + self.gr * score_iou

                if self.nc > 1:  # a single-class model has nothing to classify
                    t = torch.full_like(ps[:, 5:], self.cn)
                    t[torch.arange(n, device=t.device), tcls[i]] = self.cp
                    lcls += self.BCEcls(ps[:, 5:], t)

            obji = self.BCEobj(pi[..., 4], tobj)
            lobj += obji * self.balance[i]
            if self.autobalance:
                self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / obji.detach().item()

        if self.autobalance:
            ref = self.balance[self.ssi]
            self.balance = [x / ref for x in self.balance]
        lbox *= self.hyp["box"]
        lobj *= self.hyp["obj"]
        lcls *= self.hyp["cls"]
        bs = tobj.shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    def _offsets(self, device, dtype):
        """(5, 2) cell offsets in grid units: own cell, left, up, right, down neighbours."""
        key = (device, dtype)
        if key not in self._offset_cache:
            unit = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device, dtype=dtype)
            self._offset_cache[key] = unit * _NEIGHBOUR_MARGIN
        return self._offset_cache[key]

    def build_targets(self, p, targets):
        """Assign targets to (image, anchor, cell) per level, vectorised over targets and anchors.

        A (target, anchor) pair is kept when neither side of the target is more than anchor_t times
        larger or smaller than the anchor's. Each kept pair claims its own cell plus the nearer
        horizontal and vertical neighbour cell (when not on the grid border). Rows come out as
        five blocks (own, left, up, right, down), each in anchor-major order, as in v6.0.

        Returns per level: class ids (n,), box targets (n, 4) = (x, y offset within the cell, w, h)
        in grid units, indices (b, a, gj, gi) and the matched anchors (n, 2).
        """
        na, nt = self.na, targets.shape[0]
        device, dtype = targets.device, targets.dtype
        anchor_t = self.hyp["anchor_t"]
        tcls, tbox, indices, anch = [], [], [], []

        # (na, nt, 7): every target once per anchor, with the anchor index appended
        anchor_index = torch.arange(na, device=device, dtype=dtype).view(na, 1, 1).expand(na, nt, 1)
        per_anchor = torch.cat((targets.unsqueeze(0).expand(na, nt, 6), anchor_index), 2)
        offsets = self._offsets(device, dtype)
        all_anchors = self.anchors

        for i in range(self.nl):
            anchors = all_anchors[i]
            ny, nx = p[i].shape[2], p[i].shape[3]
            gain = torch.tensor([1, 1, nx, ny, nx, ny, 1], device=device, dtype=dtype)
            t = per_anchor * gain  # coordinates in grid units of this level

            if nt:
                ratio = t[..., 4:6] / anchors[:, None]
                t = t[torch.max(ratio, 1 / ratio).max(2)[0] < anchor_t]  # (m, 7) anchor-major
                m = t.shape[0]
                gxy = t[:, 2:4]
                gxy_from_end = gain[[2, 3]] - gxy
                near_left_top = ((gxy % 1 < _NEIGHBOUR_MARGIN) & (gxy > 1)).T
                near_right_bottom = ((gxy_from_end % 1 < _NEIGHBOUR_MARGIN) & (gxy_from_end > 1)).T
                use = torch.cat((torch.ones(1, m, dtype=torch.bool, device=device),
                                 near_left_top, near_right_bottom), 0)  # (5, m)
                t = t.unsqueeze(0).expand(5, m, 7)[use]
                cell_offset = offsets[:, None].expand(5, m, 2)[use]
            else:
                t = per_anchor[0]
                cell_offset = 0

            b, c = t[:, :2].long().T
            gxy = t[:, 2:4]
            gwh = t[:, 4:6]
            gij = (gxy - cell_offset).long()
            gij[:, 0].clamp_(0, nx - 1)  # the clamped cell is also the one the box target refers to
            gij[:, 1].clamp_(0, ny - 1)
            gi, gj = gij.T
            a = t[:, 6].long()

            indices.append((b, a, gj, gi))
            tbox.append(torch.cat((gxy - gij, gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
        return tcls, tbox, indices, anch
