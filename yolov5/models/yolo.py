"""YOLOv5 detection model: the Detect head, the Model wrapper and the yaml parser (v6.0 architecture).

`Model` and `Detect` keep upstream v6.0 class names and attributes (Model: `yaml`, `yaml_file`, `model`,
`save`, `names`, `inplace`, `stride`; Detect: `nc`, `no`, `nl`, `na`, `anchors` buffer in grid units,
`grid`, `anchor_grid`, `m`, `inplace`, `stride`) so pickled upstream checkpoints load into these classes
and ours load into upstream. Objects unpickled from upstream files carry only those attributes, so any
attribute added here must have a class-level default.

Deliberate differences from v6.0 (fixes upstream made after v6.0; see docs/compatibility.md):
* the anchor-order check runs in pixel space on per-level mean areas (v6.2), see `check_anchor_order`;
* the class-bias prior is ln(0.6 / (nc - 0.999999)) (v6.1), which matters for single-class models.
"""
import ast
import copy
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import models.common as common
from models.common import (C3, C3SPP, C3TR, SPP, SPPF, Bottleneck, BottleneckCSP, C3Ghost, Concat, Contract, Conv,
                           DWConv, Expand, Focus, GhostBottleneck, GhostConv, fuse_conv_and_bn)
from utils.errors import UserError
from utils.flops import count_macs, gflops_at
from utils.io.model_files import check_model_dict, find_yaml, load_model_yaml

LOGGER = logging.getLogger("yolov5")


class Detect(nn.Module):
    """Per-level 1x1 conv head. Train mode: raw (bs, na, ny, nx, no) logits per level.
    Eval mode: (decoded boxes (bs, N, no) in input pixels, list of the raw per-level tensors)."""

    stride = None  # set by Model after the stride probe (tensor of nl strides)
    onnx_dynamic = False  # rebuild grids on every call (export with dynamic shapes)

    def __init__(self, nc=80, anchors=(), ch=(), inplace=True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.zeros(1)] * self.nl  # cell offsets, built lazily per input size
        self.anchor_grid = [torch.zeros(1)] * self.nl  # anchors in pixels, built with the grid
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.inplace = inplace  # write the decoded boxes into the sigmoid tensor

    def forward(self, x):
        raw, decoded = [], []
        for i in range(self.nl):
            p = self.m[i](x[i])
            bs, _, ny, nx = p.shape
            p = p.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            raw.append(p)
            if not self.training:
                decoded.append(self._decode(p, i))
        return raw if self.training else (torch.cat(decoded, 1), raw)

    def _decode(self, p, i):
        """xy = (2 sigma - 0.5 + cell) * stride, wh = (2 sigma)^2 * anchor_pixels, the rest sigmoided."""
        bs, _, ny, nx, _ = p.shape
        grid = self.grid[i]
        if self.onnx_dynamic or grid.shape[2:4] != p.shape[2:4] or grid.device != p.device:
            self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
        y = p.sigmoid()
        if self.inplace:
            y[..., 0:2] = (y[..., 0:2] * 2.0 - 0.5 + self.grid[i]) * self.stride[i]
            y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]
        else:  # no in-place writes (some exporters need this); same values
            xy = (y[..., 0:2] * 2.0 - 0.5 + self.grid[i]) * self.stride[i]
            wh = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]
            y = torch.cat((xy, wh, y[..., 4:]), -1)
        return y.view(bs, -1, self.no)

    def _make_grid(self, nx, ny, i):
        """Grids on the anchors' device and in their dtype (the model's: fp32, or fp16 after .half())."""
        device, dtype = self.anchors.device, self.anchors.dtype
        yv, xv = torch.meshgrid(torch.arange(ny, device=device), torch.arange(nx, device=device), indexing="ij")
        shape = (1, self.na, ny, nx, 2)
        grid = torch.stack((xv, yv), 2).expand(shape).to(dtype)
        anchor_grid = (self.anchors[i].clone() * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape).to(dtype)
        return grid, anchor_grid


def check_anchor_order(m):
    """Reverse Detect `m`'s anchor levels if their size order disagrees with the stride order.

    Expects `m.anchors` in PIXELS (call before dividing by stride). This is the v6.2 fix: v6.0 compared
    the first and last single anchor in grid units, which could reverse a correctly ordered set.
    """
    mean_area = m.anchors.prod(-1).mean(-1).view(-1)
    da = mean_area[-1] - mean_area[0]
    ds = m.stride[-1] - m.stride[0]
    if da != 0 and da.sign() != ds.sign():
        LOGGER.info("Reversing anchor order to match the stride order")
        m.anchors[:] = m.anchors.flip(0)


class Model(nn.Module):
    """A YOLOv5 network built from a model yaml (path, project file name, or dict)."""

    yaml_file = None  # set only when built from a file, as upstream

    def __init__(self, cfg="yolov5s.yaml", ch=3, nc=None, anchors=None):
        super().__init__()
        if isinstance(cfg, dict):
            self.yaml = copy.deepcopy(cfg)
            source = "model dict"
        else:
            path = find_yaml(cfg, "model cfg")
            self.yaml_file = Path(path).name
            self.yaml = load_model_yaml(path)
            source = path
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml.get("nc"):
            LOGGER.info(f"Overriding model yaml nc={self.yaml.get('nc')} with nc={nc}")
            self.yaml["nc"] = nc
        if anchors:
            LOGGER.info(f"Overriding model yaml anchors with anchors={anchors}")
            self.yaml["anchors"] = round(anchors) if isinstance(anchors, (int, float)) else anchors
        self.model, self.save = parse_model(copy.deepcopy(self.yaml), ch=[ch], source=source)
        self.names = [str(i) for i in range(self.yaml["nc"])]
        self.inplace = self.yaml.get("inplace", True)

        m = self.model[-1]
        if isinstance(m, Detect):
            # Strides from one train-mode pass of zeros (as upstream: leaves BN running_var at 0.9).
            s = 256
            m.inplace = self.inplace
            with torch.no_grad():
                outputs = self.forward(torch.zeros(1, ch, s, s))
            m.stride = torch.tensor([s / o.shape[-2] for o in outputs])
            check_anchor_order(m)
            m.anchors /= m.stride.view(-1, 1, 1)  # grid units from here on
            self.stride = m.stride
            self._initialize_biases()
        _initialize_weights(self)
        self.info()

    def forward(self, x, augment=False, profile=False, visualize=False):
        if augment:
            return self._forward_augment(x)
        return self._forward_once(x, profile, visualize)

    def _forward_once(self, x, profile=False, visualize=False):
        saved, times = [], []
        for m in self.model:
            if m.f != -1:
                x = saved[m.f] if isinstance(m.f, int) else [x if j == -1 else saved[j] for j in m.f]
            if profile:
                self._profile_one_layer(m, x, times)
            x = m(x)
            saved.append(x if m.i in self.save else None)
            if visualize:
                from utils.inference.feature_maps import feature_visualization  # imported only when asked (needs cv2)
                feature_visualization(x, m.type, m.i, save_dir=visualize)
        return x

    def _forward_augment(self, x):
        """Test-time augmentation: scales 1, 0.83, 0.67 with a left-right flip on the middle one."""
        img_hw = x.shape[-2:]
        gs = int(self.stride.max())
        outputs = []
        for scale, flip_lr in ((1.0, False), (0.83, True), (0.67, False)):
            xi = _scale_img(x.flip(3) if flip_lr else x, scale, gs)
            yi = self._forward_once(xi)[0]
            yi[..., :4] /= scale
            if flip_lr:
                yi[..., 0] = img_hw[1] - yi[..., 0]
            outputs.append(yi)
        # Drop the P5 (largest-stride) rows of the full-scale pass and the P3 rows of the 0.67 pass.
        nl = self.model[-1].nl
        cells = sum(4 ** k for k in range(nl))  # rows per coarsest-level row (P3:P4:P5 = 16:4:1)
        outputs[0] = outputs[0][:, : -(outputs[0].shape[1] // cells)]
        outputs[-1] = outputs[-1][:, (outputs[-1].shape[1] // cells) * 4 ** (nl - 1):]
        return torch.cat(outputs, 1), None

    def _profile_one_layer(self, m, x, times):
        """Log time (ms), GFLOPs and parameters of one layer (eval mode, no grad; BN stats untouched)."""
        gflops = 2 * count_macs(m, x) / 1e9
        modes = [(mod, mod.training) for mod in m.modules()]
        m.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(10):
                m(x)
            times.append((time.perf_counter() - t0) * 100)  # ms per call
        for mod, was_training in modes:
            mod.training = was_training
        if m is self.model[0]:
            LOGGER.info(f"{'time (ms)':>10s} {'GFLOPs':>10s} {'params':>10s}  module")
        LOGGER.info(f"{times[-1]:10.2f} {gflops:10.2f} {m.np:10.0f}  {m.type}")
        if m is self.model[-1]:
            LOGGER.info(f"{sum(times):10.2f} {'-':>10s} {'-':>10s}  Total")

    def _initialize_biases(self, cf=None):
        """Detect bias priors: objectness ~ 8 objects per 640x640 image, classes ~ 0.6/nc (v6.1 formula).

        `cf` optionally gives class frequencies to use log(cf / sum(cf)) as class priors instead."""
        m = self.model[-1]
        with torch.no_grad():
            for conv, s in zip(m.m, m.stride):
                b = conv.bias.view(m.na, -1)
                b[:, 4] += math.log(8 / (640 / float(s)) ** 2)
                b[:, 5:] += math.log(0.6 / (m.nc - 0.999999)) if cf is None else torch.log(cf / cf.sum())

    def _apply(self, fn, *args, **kwargs):
        # Keep Detect's plain tensor attributes on the same device/dtype as the weights. Model.stride is
        # left alone (CPU fp32) exactly like upstream, which code computing int(stride.max()) relies on.
        # The grid caches are dropped rather than converted (v6.0 converts them): they are rebuilt at the
        # next call from the converted anchors, and fn may not apply to them (channels_last needs 4-D).
        self = super()._apply(fn, *args, **kwargs)
        m = self.model[-1]
        if isinstance(m, Detect):
            if m.stride is not None:
                m.stride = fn(m.stride)
            m.grid = [torch.zeros(1)] * m.nl
            if isinstance(m.anchor_grid, list):
                m.anchor_grid = [torch.zeros(1)] * m.nl
        return self

    def fuse(self):
        """Fold every Conv's BatchNorm into its convolution (inference only); returns self."""
        LOGGER.info("Fusing layers... ")
        for m in self.model.modules():
            if isinstance(m, Conv) and hasattr(m, "bn"):  # DWConv is a Conv
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
        self.info()
        return self

    def info(self, verbose=False, img_size=640):
        """Log "Model Summary: N layers, P parameters, G gradients, F GFLOPs"; return those numbers."""
        params = list(self.parameters())
        n_p = sum(p.numel() for p in params)
        n_g = sum(p.numel() for p in params if p.requires_grad)
        if verbose:
            LOGGER.info(f"{'layer':>5} {'name':>40} {'gradient':>9} {'parameters':>12} {'shape':>20} "
                        f"{'mu':>10} {'sigma':>10}")
            for i, (name, p) in enumerate(self.named_parameters()):
                sigma = p.std().item() if p.numel() > 1 else 0.0
                LOGGER.info(f"{i:5g} {name:>40} {str(p.requires_grad):>9} {p.numel():12g} {str(list(p.shape)):>20} "
                            f"{p.mean().item():10.3g} {sigma:10.3g}")
        stride = getattr(self, "stride", None)
        probe = max(int(stride.max()), 32) if stride is not None else 32
        detect = self.model[-1]
        grids = (list(detect.grid), list(detect.anchor_grid)) if isinstance(detect, Detect) else None
        gflops = gflops_at(self, self.yaml.get("ch", 3), probe, img_size)
        if grids is not None:  # the probe must not leave 32x32 grids behind (pickled with the model)
            detect.grid, detect.anchor_grid = grids
        n_layers = len(list(self.modules()))
        LOGGER.info(f"Model Summary: {n_layers} layers, {n_p} parameters, {n_g} gradients, {gflops:.1f} GFLOPs")
        return n_layers, n_p, n_g, gflops


def _initialize_weights(model):
    """Upstream's non-default settings: BN eps 1e-3 / momentum 0.03, in-place activations (not SiLU)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03
        elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6)):
            m.inplace = True


def _scale_img(img, ratio, gs):
    """Resize a batch by `ratio` (bilinear) and pad right/bottom with 0.447 up to multiples of `gs`."""
    if ratio == 1.0:
        return img
    h, w = img.shape[2:]
    size = (int(h * ratio), int(w * ratio))
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
    ph, pw = (math.ceil(v * ratio / gs) * gs for v in (h, w))
    return F.pad(img, [0, pw - size[1], 0, ph - size[0]], value=0.447)


# ---------------------------------------------------------------------------------------------------------
# yaml -> layers. Each yaml row is [from, number, module, args]; how a row's arguments and output channels
# are derived depends on the module kind, looked up in LAYER_KINDS below.


def _make_divisible(x, divisor=8):
    return math.ceil(x / divisor) * divisor


def _channel_block(row, ctx):
    """Conv-like layers: args[0] is the output width (scaled by width_multiple unless it is the head size)."""
    c1, c2 = ctx["ch"][row["f"]], row["args"][0]
    if c2 != ctx["no"]:
        c2 = _make_divisible(c2 * ctx["gw"], 8)
    args = [c1, c2, *row["args"][1:]]
    n = row["n"]
    if row["module"] in REPEATS_INSIDE:  # the block repeats its bottlenecks itself
        args.insert(2, n)
        n = 1
    return args, c2, n


def _concat(row, ctx):
    return row["args"], sum(ctx["ch"][j] for j in row["from_list"]), row["n"]


def _detect(row, ctx):
    args = list(row["args"])
    args.append([ctx["ch"][j] for j in row["from_list"]])
    if isinstance(args[1], int):  # anchors given as a count per level: placeholders, set by AutoAnchor
        args[1] = [list(range(args[1] * 2))] * len(row["from_list"])
    return args, None, row["n"]


def _batchnorm(row, ctx):
    return [ctx["ch"][row["f"]]], ctx["ch"][row["f"]], row["n"]


def _contract(row, ctx):
    return row["args"], ctx["ch"][row["f"]] * row["args"][0] ** 2, row["n"]


def _expand(row, ctx):
    return row["args"], ctx["ch"][row["f"]] // row["args"][0] ** 2, row["n"]


def _same_channels(row, ctx):  # e.g. nn.Upsample, nn.MaxPool2d, nn.Identity
    return row["args"], ctx["ch"][row["f"]], row["n"]


REPEATS_INSIDE = {BottleneckCSP, C3, C3TR, C3Ghost}
LAYER_KINDS = {
    **dict.fromkeys((Conv, GhostConv, Bottleneck, GhostBottleneck, SPP, SPPF, DWConv, Focus, BottleneckCSP, C3,
                     C3TR, C3SPP, C3Ghost), _channel_block),
    Concat: _concat,
    Detect: _detect,
    nn.BatchNorm2d: _batchnorm,
    Contract: _contract,
    Expand: _expand,
}


def _resolve_module(name, project_layers, where):
    """Map a yaml module name to a class without eval: `nn.X`/`torch.nn.X`, or a layer of this project."""
    if isinstance(name, str):
        for prefix in ("torch.nn.", "nn."):
            if name.startswith(prefix):
                cls = getattr(nn, name[len(prefix):], None)
                break
        else:
            cls = project_layers.get(name)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
    raise UserError(f"{where}: unknown module {name!r}; use a layer of models/common.py, Detect, or nn.<Layer>")


def _project_layers():
    layers = {k: v for k, v in vars(common).items() if isinstance(v, type) and issubclass(v, nn.Module)}
    layers["Detect"] = Detect
    return layers


def _resolve_arg(a, names):
    """yaml string args: 'nc'/'anchors' -> the top-level values, Python literals ('None') -> values,
    anything else (e.g. 'nearest') stays a string."""
    if not isinstance(a, str):
        return a
    if a in names:
        return names[a]
    try:
        return ast.literal_eval(a)
    except (ValueError, SyntaxError):
        return a


def parse_model(d, ch, source="model yaml"):
    """Build the layer Sequential and the sorted list of layer indices whose outputs later layers read."""
    check_model_dict(d, source)
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    ctx = {"ch": list(ch), "gw": gw, "no": na * (nc + 5)}
    names = {"nc": nc, "anchors": anchors}
    LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    layers, save = [], []
    project_layers = _project_layers()
    for i, (f, n, module, args) in enumerate(d["backbone"] + d["head"]):
        from_list = [f] if isinstance(f, int) else f
        m = _resolve_module(module, project_layers, f"{source}: layer {i}")
        args = [_resolve_arg(a, names) for a in args]
        n_scaled = max(round(n * gd), 1) if n > 1 else n
        row = {"f": f, "from_list": from_list, "n": n_scaled, "module": m, "args": args}
        kind = LAYER_KINDS.get(m, _same_channels)
        try:
            args, c2, n_build = kind(row, ctx)
            m_ = nn.Sequential(*(m(*args) for _ in range(n_build))) if n_build > 1 else m(*args)
        except (TypeError, ValueError, IndexError) as e:
            raise UserError(f"{source}: layer {i}: cannot build {module} from args {row['args']} "
                            f"(from={f}): {e}") from None
        m_.i, m_.f, m_.type = i, f, f"{m.__module__}.{m.__qualname__}"
        m_.np = sum(p.numel() for p in m_.parameters())
        LOGGER.info(f"{i:>3}{str(f):>18}{n_scaled:>3}{m_.np:10.0f}  {m_.type:<40}{str(args):<30}")
        save.extend(j % i for j in from_list if j != -1)
        layers.append(m_)
        if i == 0:
            ctx["ch"] = []
        ctx["ch"].append(c2)
    return nn.Sequential(*layers), sorted(save)
