"""Training/validation dataset (v6.0 behaviour) and its batch collation.

LoadImagesAndLabels turns a split (folders, .txt lists or globs) into samples
(image uint8 3xHxW RGB tensor, labels (n, 6) [0, cls, x, y, w, h] normalised, path, shapes).
Verification and the label cache live in utils/data/label_cache.py, image caching in
utils/data/image_cache.py, the mosaic in utils/data/mosaic.py, loaders in utils/data/loaders.py.
The upstream import path `utils.datasets` re-exports this module (see utils/datasets.py).
"""
from __future__ import annotations

import random

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from utils.data.augment_pack import device_sample, tile_count
from utils.data.augmentations import Albumentations, apply_hsv
from utils.errors import UserError
from utils.data.image_cache import (check_ram, fill_disk_cache, fill_ram_cache, load_original, ram_bytes_needed,
                               resize_long_side)
from utils.data.image_files import img2label_paths, list_files, printable
from utils.data.label_cache import scan_labels
from utils.data.sample_plan import flip_labels, normalised_labels, plan_finish, plan_geometry, render_geometry
from utils.upstream_call import upstream_positions


AUGMENT_HYP_KEYS = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
                    "flipud", "fliplr", "mosaic", "mixup")  # copy_paste is optional (0 if absent)


def rect_batch_shapes(shapes_wh, batch_size: int, img_size: int, stride: int, pad: float):
    """v6.0 rectangular batches for images ALREADY sorted by aspect ratio h/w.

    Returns (batch index per image, (nb, 2) batch shapes (h, w) in pixels, multiples of stride).
    """
    n = len(shapes_wh)
    bi = np.arange(n) // batch_size
    nb = int(bi[-1]) + 1
    ar = shapes_wh[:, 1] / shapes_wh[:, 0]
    mult = np.ones((nb, 2))
    for b in range(nb):
        ari = ar[bi == b]
        lo, hi = ari.min(), ari.max()
        if hi < 1:
            mult[b] = hi, 1
        elif lo > 1:
            mult[b] = 1, 1 / lo
    return bi, np.ceil(mult * img_size / stride + pad).astype(int) * stride


def find_label_line(label_file: str, nc: int):
    """(line number, class id) of the first label row whose class is >= nc, or None."""
    with open(label_file, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if parts and float(parts[0]) >= nc:
                return lineno, parts[0]
    return None


class LoadImagesAndLabels(Dataset):
    """Images + YOLO labels of one split, with v6.0 augmentation, rect batches and caching."""

    @upstream_positions("self", "path", "img_size", "batch_size", "augment", "hyp", "rect", "image_weights",
                        "cache_images", "single_cls", "stride", "pad", "prefix")
    def __init__(self, path, img_size=640, batch_size=16, *, augment=False, hyp=None, rect=False,
                 image_weights=False, cache_images=False, single_cls=False, stride=32, pad=0.0,
                 prefix="", nc=None, augment_device=False):
        self.img_size, self.augment, self.hyp = img_size, augment, hyp
        self.image_weights = image_weights
        self.rect = False if image_weights else rect
        self.mosaic = self.augment and not self.rect
        self.mosaic_border = [-img_size // 2, -img_size // 2]
        self.stride, self.path = stride, path
        self._check_options(cache_images, augment_device)
        self.albumentations = Albumentations() if augment and not self.augment_device else None
        self._load_labels(prefix, nc, single_cls)
        n = self.n = len(self.img_files)
        self.indices = range(n)
        self.batch = np.arange(n) // batch_size
        if self.rect:
            self._sort_by_aspect_ratio(batch_size, pad)
        self.read_paths = [self.repaired.get(f, f) for f in self.img_files]
        self._cache_images(cache_images, prefix)

    def _check_options(self, cache_images, augment_device):
        """UserError for augmentation without its hyperparameters or an unknown --cache value."""
        if self.augment:
            missing = [k for k in AUGMENT_HYP_KEYS if k not in (self.hyp or {})]
            if missing:
                raise UserError(f"hyperparameters are missing augmentation keys {', '.join(missing)}; "
                                f"add them to the --hyp yaml (see data/hyps/hyp.scratch.yaml)")
        if cache_images not in (None, False, True, "ram", "disk"):
            raise UserError(f"--cache {cache_images!r}: use 'ram' or 'disk' (or leave it out)")
        self.augment_device = bool(augment_device)
        if self.augment_device:
            check_device_augment(self.augment, self.rect, self.hyp)

    def _load_labels(self, prefix, nc, single_cls):
        """Verified images and their labels (utils/data/label_cache.py); UserError when none are usable."""
        path = self.path
        files = list_files(path)
        scan = scan_labels(path, files, img2label_paths(files), prefix=prefix)
        self.scan = scan
        if not scan.im_files:
            raise UserError(f"{prefix}no usable images in {printable(path)}: {scan.total} checked, "
                            f"{scan.corrupt} corrupt (see the warnings above); fix or remove them")
        if self.augment and scan.found == 0:
            raise UserError(f"{prefix}no label files found for {printable(path)} (looked in "
                            f"{printable(scan.cache_file or 'labels/')}); cannot train without labels")
        self.img_files = list(scan.im_files)
        self.label_files = img2label_paths(self.img_files)
        self.labels = [x.copy() for x in scan.labels]
        self.segments = [list(x) for x in scan.segments]
        self.shapes = np.asarray(scan.shapes, dtype=np.float64).reshape(-1, 2)  # (w, h)
        self.repaired = dict(scan.repaired)
        if nc is not None and not single_cls:
            self.check_class_ids(nc)
        if single_cls:
            for x in self.labels:
                x[:, 0] = 0

    def _sort_by_aspect_ratio(self, batch_size, pad):
        """--rect: images sorted by h/w so each batch gets one padded shape close to its images'."""
        order = (self.shapes[:, 1] / self.shapes[:, 0]).argsort()
        for name in ("img_files", "label_files", "labels", "segments"):
            seq = getattr(self, name)
            setattr(self, name, [seq[i] for i in order])
        self.shapes = self.shapes[order]
        self.batch, self.batch_shapes = rect_batch_shapes(self.shapes, batch_size, self.img_size, self.stride, pad)

    def _cache_images(self, cache_images, prefix):
        """--cache ram / disk: resized images kept in memory, or decoded ones written as .npy files."""
        n = self.n
        self.imgs, self.img_hw0, self.img_hw = [None] * n, [None] * n, [None] * n
        self.npy_files = [None] * n
        if cache_images == "disk":
            self.npy_files = fill_disk_cache(self.read_paths, self.shapes, prefix)
        elif cache_images:  # 'ram' or True
            nbytes = ram_bytes_needed(self.shapes, self.img_size)
            check_ram(nbytes, prefix)
            for i, (im, hw0, hw) in enumerate(fill_ram_cache(self.load_image, n, nbytes, prefix)):
                self.imgs[i], self.img_hw0[i], self.img_hw[i] = im, hw0, hw

    def check_class_ids(self, nc: int):
        """UserError naming the file and line of the first class id >= nc (before any training)."""
        for lb, f in zip(self.labels, self.label_files):
            if len(lb) and lb[:, 0].max() >= nc:
                hit = find_label_line(f, nc)
                where = f"{printable(f)}:{hit[0]}" if hit else printable(f)
                cid = hit[1] if hit else int(lb[:, 0].max())
                raise UserError(f"{where}: class id {cid} is out of range: the data yaml has nc={nc} "
                                f"(valid ids 0..{nc - 1}); fix the label or 'nc'/'names' in the yaml")

    def __len__(self):
        return len(self.img_files)

    def load_image(self, i):
        """-> (BGR image resized so its long side is img_size, (h0, w0), (h, w))."""
        if self.imgs[i] is not None:
            return self.imgs[i], self.img_hw0[i], self.img_hw[i]
        im = load_original(self.read_paths[i], self.npy_files[i])
        h0, w0 = im.shape[:2]
        im = resize_long_side(im, self.img_size, self.augment)
        return im, (h0, w0), im.shape[:2]

    def __getitem__(self, index):
        index = self.indices[index]  # image-weights sampling remaps the index
        geo = plan_geometry(self, index)
        if self.augment_device:  # the trainer makes the pixels on its device
            labels = normalised_labels(geo.labels, geo.out_hw)
            finish = plan_finish(self.hyp)
            labels = flip_labels(labels, finish)
            return (device_sample(geo, finish, tile_count(self.hyp)), labels_tensor(labels),
                    self.img_files[index], geo.shapes)
        img = render_geometry(geo)
        labels = normalised_labels(geo.labels, img.shape[:2])
        if self.augment:
            img, labels = self.albumentations(img, labels)
            finish = plan_finish(self.hyp)
            img = apply_finish(img, finish)
            labels = flip_labels(labels, finish)
        return torch.from_numpy(to_chw_rgb(img)), labels_tensor(labels), self.img_files[index], geo.shapes

    @staticmethod
    def collate_fn(batch):
        """-> (uint8 B x 3 x H x W, (N, 6) [image index, cls, x, y, w, h], paths, shapes)."""
        im, label, path, shapes = zip(*batch)
        for i, lb in enumerate(label):
            lb[:, 0] = i
        return stack_shared(im), torch.cat(label, 0), path, shapes

    @staticmethod
    def collate_fn4(batch):
        """--quad: every 4 samples become one at 2x resolution (upsampled first image or a 2x2 tile)."""
        im, label, path, shapes = zip(*batch)
        n = len(shapes) // 4
        im4, label4 = [], []
        offset = torch.tensor([[0.0, 0, 0, 1, 0, 0]]), torch.tensor([[0.0, 0, 1, 0, 0, 0]])  # y+1, x+1
        offset_xy = torch.tensor([[0.0, 0, 1, 1, 0, 0]])
        scale = torch.tensor([[1.0, 1, 0.5, 0.5, 0.5, 0.5]])
        for i in range(n):
            j = i * 4
            if random.random() < 0.5:
                big = torch.nn.functional.interpolate(im[j].unsqueeze(0).float(), scale_factor=2.0,
                                                      mode="bilinear", align_corners=False)[0].type(im[j].dtype)
                lb = label[j]
            else:  # 2x2 tile: j above j+1 on the left, j+2 above j+3 on the right
                left = torch.cat((im[j], im[j + 1]), 1)
                right = torch.cat((im[j + 2], im[j + 3]), 1)
                big = torch.cat((left, right), 2)
                lb = torch.cat((label[j], label[j + 1] + offset[0], label[j + 2] + offset[1],
                                label[j + 3] + offset_xy), 0) * scale
            im4.append(big)
            label4.append(lb)
        for i, lb in enumerate(label4):
            lb[:, 0] = i
        return torch.stack(im4, 0), torch.cat(label4, 0), path[:n], shapes[:n]


def labels_tensor(labels):
    """(n, 5) [cls, x, y, w, h] -> (n, 6) float32 tensor with a 0 image-index column in front."""
    labels_out = torch.zeros((len(labels), 6))
    if len(labels):
        labels_out[:, 1:] = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    return labels_out


def check_device_augment(augment, rect, hyp):
    """UserError for settings that device augmentation cannot reproduce."""
    if not augment:
        raise UserError("--augment-device device only applies to augmented training data")
    if rect:
        raise UserError("--augment-device device does not support --rect (rectangular batches have no "
                        "mosaic); use --augment-device cpu with --rect")
    if hyp.get("copy_paste", 0.0):
        raise UserError(f"--augment-device device does not support copy_paste ({hyp['copy_paste']} in the "
                        "hyperparameters): set copy_paste: 0.0 or use --augment-device cpu")


def apply_finish(img, finish):
    """HSV gains then flips of a drawn FinishPlan on a BGR uint8 image (CPU)."""
    apply_hsv(img, finish.gains)
    if finish.flipud:
        img = cv2.flip(img, 0)
    if finish.fliplr:
        img = cv2.flip(img, 1)
    return img


def to_chw_rgb(img):
    """HWC BGR uint8 -> new contiguous CHW RGB array (cv2.split into the output planes is ~4x faster
    than numpy's strided transpose copy)."""
    if img.ndim != 3 or img.shape[2] != 3 or not img.flags.c_contiguous:
        return np.ascontiguousarray(img.transpose(2, 0, 1)[::-1])
    out = np.empty((3, *img.shape[:2]), dtype=img.dtype)
    planes = cv2.split(img, [out[2], out[1], out[0]])
    if not np.shares_memory(planes[0], out):  # binding returned copies: place them
        out[2], out[1], out[0] = planes
    return out


def stack_shared(tensors):
    """torch.stack that, inside a loader worker, writes straight into shared memory.

    The batch has to end up in shared memory to reach the main process; allocating it there
    saves the copy torch would otherwise make when sending it (same trick as default_collate).
    """
    out = None
    if torch.utils.data.get_worker_info() is not None:
        elem = tensors[0]
        numel = sum(t.numel() for t in tensors)
        try:
            storage = elem._typed_storage()._new_shared(numel, device=elem.device)
            out = elem.new(storage).resize_(len(tensors), *elem.shape)
        except (AttributeError, RuntimeError, TypeError):  # private API moved: plain stack still works
            out = None
    return torch.stack(tensors, 0, out=out)

