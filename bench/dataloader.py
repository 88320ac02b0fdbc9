"""Training data-loader throughput, mosaic-augmented images per second: ours and upstream YOLOv5's,
side by side in one run.

Settings (v6.0 training defaults): img 640, batch 16, 2 loader workers, hyp.scratch.yaml (mosaic 1.0,
HSV, fliplr 0.5, scale 0.5, translate 0.1), no image caching. Each side builds its training loader
with its own create_dataloader (ours: utils.data.loaders; upstream: utils.datasets) in its own process, on
its own copy of the data folder, so each writes and reads its own label cache; building the loader
(label cache included) and one warm-up pass (starts the loader workers, fills the OS file cache) are
not timed. Then the sides take turns, `--rounds` times, alternating who goes first: each turn first
takes, untimed, the batches the loader workers made ahead while the other side ran (workers x
prefetch factor), then times `--batches` batches, so both sides are timed at their steady rate. Every turn prints images/s and the CPU time the side's processes
(benchmark worker + loader workers) spent per image, which other load on a shared machine affects
less than wall time. The ratio ours / upstream images/s is the median of the per-round ratios.

--profile N runs N batches of each side's dataset and collate in the benchmark process (no loader
workers, OpenCV single-threaded as in a worker) under cProfile and prints the functions with the most
own CPU time: where a worker's time goes.
Without --upstream only our side is measured.

Run from the repository root:
  .venv/bin/python bench/dataloader.py --upstream ../yolov5-v6.0 [--rounds 3] [--profile 8]
"""
import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import side_by_side

REPO = side_by_side.REPO
TARGET_RATIO = 1.5  # ours / upstream, images per second


class Loader:
    """One side's training data loader; `flavour` is 'ours' or 'upstream'."""

    def __init__(self, flavour, images, imgsz, batch_size, workers, hyp):
        import torch
        import yaml
        self.torch = torch
        with open(hyp) as f:
            self.hyp = yaml.safe_load(f)
        if flavour == "ours":
            from utils.data.loaders import create_dataloader
        else:
            from utils.datasets import create_dataloader
        self.args = (images, imgsz, batch_size, 32)
        # Label cache built (or read) here, outside the timed part.
        self.loader, self.dataset = create_dataloader(*self.args, hyp=self.hyp, augment=True, workers=workers,
                                                      prefix=f"{flavour}: ")
        self.stream = self._stream()
        # Batches the workers may hold ready when a turn starts (DataLoader's prefetch).
        self.ahead = self.loader.num_workers * (self.loader.prefetch_factor or 0)

    def settings(self):
        return len(self.dataset), self.loader.batch_size, self.loader.num_workers

    def _stream(self):
        while True:  # pass after pass, as a training run iterates the loader
            yield from self.loader

    def _take(self, batches):
        return sum(next(self.stream)[0].shape[0] for _ in range(batches))

    def warmup(self):
        self._take(len(self.loader))  # one pass: starts the workers
        return True

    def timed(self, batches):
        """(images, wall seconds, CPU seconds of this process and its loader workers) over `batches` batches."""
        import psutil
        self._take(self.ahead)  # made while the other side was timed: not this turn's work
        procs = [psutil.Process()] + psutil.Process().children(recursive=True)
        cpu0, t0 = _cpu(procs), time.perf_counter()
        n = self._take(batches)
        return n, time.perf_counter() - t0, _cpu(procs) - cpu0

    def profile(self, batches):
        """cProfile of `batches` batches made in this process (dataset + collate), top functions by own
        CPU time (process time: preemption by other load on the machine does not count)."""
        import cProfile
        import io
        import itertools
        import pstats

        import cv2
        cv2.setNumThreads(0)  # as in a loader worker (both code bases set it there)
        ld = self.torch.utils.data.DataLoader(self.dataset, batch_size=self.loader.batch_size, num_workers=0,
                                              collate_fn=self.loader.collate_fn)
        it = itertools.chain.from_iterable(itertools.repeat(ld))  # as many batches as asked, pass after pass
        next(it)  # first use: imports and lazy set-up, not per-batch work
        pr = cProfile.Profile(time.process_time)
        pr.enable()
        for _ in range(batches):
            next(it)
        pr.disable()
        out = io.StringIO()
        pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(18)
        return out.getvalue()


def _cpu(procs):
    total = 0.0
    for p in procs:
        try:
            total += sum(p.cpu_times()[:2])
        except Exception:  # a process that has gone (psutil.NoSuchProcess)
            pass
    return total


def private_copy(data_dir, workdir, name):
    """A copy of the data folder (images and labels, no label cache) for one side."""
    dst = Path(workdir) / f"data-{name}"
    shutil.copytree(data_dir, dst, ignore=shutil.ignore_patterns("*.cache", "*.cache.npy"))
    return dst / "images" / "train2017"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    side_by_side.add_upstream_argument(ap)
    ap.add_argument("--data-dir", default=str(side_by_side.default_data_dir()))
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=16, help="timed batches per turn")
    ap.add_argument("--rounds", type=int, default=3, help="timed turns per side, alternating")
    ap.add_argument("--hyp", default=str(REPO / "yolov5" / "data" / "hyps" / "hyp.scratch.yaml"))
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile N batches of each side")
    opt = ap.parse_args()
    if opt.batches < 1 or opt.rounds < 1:
        ap.error("--batches and --rounds must be >= 1")
    side_by_side.check_data_dir(ap, opt.data_dir)

    with side_by_side.scratch_dir("dataloader_") as tmp:
        names, roots = side_by_side.side_roots(opt.upstream, tmp)
        sides = [side_by_side.Worker(n, roots[n], "dataloader", "Loader", upstream=n == "upstream", flavour=n,
                                     images=str(private_copy(opt.data_dir, tmp, n)), imgsz=opt.imgsz,
                                     batch_size=opt.batch_size, workers=opt.workers, hyp=opt.hyp)
                 for n in names]
        n_img, bs, nw = sides[0].call("settings")
        print(f"settings: {n_img} images from {opt.data_dir}, imgsz {opt.imgsz}, batch {bs}, {nw} loader workers, "
              f"{Path(opt.hyp).name}; {opt.batches} batches per turn, {opt.rounds} turns per side, alternating; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        for s in sides:
            s.call("warmup")
        rates, cpu_ms = {n: [] for n in names}, {n: [] for n in names}

        def turn(side, r):
            n, dt, cpu = side.call("timed", opt.batches)
            rates[side.name].append(n / dt)
            cpu_ms[side.name].append(cpu / n * 1e3)
            print(f"round {r + 1} {side.name:8s}: {n} images in {dt:6.2f} s -> {n / dt:6.1f} images/s; "
                  f"CPU {cpu / n * 1e3:5.1f} ms per image; load average {os.getloadavg()[0]:.2f}", flush=True)

        side_by_side.alternate(sides, opt.rounds, turn)
        for n in names:
            print(f"{n:8s}: median {statistics.median(rates[n]):.1f} images/s "
                  f"(range {min(rates[n]):.1f}-{max(rates[n]):.1f})")
        if opt.upstream:
            per_round = [a / b for a, b in zip(rates["ours"], rates["upstream"])]
            print(f"ours / upstream images per second: {side_by_side.ratio_text(per_round)}; "
                  f"target >= {TARGET_RATIO})")
            by_cpu = [b / a for a, b in zip(cpu_ms["ours"], cpu_ms["upstream"])]
            print(f"upstream / ours CPU time per image: {statistics.median(by_cpu):.2f} (range {min(by_cpu):.2f}-"
                  f"{max(by_cpu):.2f}; less affected by other load on the machine than wall time)")
        side_by_side.profile_and_close(
            sides, opt.profile and f"{opt.profile} batches made in one process, top functions by own time",
            opt.profile)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not opt.upstream:
        side_by_side.say_ours_only("dataloader.py")


if __name__ == "__main__":
    sys.exit(main())
