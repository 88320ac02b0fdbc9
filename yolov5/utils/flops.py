"""Count the floating-point work of a model's forward pass, the way YOLOv5 reports "GFLOPs".

Upstream YOLOv5 used the third-party `thop` package: forward hooks add up multiply-accumulates (MACs)
per layer for a (1, ch, S, S) input in eval mode, the total is doubled (1 MAC = 2 FLOPs), and the result
is scaled from S to 640 by (640 / S)^2. We do the same with our own hooks, counting the same layer kinds
thop counted (convolutions incl. their bias, normalisation layers as 2 ops per element, Linear
layers); element-wise
activations, pooling and nearest upsampling count as free. The function works on any torch >= 2.1
(forward hooks only; no dependency on `torch.utils.flop_counter`, whose conventions differ).
"""
import torch
import torch.nn as nn


def _conv_macs(m, inputs, output):
    kernel = 1
    for size in m.kernel_size:
        kernel *= size
    per_output = (m.in_channels // m.groups) * kernel + (1 if m.bias is not None else 0)
    return output.numel() * per_output


def _linear_macs(m, inputs, output):
    return output.numel() * m.in_features


def _norm_macs(m, inputs, output):
    return 2 * inputs[0].numel()  # eval-mode normalisation counted as 2 ops per element, as thop 0.0.31 did


def _free(m, inputs, output):
    return 0


# Layer kind -> MAC counter. Checked with isinstance in this order; unknown leaf layers count as free.
MAC_RULES = (
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), _conv_macs),
    ((nn.Linear,), _linear_macs),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
      nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d), _norm_macs),
)


def _rule_for(module):
    for kinds, rule in MAC_RULES:
        if isinstance(module, kinds):
            return rule
    return _free


def count_macs(model, *inputs):
    """Multiply-accumulates of one forward pass of `model(*inputs)` (eval mode, no grad).

    Each module's training flag is restored afterwards and the hooks are removed, so the model is left
    as it was (apart from caches a forward pass may fill, e.g. Detect grids).
    """
    total = [0]
    handles = []

    def hook(module, args, output, rule):
        total[0] += int(rule(module, args, output))

    for module in model.modules():
        if next(module.children(), None) is not None:
            continue  # count leaves only, so nothing is counted twice
        rule = _rule_for(module)
        if rule is not _free:
            handles.append(module.register_forward_hook(lambda m, a, o, rule=rule: hook(m, a, o, rule)))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m, was_training in modes:
            m.training = was_training
    return total[0]


def gflops_at(model, ch=3, probe_size=32, img_size=640):
    """GFLOPs of one (1, ch, img_size, img_size) forward, measured on a smaller square probe.

    `probe_size` should be a multiple of the model's largest stride (upstream uses max(stride, 32)); the
    convolution work scales exactly with the image area then, so the probe result is scaled by
    (img_size / probe_size)^2. `img_size` may be an int or an (h, w) pair.
    """
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None else torch.float32
    probe = torch.zeros((1, ch, probe_size, probe_size), device=device, dtype=dtype)
    macs = count_macs(model, probe)
    h, w = (img_size, img_size) if isinstance(img_size, (int, float)) else img_size
    return 2 * macs / 1e9 * (h / probe_size) * (w / probe_size)
