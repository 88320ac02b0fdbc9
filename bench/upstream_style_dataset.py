"""A reference dataset that performs the per-sample work the way upstream v6.0 does (our own code,
written from the operation list in compat-v6.md 4.5-4.12), for a side-by-side loader benchmark.

Differences from our LoadImagesAndLabels, one per design choice being measured:
* decode with cv2.imread (path string), resize as v6.0;
* mosaic: fill a 2s x 2s grey canvas, copy the four tiles in, then warp the whole canvas with
  random_perspective into s x s (we warp/resize each tile straight into the output);
* HSV: split into channels, three single-channel lookup tables, merge (v6.0 style);
* flips with np.flipud / np.fliplr views, then one transpose+reverse copy to CHW RGB;
* collate: plain torch.stack (the batch is copied again into shared memory when sent).
Random draws follow the same order, so the augmentation statistics are the same.
"""
import random

import cv2
import numpy as np
import torch

from utils.augmentations import random_perspective
from utils.boxes import xywhn2xyxy, xyxy2xywhn
from utils.datasets import LoadImagesAndLabels
from utils.mosaic import tile_placement


def hsv_split_merge(im, hgain, sgain, vgain):
    g = np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=g.dtype)
    lut_h = ((x * g[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * g[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * g[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=im)


class UpstreamStyleDataset(LoadImagesAndLabels):
    def load_image(self, i):
        im = cv2.imread(self.read_paths[i])
        h0, w0 = im.shape[:2]
        r = self.img_size / max(h0, w0)
        if r != 1:
            interp = cv2.INTER_AREA if r < 1 and not self.augment else cv2.INTER_LINEAR
            im = cv2.resize(im, (int(w0 * r), int(h0 * r)), interpolation=interp)
        return im, (h0, w0), im.shape[:2]

    def canvas_mosaic(self, index):
        s, hyp = self.img_size, self.hyp
        yc, xc = (int(random.uniform(-b, 2 * s + b)) for b in self.mosaic_border)
        indices = [index] + random.choices(self.indices, k=3)
        random.shuffle(indices)
        canvas = np.full((2 * s, 2 * s, 3), 114, np.uint8)
        labels4 = []
        for q, i in enumerate(indices):
            img, _, (h, w) = self.load_image(i)
            (x1, y1, x2, y2), (padw, padh) = tile_placement(q, xc, yc, w, h, s)
            canvas[y1:y2, x1:x2] = img[y1 - padh:y2 - padh, x1 - padw:x2 - padw]
            lb = self.labels[i].copy()
            if lb.size:
                lb[:, 1:] = xywhn2xyxy(lb[:, 1:], w, h, padw, padh)
            labels4.append(lb)
        labels4 = np.concatenate(labels4, 0)
        np.clip(labels4[:, 1:], 0, 2 * s, out=labels4[:, 1:])
        return random_perspective(canvas, labels4, degrees=hyp["degrees"], translate=hyp["translate"],
                                  scale=hyp["scale"], shear=hyp["shear"], perspective=hyp["perspective"],
                                  border=self.mosaic_border)

    def __getitem__(self, index):
        index = self.indices[index]
        hyp = self.hyp
        random.random()  # the mosaic draw (mosaic = 1.0 in the benchmark)
        img, labels = self.canvas_mosaic(index)
        random.random()  # the mixup draw (mixup = 0.0)
        nl = len(labels)
        if nl:
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0], clip=True, eps=1e-3)
        hsv_split_merge(img, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"])
        if random.random() < hyp["flipud"]:
            img = np.flipud(img)
            if nl:
                labels[:, 2] = 1 - labels[:, 2]
        if random.random() < hyp["fliplr"]:
            img = np.fliplr(img)
            if nl:
                labels[:, 1] = 1 - labels[:, 1]
        labels_out = torch.zeros((nl, 6))
        if nl:
            labels_out[:, 1:] = torch.from_numpy(labels)
        img = np.ascontiguousarray(img.transpose((2, 0, 1))[::-1])
        return torch.from_numpy(img), labels_out, self.img_files[index], None

    @staticmethod
    def collate_fn(batch):
        im, label, path, shapes = zip(*batch)
        for i, lb in enumerate(label):
            lb[:, 0] = i
        return torch.stack(im, 0), torch.cat(label, 0), path, shapes
