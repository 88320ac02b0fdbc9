"""create_dataloader: batches, worker rule, persistent workers, seeded determinism, DDP sampler,
image weights; LoadImages for detect.py."""
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from utils.datasets import LoadImages, create_dataloader  # upstream import paths
from utils.errors import UserError
from utils.data.loaders import (EpochDataLoader, InfiniteDataLoader, labels_to_class_weights, update_image_weights,
                           worker_count)


pytestmark = pytest.mark.usefixtures("user_cache")  # caches stay in tmp_path


@pytest.fixture
def images(tmp_path, coco128_copy):
    return coco128_copy(10, tmp_path / "images" / "t")


def test_worker_rule():
    cpu = os.cpu_count()
    assert worker_count(16, 8) == min(cpu, 16, 8)
    assert worker_count(1, 8) == 0 and worker_count(16, 0) == 0
    assert worker_count(16, 8, world_size=cpu) == min(1, 8)


def take(loader, n):
    out = []
    for i, batch in enumerate(loader):
        out.append(batch)
        if i + 1 == n:
            break
    return out


def test_seeded_workers_are_reproducible(images, hyp):
    def batches(seed):
        loader, _ = create_dataloader(str(images), 160, 4, 32, hyp=hyp, augment=True, workers=2, seed=seed)
        assert isinstance(loader, InfiniteDataLoader) and loader.num_workers == min(2, os.cpu_count())
        return [(b[0].clone(), b[1].clone()) for b in take(loader, 3)]

    a, b, c = batches(0), batches(0), batches(1)
    for (ia, ta), (ib, tb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))
    imgs, targets = a[0]
    assert imgs.dtype == torch.uint8 and tuple(imgs.shape) == (4, 3, 160, 160) and targets.shape[1] == 6


def test_infinite_loader_keeps_workers_across_epochs(images):
    loader, ds = create_dataloader(str(images), 160, 4, 32, workers=2, rect=True, pad=0.5)
    assert len(loader) == 3  # ceil(10 / 4)
    epochs = []
    for _ in range(2):
        epochs.append([p for _, _, paths, _ in loader for p in paths])
        if loader.num_workers:
            pids = [w.pid for w in loader.iterator._workers]
            assert all(w.is_alive() for w in loader.iterator._workers)
    assert epochs[0] == epochs[1] == ds.img_files  # v6.0: no shuffling on one device
    if loader.num_workers:
        assert pids == [w.pid for w in loader.iterator._workers]



def test_dropped_loader_ends_its_workers_at_once(images):
    """The last reference gone, the loader is freed by reference counting (no cycle through its
    sampler), so its workers are shut down through their queues, not after a 5 s join timeout each."""
    import gc
    import weakref
    loader, _ = create_dataloader(str(images), 160, 4, 32, workers=2, rect=True, pad=0.5)
    for _ in loader:
        pass
    if not loader.num_workers:
        pytest.skip("one CPU: no loader workers")
    workers = list(loader.iterator._workers)
    ref = weakref.ref(loader)
    gc.disable()
    try:
        del loader
        assert ref() is None
    finally:
        gc.enable()
    for w in workers:
        w.join(timeout=3)
    assert [w.exitcode for w in workers] == [0, 0]


def epoch_orders(loader, epochs, start=0):
    """Image paths of each pass, with set_epoch called before each as the trainer does."""
    orders = []
    for epoch in range(start, start + epochs):
        loader.set_epoch(epoch)
        orders.append([p for _, _, paths, _ in loader for p in paths])
    return orders


def test_epoch_order_does_not_depend_on_prefetching_workers(images):
    def orders(workers, epochs=3, start=0):
        loader, _ = create_dataloader(str(images), 160, 4, 32, workers=workers, shuffle=True, seed=5)
        return epoch_orders(loader, epochs, start)

    serial = orders(0)
    assert len({tuple(o) for o in serial}) == 3  # every epoch is shuffled anew
    # Two workers prefetch 4 batches: the first pass already draws epoch 1's first indices.
    assert orders(2) == serial
    assert orders(2, epochs=1, start=2) == serial[2:]  # a run resumed at epoch 2 sees epoch 2's order


def test_loader_built_directly_orders_epochs_from_the_default_seed(images):
    """InfiniteDataLoader built without create_dataloader (as code outside the trainer may) still fixes each
    epoch's order: the same as create_dataloader's with the default seed."""
    from utils.datasets import LoadImagesAndLabels
    ds = LoadImagesAndLabels(str(images), 160, 4, stride=32)
    generator = torch.Generator()
    loader = InfiniteDataLoader(ds, batch_size=4, shuffle=True, num_workers=0, generator=generator,
                                collate_fn=LoadImagesAndLabels.collate_fn)
    reference, _ = create_dataloader(str(images), 160, 4, 32, workers=0, shuffle=True)
    assert epoch_orders(loader, 2) == epoch_orders(reference, 2)


def test_distributed_epoch_order_with_workers(images, tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader, ds = create_dataloader(str(images), 160, 4, 32, rank=0, workers=2, seed=7)
        got = epoch_orders(loader, 2)
    finally:
        dist.destroy_process_group()
    expected = []
    for epoch in range(2):
        reference = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=7)
        reference.set_epoch(epoch)
        expected.append([ds.img_files[i] for i in reference])
    assert got == expected and got[0] != got[1]


def test_batch_size_capped_and_shuffle_option(images):
    loader, ds = create_dataloader(str(images), 160, 64, 32, workers=0, shuffle=True, seed=3)
    assert loader.batch_size == 10
    paths = [p for _, _, ps, _ in loader for p in ps]
    assert sorted(paths) == sorted(ds.img_files) and paths != ds.img_files


def test_distributed_sampler_under_ddp(images, tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader, ds = create_dataloader(str(images), 160, 4, 32, rank=0, workers=0)
        assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.shuffle
        rect_loader, _ = create_dataloader(str(images), 160, 4, 32, rank=0, workers=0, rect=True)
        assert not rect_loader.sampler.shuffle  # rect batch shapes need the sorted order
    finally:
        dist.destroy_process_group()


def test_image_weights_resample_indices(images, hyp):
    loader, ds = create_dataloader(str(images), 160, 4, 32, hyp=hyp, augment=True, workers=0, image_weights=True)
    assert type(loader) is EpochDataLoader  # plain loader: indices change every epoch
    nc = 80
    cw = labels_to_class_weights(ds.labels, nc) * nc
    assert torch.isclose(cw.sum() / nc, torch.tensor(1.0)) and cw[ds.labels[0][0, 0].astype(int)] > 0
    maps = np.ones(nc)
    only = int(ds.labels[0][0, 0])  # the one class still "unlearned" (mAP 0)
    maps[only] = 0
    idx = update_image_weights(ds, cw.numpy(), maps, nc)
    has_class = {i for i, lb in enumerate(ds.labels) if (lb[:, 0] == only).any()}
    assert len(idx) == ds.n and set(idx) <= has_class
    assert ds[0][2] == ds.img_files[idx[0]]


def test_load_images_for_detect(tmp_path, real_images_dir):
    src = real_images_dir / "images" / "train2017"
    for name in ("000000000009.jpg", "000000000025.jpg"):
        shutil.copy(src / name, tmp_path / name)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 64))
    for k in range(3):
        writer.write(np.full((64, 96, 3), 40 * k, np.uint8))
    writer.release()
    (tmp_path / "notes.txt").write_text("ignored")
    ds = LoadImages(str(tmp_path), img_size=320, stride=32)
    assert len(ds) == 3
    items = list(ds)
    assert [os.path.basename(p) for p, *_ in items] == ["000000000009.jpg", "000000000025.jpg"] + ["clip.avi"] * 3
    path, img, img0, cap, info = items[0]
    assert img0.shape == (480, 640, 3) and img.shape == (3, 256, 320)  # auto: minimal stride-32 padding
    assert cap is None and info == f"image 1/3 {path}: "
    assert np.array_equal(img[:, 8:248], cv2.resize(img0, (320, 240), interpolation=cv2.INTER_LINEAR)
                          .transpose(2, 0, 1)[::-1])
    _, vimg, vimg0, vcap, vinfo = items[4]
    assert vimg0.shape == (64, 96, 3) and vimg.shape == (3, 224, 320) and vcap is not None
    assert vinfo.startswith("video 3/3 (3/3)")
    with pytest.raises(UserError, match="does not exist"):
        LoadImages(str(tmp_path / "missing.jpg"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images or videos"):
        LoadImages(str(empty))


def test_v6_positional_order(images, hyp, tmp_path):
    """Scripts written for v6.0 pass every option by position, in v6.0's order."""
    from utils.datasets import LoadImagesAndLabels
    # path, imgsz, batch_size, stride, single_cls, hyp, augment, cache, pad, rect, rank, workers,
    # image_weights, quad, prefix
    loader, ds = create_dataloader(str(images), 64, 4, 32, True, hyp, False, False, 0.5, True, -1, 0, False, False,
                                   "val: ")
    assert type(loader) is InfiniteDataLoader and loader.num_workers == 0 and len(loader) == 3
    assert ds.rect and not ds.augment and ds.hyp is hyp and ds.stride == 32
    assert all((lb[:, 0] == 0).all() for lb in ds.labels)
    assert sum(len(lb) for lb in ds.labels) == 53  # the rows of the 10 label files
    assert ds.batch_shapes.tolist() == [[64, 96], [64, 96], [96, 96]]  # pad 0.5: ceil(2 * h/w + 0.5) * 32
    assert loader.collate_fn == LoadImagesAndLabels.collate_fn
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="^val: no usable images .* 1 checked, 1 corrupt"):
        create_dataloader(str(tmp_path / "bad"), 64, 4, 32, False, None, False, False, 0.0, False, -1, 0, False,
                          False, "val: ")
    # path, img_size, batch_size, augment, hyp, rect, image_weights, cache_images, single_cls, stride, pad, prefix
    ds = LoadImagesAndLabels(str(images), 64, 4, True, hyp, True, True, "ram", False, 64, 0.0, "train: ")
    assert ds.augment and ds.hyp is hyp and ds.image_weights and not ds.rect and ds.stride == 64
    assert all(im is not None for im in ds.imgs) and max(ds.imgs[0].shape[:2]) == 64
    assert {int(c) for lb in ds.labels for c in lb[:, 0]} > {0}  # classes kept (single_cls False)
    ds = LoadImagesAndLabels(str(images), 64, 4, False, None, True, False, False, False, 32, 1.0)
    assert ds.batch_shapes.tolist() == [[96, 96]] * 3  # pad 1.0: ceil(2 * h/w + 1) * 32 (pad 0.0: 64)
    with pytest.raises(TypeError, match="multiple values for argument 'img_size'"):
        LoadImagesAndLabels(str(images), 64, img_size=32)
