"""LoadImagesAndLabels: samples, rect batches, collate, mosaic labels vs pixels, --cache ram/disk."""
import os
import random
from collections import namedtuple
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.data import image_cache
from utils.data.detection_dataset import LoadImagesAndLabels, rect_batch_shapes
from utils.errors import UserError
from utils.data.mosaic import load_mosaic


pytestmark = pytest.mark.usefixtures("user_cache")  # caches stay in tmp_path


@pytest.fixture
def coco_subset(tmp_path, coco128_copy):
    """8 real coco128 images + labels copied into tmp_path (writable, so caches land beside them)."""
    return coco128_copy(8, tmp_path / "c8" / "images" / "train")


def test_rect_batch_shapes_rule():
    w640x480 = np.array([[640, 480]] * 4, float)
    _, shapes = rect_batch_shapes(w640x480, 4, 640, 32, 0.5)
    assert shapes.tolist() == [[512, 672]]  # v6.0: half a stride of extra border
    _, shapes = rect_batch_shapes(np.array([[640, 640]] * 2, float), 2, 640, 32, 0.5)
    assert shapes.tolist() == [[672, 672]]
    tall_then_mixed = np.array([[480, 640], [300, 600], [640, 480], [600, 300]], float)
    bi, shapes = rect_batch_shapes(tall_then_mixed, 2, 640, 32, 0.0)
    assert bi.tolist() == [0, 0, 1, 1]
    assert shapes.tolist() == [[640, 480], [480, 640]]  # [1, 1/min_ar] (min 4/3) and [max_ar, 1] (max 3/4)


def test_rect_dataset_on_real_images(real_images_dir):
    ds = LoadImagesAndLabels(str(real_images_dir / "images" / "train2017"), img_size=320, batch_size=4,
                             rect=True, stride=32, pad=0.5)
    ar = ds.shapes[:, 1] / ds.shapes[:, 0]
    assert (np.diff(ar) >= 0).all() and len(ds.batch_shapes) == 4
    for i in (0, 6, 15):
        im, labels, path, shapes = ds[i]
        assert tuple(im.shape[1:]) == tuple(ds.batch_shapes[ds.batch[i]])
        (h0, w0), ((rh, rw), (padw, padh)) = shapes
        assert (w0, h0) == tuple(ds.shapes[i].astype(int))
        assert Path(path).name == Path(ds.img_files[i]).name and labels.shape[1] == 6


def test_val_sample_letterbox_and_labels(real_images_dir):
    ds = LoadImagesAndLabels(str(real_images_dir / "images" / "train2017"), img_size=320, batch_size=4)
    im, labels, path, shapes = ds[0]  # 000000000009.jpg: 640x480, 8 boxes
    assert im.dtype == torch.uint8 and tuple(im.shape) == (3, 320, 320)
    assert shapes == ((480, 640), ((0.5, 0.5), (0.0, 40.0)))
    raw = np.loadtxt(real_images_dir / "labels" / "train2017" / "000000000009.txt", ndmin=2)
    # normalised to the padded 320x320 image: x unchanged, y = (40 + y * 240) / 320, h = h * 240 / 320
    assert np.allclose(labels[:, 1].numpy(), raw[:, 0])
    assert np.allclose(labels[:, 3].numpy(), (40 + raw[:, 2] * 240) / 320, atol=1e-5)
    assert np.allclose(labels[:, 5].numpy(), raw[:, 4] * 240 / 320, atol=1e-5)
    # pixels: RGB order, image area resized with INTER_AREA, grey border rows
    bgr = cv2.resize(cv2.imread(ds.img_files[0]), (320, 240), interpolation=cv2.INTER_AREA)
    assert np.array_equal(im[:, 40:280].numpy(), bgr.transpose(2, 0, 1)[::-1])
    assert (im[:, :40] == 114).all() and (im[:, 280:] == 114).all()


def test_collate_shapes_and_dtypes(coco_subset):
    ds = LoadImagesAndLabels(str(coco_subset), img_size=160, batch_size=4)
    batch = [ds[i] for i in range(4)]
    imgs, targets, paths, shapes = LoadImagesAndLabels.collate_fn(batch)
    assert imgs.dtype == torch.uint8 and tuple(imgs.shape) == (4, 3, 160, 160)
    assert targets.dtype == torch.float32 and targets.shape == (sum(len(b[1]) for b in batch), 6)
    counts = torch.bincount(targets[:, 0].long(), minlength=4).tolist()
    assert counts == [len(b[1]) for b in batch] and len(paths) == 4 and len(shapes) == 4
    random.seed(1)  # first group: random() = 0.134 < 0.5 -> upsampled first image
    im4, t4, p4, s4 = LoadImagesAndLabels.collate_fn4(batch)
    assert tuple(im4.shape) == (1, 3, 320, 320) and im4.dtype == torch.uint8 and len(p4) == 1
    assert torch.equal(t4[:, 1:], batch[0][1][:, 1:])
    random.seed(0)  # 0.844 -> 2x2 tile: labels scaled by 0.5 and offset per quadrant
    im4, t4, _, _ = LoadImagesAndLabels.collate_fn4(batch)
    assert torch.equal(im4[0, :, 160:, :160], batch[1][0]) and torch.equal(im4[0, :, :160, 160:], batch[2][0])
    n0, n1 = len(batch[0][1]), len(batch[1][1])
    assert torch.allclose(t4[n0:n0 + n1, 2:], torch.cat((batch[1][1][:, 2:3] * 0.5, batch[1][1][:, 3:4] * 0.5 + 0.5,
                                                         batch[1][1][:, 4:] * 0.5), 1))


def _shapes_dataset(root: Path, n=6, size=(200, 260)):
    """Images with non-overlapping solid rectangles, colour = class; labels exact."""
    rng = np.random.default_rng(0)
    im_dir, lb_dir = root / "images" / "t", root / "labels" / "t"
    im_dir.mkdir(parents=True)
    lb_dir.mkdir(parents=True)
    cls = 0
    for k in range(n):
        h, w = size if k % 2 else size[::-1]
        im = np.full((h, w, 3), 40, np.uint8)
        rows = []
        for gx in range(2):
            for gy in range(2):  # one rectangle per quarter: never overlapping
                x1, y1 = int(rng.integers(gx * w // 2 + 2, gx * w // 2 + w // 4)), int(rng.integers(gy * h // 2 + 2, gy * h // 2 + h // 4))
                x2, y2 = x1 + int(rng.integers(15, w // 4)), y1 + int(rng.integers(15, h // 4))
                im[y1:y2, x1:x2] = PALETTE[cls]
                rows.append(f"{cls} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}")
                cls += 1
        cv2.imwrite(str(im_dir / f"{k}.png"), im)
        (lb_dir / f"{k}.txt").write_text("\n".join(rows) + "\n")
    return im_dir


# 24 BGR colours, pairwise >= 50 apart in some channel and far from the backgrounds (40, 114)
PALETTE = [(b, g, r) for b in (150, 200, 250) for g in (0, 70, 140, 210) for r in (100, 250)]


def _recovered_box(img, color, box, margin=4):
    """Pixel extent (x1, y1, x2, y2) of `color` inside box grown by margin."""
    h, w = img.shape[:2]
    x1, y1 = max(int(box[0]) - margin, 0), max(int(box[1]) - margin, 0)
    x2, y2 = min(int(np.ceil(box[2])) + margin, w), min(int(np.ceil(box[3])) + margin, h)
    patch = img[y1:y2, x1:x2].astype(int)
    mask = (np.abs(patch - np.array(color)).max(-1) <= 12)
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return np.array([x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1])


@pytest.mark.parametrize("geometry", [dict(degrees=0.0, shear=0.0), dict(degrees=10.0, shear=2.0)])
def test_mosaic_labels_match_pixels(tmp_path, hyp, geometry):
    im_dir = _shapes_dataset(tmp_path)
    h = dict(hyp, **geometry)
    ds = LoadImagesAndLabels(str(im_dir), img_size=256, batch_size=4, augment=True, hyp=h)
    random.seed(3)
    np.random.seed(3)
    checked = 0
    tol = 2.0 if geometry["degrees"] == 0 else 3.0
    for index in range(len(ds)):
        img, labels = load_mosaic(ds, index)
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        for cls, *box in labels:
            found = _recovered_box(img, PALETTE[int(cls)], box)
            assert found is not None, (index, cls, box)
            # every kept box shows its object. Without rotation a label clipped at the border is
            # exactly the visible part; with rotation the label is the box of the rotated corners,
            # which the pixels touch only when no corner was cut off by the border (as upstream).
            clipped = min(box) <= 0.5 or max(box) >= 255.5
            if geometry["degrees"] == 0 or not clipped:
                assert np.abs(found - np.array(box)).max() <= tol, (index, cls, box, found)
                checked += 1
    assert checked >= 20


def test_getitem_flips_keep_labels_on_pixels(tmp_path, hyp):
    im_dir = _shapes_dataset(tmp_path, n=4)
    h = dict(hyp, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=1.0, flipud=1.0)
    ds = LoadImagesAndLabels(str(im_dir), img_size=256, batch_size=4, augment=True, hyp=h)
    random.seed(0)
    for i in range(4):
        im, labels, _, shapes = ds[i]
        assert shapes is None and im.shape == (3, 256, 256)
        bgr = im.numpy()[::-1].transpose(1, 2, 0)
        for _, cls, x, y, w, hh in labels.numpy():
            box = np.array([x - w / 2, y - hh / 2, x + w / 2, y + hh / 2]) * 256
            found = _recovered_box(bgr, PALETTE[int(cls)], box)
            assert found is not None and np.abs(found - box).max() <= 2.0


def test_cache_ram_and_disk_roundtrip(coco_subset):
    plain = LoadImagesAndLabels(str(coco_subset), img_size=160, batch_size=4)
    ram = LoadImagesAndLabels(str(coco_subset), img_size=160, batch_size=4, cache_images="ram")
    disk = LoadImagesAndLabels(str(coco_subset), img_size=160, batch_size=4, cache_images="disk")
    npys = sorted(coco_subset.glob("*.npy"))
    assert len(npys) == 8 and all(ram.imgs[i] is not None for i in range(8))
    mtimes = [p.stat().st_mtime_ns for p in npys]
    for i in range(8):
        a, b, c = plain[i], ram[i], disk[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0])
        assert torch.equal(a[1], b[1]) and a[3] == b[3] == c[3]
    assert np.array_equal(np.load(npys[0]), cv2.imread(str(npys[0].with_suffix(".jpg"))))
    LoadImagesAndLabels(str(coco_subset), img_size=160, cache_images="disk")  # reused, not rewritten
    assert [p.stat().st_mtime_ns for p in npys] == mtimes


def test_disk_cache_in_read_only_folder_goes_to_user_cache(coco_subset, tmp_path):
    os.chmod(coco_subset, 0o555)
    try:
        ds = LoadImagesAndLabels(str(coco_subset), img_size=160, cache_images="disk")
        assert not list(coco_subset.glob("*.npy"))
        assert all(p.startswith(str(tmp_path / "user_cache")) and os.path.isfile(p) for p in ds.npy_files)
    finally:
        os.chmod(coco_subset, 0o755)


def test_cache_ram_refused_when_memory_is_short(coco_subset, monkeypatch):
    need = image_cache.ram_bytes_needed(LoadImagesAndLabels(str(coco_subset), img_size=160).shapes, 160)
    cached = LoadImagesAndLabels(str(coco_subset), img_size=160, cache_images="ram")
    assert need == sum(im.nbytes for im in cached.imgs)  # the estimate is exact
    vm = namedtuple("vm", "available total")
    monkeypatch.setattr(image_cache.psutil, "virtual_memory", lambda: vm(int(need * 1.05), 10 ** 12))
    with pytest.raises(UserError, match="--cache .gpu.: use .ram. or .disk."):
        LoadImagesAndLabels(str(coco_subset), img_size=160, cache_images="gpu")
    with pytest.raises(UserError, match="--cache ram needs .* use --cache disk"):
        LoadImagesAndLabels(str(coco_subset), img_size=160, cache_images="ram")
    monkeypatch.setattr(image_cache.psutil, "virtual_memory", lambda: vm(int(need * 1.2), 10 ** 12))
    assert LoadImagesAndLabels(str(coco_subset), img_size=160, cache_images="ram").imgs[7] is not None


def test_augment_needs_complete_hyp(coco_subset, hyp):
    with pytest.raises(UserError, match="missing augmentation keys mosaic, mixup"):
        LoadImagesAndLabels(str(coco_subset), img_size=160, augment=True,
                            hyp={k: v for k, v in hyp.items() if k not in ("mosaic", "mixup")})
    with pytest.raises(UserError, match="missing augmentation keys hsv_h"):
        LoadImagesAndLabels(str(coco_subset), img_size=160, augment=True, hyp=None)


def test_rect_training_and_mixup_keep_labels_on_pixels(tmp_path, hyp):
    im_dir = _shapes_dataset(tmp_path, n=4)
    still = dict(hyp, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0, degrees=5.0)
    rect = LoadImagesAndLabels(str(im_dir), img_size=256, batch_size=2, augment=True, hyp=still, rect=True)
    assert not rect.mosaic
    random.seed(1)
    np.random.seed(1)
    checked = 0
    for i in range(4):  # letterbox to the batch shape, then random_perspective with border 0
        im, labels, _, shapes = rect[i]
        assert tuple(im.shape[1:]) == tuple(rect.batch_shapes[rect.batch[i]]) and shapes is not None
        h, w = im.shape[1:]
        bgr = im.numpy()[::-1].transpose(1, 2, 0)
        for _, cls, x, y, bw, bh in labels.numpy():
            box = np.array([(x - bw / 2) * w, (y - bh / 2) * h, (x + bw / 2) * w, (y + bh / 2) * h])
            if box.min() > 1 and box[2] < w - 1 and box[3] < h - 1:
                found = _recovered_box(bgr, PALETTE[int(cls)], box)
                assert found is not None and np.abs(found - box).max() <= 3.0
                checked += 1
    assert checked >= 8
    mix = LoadImagesAndLabels(str(im_dir), img_size=256, batch_size=2, augment=True, hyp=dict(still, mixup=1.0))
    random.seed(2)
    np.random.seed(2)
    im, labels, _, _ = mix[0]
    random.seed(2)
    np.random.seed(2)
    random.random()  # the mosaic draw
    first = load_mosaic(mix, 0)[1]
    random.random()  # the mixup draw
    second = load_mosaic(mix, random.randint(0, mix.n - 1))[1]
    assert len(labels) == len(first) + len(second) and im.dtype == torch.uint8
