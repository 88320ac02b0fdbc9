"""Network building blocks of YOLOv5 (v6.0 architecture).

Class names, constructor signatures and child attribute names (`conv`, `bn`, `act`, `cv1`..`cv4`, `m`)
follow upstream YOLOv5 v6.0 on purpose: official checkpoints pickle these classes as
`models.common.<Name>` and state_dict keys are built from the attribute names. Every class that may end
up in a checkpoint must therefore be *defined* in this module (not merely re-exported), so that our own
pickles reference `models.common.<Name>` too.
"""
import math

import torch
import torch.nn as nn


def autopad(k, p=None):
    """Padding that keeps the spatial size for odd kernels ('same' padding) unless `p` is given."""
    if p is not None:
        return p
    return k // 2 if isinstance(k, int) else [size // 2 for size in k]


def fuse_conv_and_bn(conv, bn):
    """Fold an eval-mode BatchNorm2d into the preceding Conv2d; returns a new Conv2d with bias.

    W' = W * g/sqrt(var+eps) (per output channel); b' = g/sqrt(var+eps) * b + beta - g*mean/sqrt(var+eps).
    Element-wise scaling gives bit-for-bit the weights of the diag(scale) @ W matrix formulation (checked);
    the bias term keeps the reference order g*mean/std so it matches bit-for-bit too.
    """
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True)
    fused = fused.requires_grad_(False).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        std = torch.sqrt(bn.running_var + bn.eps)
        scale = bn.weight.div(std)
        fused.weight.copy_((conv.weight.reshape(conv.out_channels, -1) * scale[:, None]).view_as(fused.weight))
        shift = bn.bias - bn.weight.mul(bn.running_mean).div(std)
        conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        fused.bias.copy_(scale * conv_bias + shift)
    return fused


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation (SiLU by default; a module; or identity)."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        if act is True:
            self.act = nn.SiLU()
        else:
            self.act = act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x):
        # After Model.fuse() the `bn` child is gone and the folded conv carries its effect.
        if "bn" not in self._modules:
            return self.forward_fuse(x)
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.act(self.conv(x))


class DWConv(Conv):
    """Depth-wise style Conv: groups = gcd(c1, c2)."""

    def __init__(self, c1, c2, k=1, s=1, act=True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), act=act)


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv, with a residual add when `shortcut` and the channel counts agree."""

    def __init__(self, c1, c2, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class BottleneckCSP(nn.Module):
    """CSP bottleneck of YOLOv5 v4/v5 (used by some hub yamls): plain convs in the split branches."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1)
        self.bn = nn.BatchNorm2d(2 * c_)  # applied to the concatenation of both branches
        self.act = nn.SiLU()
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        y1 = self.cv3(self.m(self.cv1(x)))
        y2 = self.cv2(x)
        return self.cv4(self.act(self.bn(torch.cat((y1, y2), dim=1))))


class C3(nn.Module):
    """CSP block with three Convs: cv3(cat(m(cv1(x)), cv2(x))); `m` holds n bottlenecks of width c2/2."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPP(nn.Module):
    """Spatial pyramid pooling: parallel stride-1 max-pools of several sizes, concatenated with the input."""

    def __init__(self, c1, c2, k=(5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=size, stride=1, padding=size // 2) for size in k)

    def forward(self, x):
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [pool(x) for pool in self.m], 1))


class SPPF(nn.Module):
    """Fast SPP: one k x k max-pool applied three times in cascade (same result as SPP with k, 2k-1, 3k-2)."""

    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        p1 = self.m(x)
        p2 = self.m(p1)
        return self.cv2(torch.cat([x, p1, p2, self.m(p2)], 1))


class Focus(nn.Module):
    """Space-to-depth stem of YOLOv5 <= v5.0: four pixel-phase slices stacked on channels, then a Conv."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act)

    def forward(self, x):
        phases = [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]]
        return self.conv(torch.cat(phases, 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along `d` (channels by default)."""

    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class GhostConv(nn.Module):
    """Ghost convolution: half the outputs from a Conv, the other half from a cheap 5x5 depth-wise Conv."""

    def __init__(self, c1, c2, k=1, s=1, g=1, act=True):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, None, g, act)
        self.cv2 = Conv(c_, c_, 5, 1, None, c_, act)

    def forward(self, x):
        y = self.cv1(x)
        return torch.cat([y, self.cv2(y)], 1)


class GhostBottleneck(nn.Module):
    """Ghost bottleneck: GhostConv -> (depth-wise stride conv) -> GhostConv, plus a shortcut path."""

    def __init__(self, c1, c2, k=3, s=1):
        super().__init__()
        c_ = c2 // 2
        self.conv = nn.Sequential(GhostConv(c1, c_, 1, 1),
                                  DWConv(c_, c_, k, s, act=False) if s == 2 else nn.Identity(),
                                  GhostConv(c_, c2, 1, 1, act=False))
        if s == 2:
            self.shortcut = nn.Sequential(DWConv(c1, c1, k, s, act=False), Conv(c1, c2, 1, 1, act=False))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        return self.conv(x) + self.shortcut(x)


class C3Ghost(C3):
    """C3 whose bottlenecks are GhostBottlenecks."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(GhostBottleneck(c_, c_) for _ in range(n)))


class C3SPP(C3):
    """C3 whose inner block is an SPP layer."""

    def __init__(self, c1, c2, k=(5, 9, 13), n=1, shortcut=True, g=1, e=0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = SPP(c_, c_, k)


class TransformerLayer(nn.Module):
    """Transformer encoder layer without LayerNorm (as in YOLOv5's C3TR): self-attention + 2 linears."""

    def __init__(self, c, num_heads):
        super().__init__()
        self.q = nn.Linear(c, c, bias=False)
        self.k = nn.Linear(c, c, bias=False)
        self.v = nn.Linear(c, c, bias=False)
        self.ma = nn.MultiheadAttention(embed_dim=c, num_heads=num_heads)
        self.fc1 = nn.Linear(c, c, bias=False)
        self.fc2 = nn.Linear(c, c, bias=False)

    def forward(self, x):
        x = self.ma(self.q(x), self.k(x), self.v(x))[0] + x
        return self.fc2(self.fc1(x)) + x


class TransformerBlock(nn.Module):
    """Optional channel-matching Conv, learned position term, then `num_layers` TransformerLayers."""

    def __init__(self, c1, c2, num_heads, num_layers):
        super().__init__()
        self.conv = Conv(c1, c2) if c1 != c2 else None
        self.linear = nn.Linear(c2, c2)
        self.tr = nn.Sequential(*(TransformerLayer(c2, num_heads) for _ in range(num_layers)))
        self.c2 = c2

    def forward(self, x):
        if self.conv is not None:
            x = self.conv(x)
        b, _, h, w = x.shape
        tokens = x.flatten(2).permute(2, 0, 1)  # (h*w, b, c): sequence-first for MultiheadAttention
        out = self.tr(tokens + self.linear(tokens))
        return out.permute(1, 2, 0).reshape(b, self.c2, h, w)


class C3TR(C3):
    """C3 whose inner block is a TransformerBlock with 4 heads and n layers."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = TransformerBlock(c_, c_, 4, n)


class Contract(nn.Module):
    """Space-to-depth by `gain`: (b, c, h, w) -> (b, c*gain^2, h/gain, w/gain)."""

    def __init__(self, gain=2):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        b, c, h, w = x.shape
        s = self.gain
        x = x.view(b, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4).contiguous()
        return x.view(b, c * s * s, h // s, w // s)


class Expand(nn.Module):
    """Depth-to-space by `gain`: (b, c, h, w) -> (b, c/gain^2, h*gain, w*gain)."""

    def __init__(self, gain=2):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        b, c, h, w = x.shape
        s = self.gain
        x = x.view(b, s, s, c // s ** 2, h, w).permute(0, 3, 4, 1, 5, 2).contiguous()
        return x.view(b, c // s ** 2, h * s, w * s)
