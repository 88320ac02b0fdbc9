"""CPU milliseconds per training image spent in loader-worker work: CPU augmentation vs device augmentation.

Runs in one process exactly what a loader worker runs per batch (dataset __getitem__ for each
sample, then the batch's collate function) with OpenCV and torch on one thread, as in a worker,
and counts this process's CPU time (time.process_time, little affected by other load on a shared
machine). Both paths draw the same samples (same seed). With --device it also times making the
device path's pixels there (augment_batch), which is the work moved off the workers.

Run from the repository root:
  .venv/bin/python bench/augment_device.py [--data-dir ../shared/data/coco128] [--cache] [--device cuda]
"""
import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "yolov5"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from utils.data.augment_pack import collate_device  # noqa: E402
from utils.datasets import LoadImagesAndLabels  # noqa: E402
from utils.data.device_augment import augment_batch  # noqa: E402


def worker_ms_per_image(ds, collate, batches, batch_size, seed=0):
    random.seed(seed)
    np.random.seed(seed)
    out, t0 = [], time.process_time()
    for b in range(batches):
        out.append(collate([ds[(b * batch_size + i) % ds.n] for i in range(batch_size)]))
    return 1000 * (time.process_time() - t0) / (batches * batch_size), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(REPO / "tests" / "data" / "coco16"))
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--cache", action="store_true", help="--cache ram: images decoded and resized once")
    ap.add_argument("--device", default="", help="also time augment_batch on this torch device")
    ap.add_argument("--hyp", default=str(REPO / "yolov5" / "data" / "hyps" / "hyp.scratch.yaml"))
    opt = ap.parse_args()
    cv2.setNumThreads(0)
    torch.set_num_threads(1)
    hyp = yaml.safe_load(Path(opt.hyp).read_text())
    images = str(Path(opt.data_dir) / "images" / "train2017")
    cache = "ram" if opt.cache else False
    cpu = LoadImagesAndLabels(images, opt.imgsz, opt.batch_size, augment=True, hyp=hyp, cache_images=cache)
    dev = LoadImagesAndLabels(images, opt.imgsz, opt.batch_size, augment=True, hyp=hyp, cache_images=cache,
                              augment_device=True)
    worker_ms_per_image(cpu, cpu.collate_fn, 1, opt.batch_size, seed=99)  # warm-up (file cache, allocator)
    worker_ms_per_image(dev, collate_device, 1, opt.batch_size, seed=99)
    ms_cpu, _ = worker_ms_per_image(cpu, cpu.collate_fn, opt.batches, opt.batch_size)
    ms_dev, batches = worker_ms_per_image(dev, collate_device, opt.batches, opt.batch_size)
    print(f"img {opt.imgsz}, batch {opt.batch_size}, {opt.batches} batches, cache {'ram' if cache else 'none'}: "
          f"loader-worker CPU ms per image: cpu augmentation {ms_cpu:.2f}, device augmentation {ms_dev:.2f} "
          f"({ms_cpu / ms_dev:.2f}x less)")
    if opt.device:
        device = torch.device(opt.device)
        augment_batch(batches[0][0], device)
        sync = getattr(torch, device.type, None)
        t0 = time.perf_counter()
        for b in batches:
            augment_batch(b[0], device)
        if sync is not None and hasattr(sync, "synchronize"):
            sync.synchronize()
        dt = (time.perf_counter() - t0) * 1000 / (len(batches) * opt.batch_size)
        print(f"augment_batch on {device}: {dt:.2f} ms per image (wall)")


if __name__ == "__main__":
    main()
