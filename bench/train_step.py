"""Time of one training iteration (forward, loss, backward, optimizer step) on the CPU, fp32.

Settings of issue 4: yolov5n and yolov5s at 320 px, batch 16, a fixed batch, median of 10 timed
iterations after 3 warm-up ones. The batch is the first 16 coco128 training images (sorted by
name) letterboxed to 320x320 with their real labels; the pieces are the trainer's own: Model,
ComputeLoss with hyp.scratch.yaml scaled by scale_loss_gains, build_optimizer's SGD (nesterov,
three parameter groups), stepped every iteration at lr0.

Upstream v6.0 measured on the same kind of machine (2 CPU cores, torch 2.14.1), quoted from
issue 4 and not re-measured here: yolov5n 1.12 and 1.23 s, yolov5s 3.12 and 2.92 s (two runs).
The target is at most 0.8x those.

Modes:
  (default)   the configuration the trainer uses on the CPU (utils.cpu_speed.optimise_for_training)
  --baseline  the model exactly as built, glibc's default allocator behaviour
  --compare   both side by side: each configuration lives in its own process (the allocator
              setting is process-wide) and the two take turns, one iteration each, alternating
              who goes first, so machine load hits both alike. The ratio optimised / baseline is
              the figure to trust on a shared machine. The first step's loss items of both are
              compared too: same seed, weights and batch, so any difference is numerics.
Experiments applied to the optimised configuration only (measured, not adopted; see
utils/cpu_speed.py for why): --channels-last (weights channels-last), --compile (torch.compile;
the compiling iteration is reported on its own and not timed as a step).

Machine load matters a lot on 2 cores: with another busy process, torch's 2 OpenMP threads wait
on each other and a step can take several times longer. Check `uptime`; trust --compare ratios.
Columns: median seconds per phase and per iteration (total), minor page faults per iteration
(what utils.cpu_speed removes), the worker process's peak resident memory.

Run from the repository root:  .venv/bin/python bench/train_step.py [--compare] [--cfg yolov5n]
"""
import argparse
import logging
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "yolov5"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from models.yolo import Model  # noqa: E402
from utils.augmentations import letterbox  # noqa: E402
from utils.cpu_speed import optimise_for_training  # noqa: E402
from utils.image_files import img2label_path, read_image  # noqa: E402
from utils.label_checks import parse_label_file  # noqa: E402
from utils.loss import ComputeLoss, scale_loss_gains  # noqa: E402
from utils.optim import accumulate_steps, build_optimizer  # noqa: E402

UPSTREAM_S = {"yolov5n": (1.12, 1.23), "yolov5s": (3.12, 2.92)}  # issue 4, two runs each
TARGET_RATIO = 0.8
PHASES = ("forward", "loss", "backward", "step")


def fixed_batch(data_dir, n, imgsz):
    """(images (n, 3, imgsz, imgsz) float 0-1 RGB, targets (N, 6) [image, class, x, y, w, h] normalised)."""
    files = sorted((Path(data_dir) / "images" / "train2017").glob("*.jpg"))[:n]
    if len(files) < n:
        sys.exit(f"need {n} images in {data_dir}/images/train2017, found {len(files)}")
    images, targets = [], []
    for i, f in enumerate(files):
        im = read_image(str(f))
        h0, w0 = im.shape[:2]
        im, (rw, rh), (pw, ph) = letterbox(im, imgsz, auto=False)
        images.append(im[:, :, ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
        labels = parse_label_file(img2label_path(str(f)))[0]
        for c, x, y, w, h in labels:  # normalised to the original image -> normalised to the letterbox
            targets.append([i, c, (x * w0 * rw + pw) / imgsz, (y * h0 * rh + ph) / imgsz,
                            w * w0 * rw / imgsz, h * h0 * rh / imgsz])
    imgs = torch.from_numpy(np.ascontiguousarray(np.stack(images))).float() / 255
    return imgs, torch.tensor(targets, dtype=torch.float32)


def to_channels_last(model):
    """Experiment only (--channels-last): store the 4-d weights channels-last, in place.

    Tensor by tensor, because model.to(memory_format=...) also maps Detect's cached 5-d grids."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model


class TrainStep:
    """Model + loss + optimizer of one configuration, seeded so every configuration starts equal."""

    def __init__(self, opt, cfg, optimised):
        if opt.threads:
            torch.set_num_threads(opt.threads)
        with open(opt.hyp) as f:
            hyp = yaml.safe_load(f)
        self.imgs, self.targets = fixed_batch(opt.data_dir, opt.batch_size, opt.imgsz)
        torch.manual_seed(0)
        self.model = Model(str(REPO / "yolov5" / "models" / f"{cfg}.yaml"), nc=80).train()
        if optimised:
            optimise_for_training(self.model, "cpu")
            if opt.channels_last:
                to_channels_last(self.model)
        self.model.hyp = scale_loss_gains(hyp, self.model.model[-1].nl, 80, opt.imgsz)
        self.compute_loss = ComputeLoss(self.model)
        self.optimizer = build_optimizer(self.model, hyp, opt.batch_size, accumulate_steps(opt.batch_size))
        self.forward = torch.compile(self.model) if optimised and opt.compile else self.model

    def __call__(self):
        """One training iteration -> (seconds per phase, minor page faults, loss items, peak RSS in MiB)."""
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = [time.perf_counter()]
        pred = self.forward(self.imgs)
        t.append(time.perf_counter())
        loss, loss_items = self.compute_loss(pred, self.targets)
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        self.optimizer.step()
        self.optimizer.zero_grad()
        t.append(time.perf_counter())
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return np.diff(t).tolist(), usage.ru_minflt - f0, loss_items.tolist(), usage.ru_maxrss / 1024


def serve(conn, opt, cfg, optimised):
    """Worker process: build one configuration, then run one iteration per request."""
    logging.getLogger("yolov5").setLevel(logging.WARNING)
    step = TrainStep(opt, cfg, optimised)
    conn.send("ready")
    while conn.recv() == "step":
        conn.send(step())


class Runner:
    """One configuration in its own process (spawned: a fresh allocator and torch state)."""

    def __init__(self, ctx, opt, cfg, optimised):
        self.optimised = optimised
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child, opt, cfg, optimised), daemon=True)
        self.proc.start()
        if self._recv() != "ready":
            raise RuntimeError("benchmark worker failed to start")
        self.times, self.faults, self.losses, self.peak_mib = [], [], [], 0.0

    def _recv(self):
        """The worker's next message; an error instead of a hang if the worker died (its traceback is above)."""
        while not self.conn.poll(1.0):
            if not self.proc.is_alive():
                sys.exit(f"benchmark worker exited with code {self.proc.exitcode}")
        return self.conn.recv()

    def step(self):
        self.conn.send("step")
        times, faults, loss_items, self.peak_mib = self._recv()
        self.times.append(times)
        self.faults.append(faults)
        self.losses.append(loss_items)
        return sum(times)

    def close(self):
        self.conn.send("stop")
        self.proc.join(timeout=30)


def print_row(cfg, runner, warmup, label):
    times = np.array(runner.times[warmup:])
    phases = [float(np.median(times[:, k])) for k in range(len(PHASES))]
    total = float(np.median(times.sum(1)))
    up = UPSTREAM_S.get(cfg)
    vs = f"{total / up[0]:.2f} / {total / up[1]:.2f}" if up else "-"
    faults = int(np.median(runner.faults[warmup:]))
    print(f"{cfg:8s} {label:9s} " + " ".join(f"{p:8.3f}" for p in phases)
          + f" {total:8.3f} {faults:8d} {runner.peak_mib:8.0f}   {vs}")
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", nargs="+", default=["yolov5n", "yolov5s"])
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "coco128"))
    ap.add_argument("--hyp", default=str(REPO / "yolov5" / "data" / "hyps" / "hyp.scratch.yaml"))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--baseline", action="store_true", help="measure the model as built, no speed-ups")
    mode.add_argument("--compare", action="store_true", help="baseline and optimised side by side")
    ap.add_argument("--channels-last", action="store_true", help="experiment: channels-last weights (optimised)")
    ap.add_argument("--compile", action="store_true", help="experiment: torch.compile the optimised model")
    opt = ap.parse_args()
    if opt.baseline and (opt.channels_last or opt.compile):
        ap.error("--channels-last and --compile apply to the optimised configuration, not to --baseline")
    if opt.compile and not hasattr(torch, "compile"):
        ap.error(f"torch {torch.__version__} has no torch.compile")
    if opt.iters < 1 or opt.warmup < 0:
        ap.error("--iters must be >= 1 and --warmup >= 0")

    mode_name = "compare" if opt.compare else "baseline" if opt.baseline else "optimised"
    mode_name += "".join(f" +{x}" for x, on in (("channels-last", opt.channels_last), ("compile", opt.compile)) if on)
    threads = opt.threads or torch.get_num_threads()
    print(f"settings: {mode_name}, imgsz {opt.imgsz}, batch {opt.batch_size}, fp32 CPU, {opt.warmup} warm-up + "
          f"{opt.iters} timed iterations, {Path(opt.hyp).name}, SGD at lr0, torch {torch.__version__}, "
          f"{threads} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'model':8s} {'config':9s} " + " ".join(f"{p:>8s}" for p in PHASES)
          + f" {'total':>8s} {'faults':>8s} {'peak MiB':>8s}   vs upstream runs (target <= {TARGET_RATIO})")
    ctx = mp.get_context("spawn")
    for cfg in opt.cfg:
        kinds = [False, True] if opt.compare else [not opt.baseline]
        runners = [Runner(ctx, opt, cfg, optimised) for optimised in kinds]
        if opt.compile:  # the compiling iteration, reported apart
            t0 = time.perf_counter()
            runners[-1].step()
            print(f"{cfg:8s} torch.compile: first iteration {time.perf_counter() - t0:.1f} s")
            runners[-1].times, runners[-1].faults = [], []
        for k in range(opt.warmup + opt.iters):
            for r in (runners if k % 2 == 0 else runners[::-1]):  # alternate the order: no position bias
                r.step()
        totals = [print_row(cfg, r, opt.warmup, "optimised" if r.optimised else "baseline") for r in runners]
        if opt.compare:
            base, fast = (np.array(r.times[opt.warmup:]).sum(1) for r in runners)
            first = [np.array(r.losses[0]) for r in runners]
            rel = np.abs(first[1] - first[0]).max() / np.abs(first[0]).max()
            print(f"{cfg:8s} optimised / baseline: {statistics.median(fast / base):.3f} (median of per-round "
                  f"ratios), {totals[1] / totals[0]:.3f} (ratio of medians); first-step loss items differ "
                  f"by {rel:.1e} relative")
        for r in runners:
            r.close()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
