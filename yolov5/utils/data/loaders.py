"""DataLoader construction for training and validation (v6.0 `create_dataloader`).

* workers = min(cpu_count // world_size, batch_size if > 1 else 0, --workers).
* InfiniteDataLoader keeps ONE iterator over an endlessly repeating batch sampler, so worker
  processes persist across epochs and keep prefetching through epoch boundaries.
* Reproducible: a torch.Generator seeded from `seed` (+ rank) fixes the workers' base seed,
  and `seed_worker` derives Python's and numpy's seeds from it, so with the same seed and
  worker count the batches are identical (samples go to workers round-robin).
* Sample order of epoch k depends only on (seed, k, rank): the loader fixes it itself just
  before the epoch's indices are drawn (DistributedSampler.set_epoch(k), or the generator
  reseeded with epoch_seed), because prefetching workers draw the next epoch's first indices
  while the trainer is still in the previous epoch. `loader.set_epoch(start)` before the first
  pass says where a resumed run starts.
* Shuffling: single process follows `shuffle` (v6.0 never shuffled; v6.1 shuffles training);
  under DDP a DistributedSampler shuffles as in v6.0 except with rect batches, whose shapes
  rely on the sorted order.
* pin_memory is the caller's choice (the device layer knows whether it helps).
* --image-weights uses a plain (epoch-ordered) DataLoader so workers restart each epoch and see the new
  `dataset.indices` (set with `update_image_weights`).
"""
from __future__ import annotations

import logging
import os
import random
import weakref

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, distributed

from utils.data.augment_pack import collate_device
from utils.data.detection_dataset import LoadImagesAndLabels
from utils.errors import UserError
from utils.training.seeds import epoch_seed
from utils.upstream_call import upstream_positions
from utils.data.worker_signals import shield_from_group_signals

LOGGER = logging.getLogger("yolov5")
DEFAULT_SEED = 0


def seed_worker(worker_id):
    """Loader worker setup: seed Python's and numpy's RNGs from torch's per-worker seed, keep
    OpenCV single-threaded (each worker is already one of several processes; OpenCV's own thread
    pool would oversubscribe the cores), and let a stop signal sent to the whole process group
    reach the trainer only (utils/data/worker_signals.py)."""
    shield_from_group_signals()
    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


class _EpochOrderMixin:
    """Epoch k's sample order from (seed, k, rank) alone, whatever was drawn before."""

    order_seed, order_rank = DEFAULT_SEED, -1  # create_dataloader sets them per loader

    def _init_epoch_order(self, seed, rank):
        self.order_seed, self.order_rank = seed, rank

    def _fix_epoch_order(self, epoch):
        if hasattr(self.sampler, "set_epoch"):  # DistributedSampler: order from (its seed, epoch)
            self.sampler.set_epoch(epoch)
        elif self.generator is not None:  # RandomSampler draws the order from the loader's generator
            self.generator.manual_seed(epoch_seed(self.order_seed, epoch, self.order_rank))


class EpochDataLoader(_EpochOrderMixin, DataLoader):
    """Plain DataLoader (new workers each epoch) whose set_epoch(k) fixes the next pass's order."""

    def set_epoch(self, epoch):
        self._fix_epoch_order(epoch)


class _RepeatSampler:
    """Yields the wrapped batch sampler's batches forever, epoch after epoch; `before_epoch()(k)` runs
    just before epoch k is drawn (the whole epoch at once, so its order is fixed at that moment).
    `before_epoch` is a weak method: it returns None once its loader is gone."""

    def __init__(self, sampler, before_epoch):
        self.sampler, self.before_epoch = sampler, before_epoch
        self.first_epoch = 0

    def __iter__(self):
        epoch = self.first_epoch
        while True:
            self._prepare(epoch)
            yield from list(self.sampler)
            epoch += 1

    def _prepare(self, epoch):
        fix_order = self.before_epoch()  # a local here, not in the suspended generator: no strong ref
        if fix_order is not None:
            fix_order(epoch)


class InfiniteDataLoader(_EpochOrderMixin, DataLoader):
    """DataLoader whose workers live for the whole run; each `iter()` yields len(self) batches.

    The iterator (and its workers) starts at the first pass, so `set_epoch(start)` can come first."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A weak reference: a bound method would make loader <-> sampler a reference cycle, left to the
        # cyclic collector, which may close the workers' queues before the iterator's shutdown uses
        # them; each worker then waits out its 5 s join timeout.
        object.__setattr__(self, "batch_sampler", _RepeatSampler(self.batch_sampler,
                                                                  weakref.WeakMethod(self._fix_epoch_order)))
        self.iterator = None

    def __len__(self):
        return len(self.batch_sampler.sampler)

    def set_epoch(self, epoch):
        """Before the first pass: the epoch it belongs to. Later passes follow in sequence by themselves."""
        if self.iterator is None:
            self.batch_sampler.first_epoch = epoch

    def __iter__(self):
        if self.iterator is None:
            self.iterator = super().__iter__()
        for _ in range(len(self)):
            yield next(self.iterator)


def worker_count(batch_size: int, workers: int, world_size: int = 1) -> int:
    return min((os.cpu_count() or 1) // max(world_size, 1), batch_size if batch_size > 1 else 0, workers)


@upstream_positions("path", "imgsz", "batch_size", "stride", "single_cls", "hyp", "augment", "cache", "pad", "rect",
                    "rank", "workers", "image_weights", "quad", "prefix")
def create_dataloader(path, imgsz, batch_size, stride, *, single_cls=False, hyp=None, augment=False, cache=False,
                      pad=0.0, rect=False, rank=-1, workers=8, image_weights=False, quad=False, prefix="",
                      shuffle=False, pin_memory=False, seed=DEFAULT_SEED, nc=None, world_size=None,
                      augment_device=False):
    """-> (loader, dataset). Batches: (uint8 B x 3 x H x W, targets (N, 6), paths, shapes).

    augment_device: the batches' first item is an AugmentBatch (source crops and drawn parameters)
    whose pixels utils.data.device_augment.augment_batch makes on the training device."""
    if augment_device and quad:
        raise UserError("--augment-device device does not support --quad; use --augment-device cpu")
    if rect and shuffle:
        LOGGER.warning(f"{prefix}WARNING: --rect is incompatible with shuffling; shuffle=False")
        shuffle = False
    dataset = LoadImagesAndLabels(path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect,
                                  image_weights=image_weights, cache_images=cache, single_cls=single_cls,
                                  stride=int(stride), pad=pad, prefix=prefix, nc=nc,
                                  augment_device=augment_device)
    batch_size = min(batch_size, len(dataset))
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", 1))
    nw = worker_count(batch_size, workers, world_size)
    sampler = None
    if rank != -1:
        sampler = distributed.DistributedSampler(dataset, shuffle=not rect, seed=seed)
        shuffle = False  # the sampler decides
    generator = torch.Generator()
    generator.manual_seed(6148914691236517205 + seed + max(rank, 0))
    collate = LoadImagesAndLabels.collate_fn4 if quad else LoadImagesAndLabels.collate_fn
    if augment_device:
        collate = collate_device
    loader_cls = EpochDataLoader if image_weights else InfiniteDataLoader
    loader = loader_cls(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, num_workers=nw,
                        sampler=sampler, pin_memory=pin_memory, worker_init_fn=seed_worker, generator=generator,
                        collate_fn=collate)
    loader._init_epoch_order(seed, rank)
    return loader, dataset


def labels_to_class_weights(labels, nc=80):
    """Inverse class frequency over all labels (absent classes count as 1), normalised to sum 1."""
    if not len(labels) or not any(len(x) for x in labels):
        return torch.ones(nc) / nc
    classes = np.concatenate([x[:, 0] for x in labels]).astype(int)
    counts = np.bincount(classes, minlength=nc)[:nc].astype(np.float64)
    counts[counts == 0] = 1
    weights = 1 / counts
    return torch.from_numpy(weights / weights.sum()).float()


def labels_to_image_weights(labels, nc=80, class_weights=None):
    """Per-image weight = sum over its labels of their class weights."""
    cw = np.ones(nc) if class_weights is None else np.asarray(class_weights, dtype=np.float64)
    counts = np.array([np.bincount(x[:, 0].astype(int), minlength=nc)[:nc] for x in labels]).reshape(-1, nc)
    return (counts * cw.reshape(1, nc)).sum(1)


def update_image_weights(dataset, class_weights, maps, nc):
    """v6.0 --image-weights step (start of each epoch): resample dataset.indices by class weights.

    class_weights: model.class_weights (labels_to_class_weights(...) * nc); maps: per-class mAP."""
    cw = np.asarray(class_weights, dtype=np.float64) * (1 - np.asarray(maps)) ** 2 / nc
    iw = labels_to_image_weights(dataset.labels, nc=nc, class_weights=cw)
    if not iw.sum() > 0:  # no labels at all: sample uniformly
        iw = np.ones(dataset.n)
    dataset.indices = random.choices(range(dataset.n), weights=iw, k=dataset.n)
    return dataset.indices
