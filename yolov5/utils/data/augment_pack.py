"""Loader side of augmentation on the training device: pack drawn plans into a batch.

With device augmentation the loader workers draw each sample's plan (utils/data/sample_plan.py: the
same draws, in the same order, and the same host-computed labels as the CPU path) but make no
output pixels. Each sample becomes up to `slots` tiles: the part of a resized source image (uint8
BGR, straight from `load_image` or the RAM cache) that the output can show, and the 3x3 matrix
mapping output pixels back into that crop. `collate_device` copies the crops of a whole batch
once into one flat uint8 buffer (in shared memory inside a worker), so a batch holds only the
source pixels it needs and no 2s x 2s canvas. utils/data/device_augment.py makes the pixels.
"""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import numpy as np
import torch

from utils.data.augmentations import hsv_lut
from utils.data.augmentations import translation_matrix as shift
from utils.data.sample_plan import FinishPlan, GeometryPlan

# pixels (N, 3) uint8 BGR; offset (B, T) int64 first pixel row of each crop; size (B, T, 2) int64
# crop (w, h); inv (B, T, 3, 3) float32 output -> crop pixel coordinates; active (B, T) bool;
# mix (B,) float32 mixup ratio of tiles T/2.. (< 0: no mixup); lut (B, 3, 256) uint8 HSV tables;
# hsv (B,) bool; flip (B, 2) bool (up-down, left-right); out_h, out_w: output size (ints).
AugmentBatch = namedtuple("AugmentBatch", "pixels offset size inv active mix lut hsv flip out_h out_w")


@dataclass
class DeviceSample:
    """One sample for device augmentation: tile crops (None = unused slot) and their parameters."""
    crops: list
    inv: np.ndarray
    out_hw: tuple
    mix_r: float
    lut: np.ndarray | None
    flips: tuple


def tile_count(hyp) -> int:
    """Slots per sample: 4 mosaic tiles, 8 when mixup can blend a second mosaic in."""
    return 8 if hyp.get("mixup", 0.0) > 0 else 4


def _mosaic_tiles(plan):
    """(crop, output -> crop matrix) of each visible tile of one MosaicPlan, in drawing order."""
    tiles = []
    for t in plan.tiles:
        if not t.visible:
            tiles.append(None)
            continue
        crop = t.crop()
        x1, y1 = t.rect[:2]
        if t.paste is not None:  # fast path: only the planned part of the crop is ever sampled
            (c0, c1, *_), (r0, r1, *_) = t.paste
            crop, x1, y1 = crop[r0:r1, c0:c1], x1 + c0, y1 + r0
        tiles.append((crop, t.M @ shift(x1, y1)))
    return tiles


def device_sample(geo: GeometryPlan, finish: FinishPlan, slots: int) -> DeviceSample:
    """Turn a drawn sample into the tiles and parameters the device needs (no pixel work)."""
    if geo.mosaics:
        if geo.mosaics[0].canvas is not None:
            raise ValueError("copy-paste mosaics need the CPU path")
        tiles = [tile for m in geo.mosaics for tile in _mosaic_tiles(m)]
    else:
        tiles = [(geo.image, np.eye(3) if geo.M is None else geo.M)]
    if len(tiles) > slots:
        raise ValueError(f"{len(tiles)} tiles for {slots} slots")
    tiles += [None] * (slots - len(tiles))
    inv = np.tile(np.eye(3), (slots, 1, 1))
    crops = []
    for k, tile in enumerate(tiles):
        crops.append(None if tile is None else tile[0])
        if tile is not None:
            inv[k] = np.linalg.inv(tile[1])
    lut = None if finish.gains is None else hsv_lut(finish.gains).T.copy()
    mix_r = -1.0 if geo.mix_r is None else float(geo.mix_r)
    return DeviceSample(crops, inv, geo.out_hw, mix_r, lut, (finish.flipud, finish.fliplr))


def _shared_empty(shape, dtype):
    """Uninitialised tensor, in shared memory when called inside a loader worker."""
    if torch.utils.data.get_worker_info() is not None:
        try:
            numel = int(np.prod(shape))
            storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel, device="cpu")
            return torch.empty(0, dtype=dtype).new(storage).view(*shape)
        except (AttributeError, RuntimeError, TypeError):  # private API moved: a plain tensor still works
            pass
    return torch.empty(shape, dtype=dtype)


def collate_device(batch):
    """-> (AugmentBatch, targets (N, 6) [image index, cls, x, y, w, h], paths, shapes)."""
    samples, labels, paths, shapes = zip(*batch)
    n, slots = len(samples), len(samples[0].crops)
    out_h, out_w = samples[0].out_hw
    if any(s.out_hw != (out_h, out_w) for s in samples):
        raise ValueError("device augmentation needs one output size per batch")
    offset = np.zeros((n, slots), np.int64)
    size = np.zeros((n, slots, 2), np.int64)
    active = np.zeros((n, slots), bool)
    rows = 0
    for i, s in enumerate(samples):
        for k, crop in enumerate(s.crops):
            if crop is not None and crop.size:
                offset[i, k], size[i, k], active[i, k] = rows, (crop.shape[1], crop.shape[0]), True
                rows += crop.shape[0] * crop.shape[1]
    pixels = _shared_empty((max(rows, 1), 3), torch.uint8)
    flat = pixels.numpy()
    for i, s in enumerate(samples):
        for k, crop in enumerate(s.crops):
            if active[i, k]:
                w, h = size[i, k]
                flat[offset[i, k]:offset[i, k] + w * h].reshape(h, w, 3)[...] = crop
    lut = np.zeros((n, 3, 256), np.uint8)
    for i, s in enumerate(samples):
        if s.lut is not None:
            lut[i] = s.lut
    for i, lb in enumerate(labels):
        lb[:, 0] = i
    augment = AugmentBatch(
        pixels, torch.from_numpy(offset), torch.from_numpy(size),
        torch.from_numpy(np.stack([s.inv for s in samples]).astype(np.float32)), torch.from_numpy(active),
        torch.tensor([s.mix_r for s in samples], dtype=torch.float32), torch.from_numpy(lut),
        torch.tensor([s.lut is not None for s in samples]), torch.tensor([s.flips for s in samples]),
        int(out_h), int(out_w))
    return augment, torch.cat(labels, 0), paths, shapes
