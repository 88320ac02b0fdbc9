"""Training-device side of augmentation: make a batch's pixels from its packed plans.

`augment_batch(batch, device)` turns an AugmentBatch (utils/data/augment_pack.py) into the uint8
B x 3 x H x W RGB images the CPU path would have made, as batched tensor ops on any torch device
(CPU, CUDA, MLU): every tile is one batched inverse warp (output pixel -> crop coordinates
through its 3x3 matrix, bilinear, later tiles over earlier ones, grey 114 where no tile lands),
then the mixup blend, OpenCV's uint8 HSV round trip with the drawn lookup tables, and the flips.

Geometry is exactly the CPU path's (same matrices); pixels differ only by interpolation: source
positions are rounded to 1/32 px as OpenCV's warps do, tiles are clamped at their crop edges,
and the HSV conversions are float formulas of OpenCV's integer ones. Only elementwise ops, gathers
and `where` are used, so the result does not depend on the device. Samples are processed
`chunk` at a time, which bounds the working memory to a few float images per sample.
"""
from __future__ import annotations

import torch

from utils.data.augment_pack import AugmentBatch

PAD = 114.0
# OpenCV's HSV -> BGR: per hue sector, which of (v, v(1-s), v(1-sf), v(1-s(1-f))) is b, g, r
_SECTOR = ((1, 3, 0), (1, 0, 2), (3, 0, 1), (0, 2, 1), (0, 1, 3), (2, 1, 0))


def augment_batch(batch: AugmentBatch, device, chunk: int = 8, non_blocking: bool = False):
    """-> uint8 (B, 3, H, W) RGB images on `device`."""
    device = torch.device(device)
    host_active = batch.active  # loop decisions from the host copy: no device sync
    move = (lambda t: t.to(device, non_blocking=non_blocking))
    pixels, offset, size, inv, active = (move(t) for t in batch[:5])
    mix, lut, hsv, flip = (move(t) for t in batch[5:9])
    n, slots = host_active.shape
    h, w = batch.out_h, batch.out_w
    v, u = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                          torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    parts = []
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        sel = slice(a, b)
        groups = [range(0, min(4, slots))] + ([range(4, slots)] if slots > 4 else [])
        outs = [_render(pixels, g, u, v, offset=offset[sel], size=size[sel], inv=inv[sel], active=active[sel],
                        host_active=host_active[sel]) for g in groups]
        img = outs[0]
        if len(outs) > 1:
            r = mix[sel].view(-1, 1, 1, 1)
            mixed = torch.floor(outs[0] * r + outs[1] * (1 - r))
            img = torch.where(r >= 0, mixed, outs[0])
        if bool(batch.hsv[sel].any()):  # host copy: no device sync
            img = _hsv(img, lut[sel], hsv[sel])
        fl = flip[sel].view(-1, 2, 1, 1, 1)
        img = torch.where(fl[:, 0], img.flip(1), img)
        img = torch.where(fl[:, 1], img.flip(2), img)
        parts.append(img.to(torch.uint8)[..., [2, 1, 0]].permute(0, 3, 1, 2))
    return torch.cat(parts, 0).contiguous()


def _render(pixels, tiles, u, v, *, offset, size, inv, active, host_active):
    """Tiles `tiles` of each sample warped into (b, H, W, 3) float images (integer values)."""
    b = offset.shape[0]
    out = torch.full((b, *u.shape, 3), PAD, device=u.device)
    for k in tiles:
        if not bool(host_active[:, k].any()):
            continue
        m = inv[:, k].view(b, 3, 3, 1, 1)
        den = m[:, 2, 0] * u + m[:, 2, 1] * v + m[:, 2, 2]
        x = (m[:, 0, 0] * u + m[:, 0, 1] * v + m[:, 0, 2]) / den
        y = (m[:, 1, 0] * u + m[:, 1, 1] * v + m[:, 1, 2]) / den
        cw = size[:, k, 0].view(b, 1, 1).float()
        ch = size[:, k, 1].view(b, 1, 1).float()
        inside = active[:, k].view(b, 1, 1) & (x >= -0.5) & (x < cw - 0.5) & (y >= -0.5) & (y < ch - 0.5)
        # Clamp far-off (or non-finite) positions first so the integer parts stay small.
        xq = torch.round(torch.nan_to_num(x, 0.0).clamp(min=-2.0).minimum(cw + 1) * 32)
        yq = torch.round(torch.nan_to_num(y, 0.0).clamp(min=-2.0).minimum(ch + 1) * 32)
        x0, y0 = torch.floor(xq / 32), torch.floor(yq / 32)
        fx, fy = (xq - x0 * 32) / 32, (yq - y0 * 32) / 32
        cw1, ch1 = (cw - 1).clamp(min=0), (ch - 1).clamp(min=0)
        xa, xb = x0.clamp(min=0).minimum(cw1), (x0 + 1).clamp(min=0).minimum(cw1)
        ya, yb = y0.clamp(min=0).minimum(ch1), (y0 + 1).clamp(min=0).minimum(ch1)
        base = offset[:, k].view(b, 1, 1)
        wi = size[:, k, 0].view(b, 1, 1)

        def at(yy, xx):
            return pixels[base + yy.long() * wi + xx.long()].float()

        fx, fy = fx.unsqueeze(-1), fy.unsqueeze(-1)
        val = (at(ya, xa) * (1 - fx) + at(ya, xb) * fx) * (1 - fy) + (at(yb, xa) * (1 - fx) + at(yb, xb) * fx) * fy
        out = torch.where(inside.unsqueeze(-1), torch.round(val), out)
    return out


def _hsv(img, lut, on):
    """OpenCV's BGR -> HSV (uint8, hue 0..179), the per-sample lookup tables, and back, where `on`."""
    b, g, r = img.unbind(-1)
    v = torch.maximum(torch.maximum(b, g), r)
    diff = v - torch.minimum(torch.minimum(b, g), r)
    s = torch.where(v > 0, torch.floor(diff * 255 / v.clamp(min=1) + 0.5), torch.zeros_like(v))
    hue = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    hue = torch.floor(hue * 30 / diff.clamp(min=1) + 0.5)
    hue = torch.where(diff == 0, torch.zeros_like(hue), hue)
    hue = torch.where(hue < 0, hue + 180, hue)
    n = img.shape[0]
    tables = lut.long()

    def look(x, c):
        idx = x.long().clamp(0, 255).view(n, -1)
        return torch.gather(tables[:, c], 1, idx).view_as(x).float()

    hue, s, v = look(hue, 0), look(s, 1) / 255, look(v, 2) / 255
    hue = hue * (6.0 / 180)
    sector = torch.floor(hue)
    f = hue - sector
    sector = torch.remainder(sector, 6).long()
    tab = torch.stack((v, v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))), -1)
    pick = torch.tensor(_SECTOR, device=img.device)[sector]
    bgr = torch.round(torch.gather(tab, -1, pick) * 255).clamp(0, 255)
    return torch.where(on.view(-1, 1, 1, 1), bgr, img)
