"""Feature-map pictures for `detect.py --visualize`: one small PNG per network stage.

Each picture tiles the first channels of the stage's output for the first image of the batch, each
channel min-max scaled on its own and coloured with a perceptual colour map. File names follow
upstream: `stage{i}_{ModuleType}_features.png`. Drawn with OpenCV (no matplotlib), so it is fast
enough to run for every layer of every image.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.data.image_files import write_image

TILE = 96  # pixels per channel tile (long side)
COLUMNS = 8


def feature_visualization(x, module_type, stage, n=32, save_dir=Path("runs/detect/exp")):
    """Save the first `n` channels of feature map `x` (B, C, H, W) of layer `stage`; returns the path.

    Skipped (returns None) for the Detect head, non-tensor outputs and 1x1 maps, as upstream.
    """
    if "Detect" in module_type or not isinstance(x, torch.Tensor) or x.dim() != 4:
        return None
    _, channels, height, width = x.shape
    if height <= 1 or width <= 1:
        return None
    maps = x[0, : min(n, channels)].detach().float().cpu().numpy()
    scale = TILE / max(height, width)
    th, tw = max(1, round(height * scale)), max(1, round(width * scale))
    rows = math.ceil(len(maps) / COLUMNS)
    sheet = np.full((rows * (th + 2), COLUMNS * (tw + 2), 3), 255, np.uint8)
    for k, fm in enumerate(maps):
        lo, hi = float(fm.min()), float(fm.max())
        grey = ((fm - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(fm)).astype(np.uint8)
        tile = cv2.applyColorMap(cv2.resize(grey, (tw, th), interpolation=cv2.INTER_NEAREST), cv2.COLORMAP_VIRIDIS)
        r, c = divmod(k, COLUMNS)
        sheet[r * (th + 2) + 1:r * (th + 2) + 1 + th, c * (tw + 2) + 1:c * (tw + 2) + 1 + tw] = tile
    f = Path(save_dir) / f"stage{stage}_{module_type.split('.')[-1]}_features.png"
    f.parent.mkdir(parents=True, exist_ok=True)
    write_image(f, sheet)
    return f


class FeatureMapRecorder:
    """Forward hooks that save every stage's output of a YOLOv5 Model while active.

    Works on the layer list (`model.model`, each layer carrying `.i` and `.type` as set by the
    yaml parser); for an Ensemble the first member is recorded.
    """

    def __init__(self, model):
        net = model[0] if isinstance(model, torch.nn.ModuleList) else model
        self.layers = [m for m in getattr(net, "model", []) if hasattr(m, "i") and hasattr(m, "type")]
        self.save_dir = None
        self.saved = []
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module, inputs, output):
        if self.save_dir is not None:
            f = feature_visualization(output, module.type, module.i, save_dir=self.save_dir)
            if f is not None:
                self.saved.append(f)

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []
