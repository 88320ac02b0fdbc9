"""Time of one training iteration (forward, loss, backward, optimizer step) on the CPU, fp32: ours and
upstream YOLOv5's, side by side in one run.

Settings: yolov5n at 320 px, batch 16, one fixed batch, median of 10 timed iterations after 3
warm-up ones. The batch is the first 16 images (sorted by name) of the data folder, letterboxed square
with their real labels. Each side trains with its own code: our trainer's CPU configuration
(utils.training.cpu_speed.optimise_for_training, build_optimizer, ComputeLoss with scaled gains; ours' worker
calls utils.training.cpu_speed.limit_openmp_spinning before importing torch where our train.py calls it, or
with --spin-limit) against upstream's Model and ComputeLoss with the optimizer train.py builds (SGD,
Nesterov, three parameter groups, weight decay on the conv weights only). Both start from the same
weights (ours are copied into upstream's model), so their first-step losses must agree; the script
prints how far they differ.

The two sides take turns, one iteration each, alternating who goes first, so machine load hits both
alike: the ratio ours / upstream is the figure to trust on a shared machine. --baseline adds our
model exactly as built (no CPU speed-ups, OpenMP left alone) as a third side. --profile prints, for
each side, the operators that took the most CPU time over a few extra iterations (torch.profiler).

Without --upstream only our side (and --baseline) is timed.

Run from the repository root:
  .venv/bin/python bench/train_step.py --upstream ../yolov5-v6.0 [--cfg yolov5n yolov5s] [--imgsz 320 640]
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import side_by_side

REPO = side_by_side.REPO
PHASES = ("forward", "loss", "backward", "step")
TARGET_RATIO = 0.8  # ours / upstream, time per iteration
# --busy: one core's worth of other work, as a dataloader worker makes; ends with its parent
BUSY_LOOP = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(100000): pass"


def trainer_limits_spinning():
    """Whether our train.py applies utils.training.cpu_speed.limit_openmp_spinning (ours' worker then does too)."""
    return "limit_openmp_spinning()" in (side_by_side.OURS / "train.py").read_text()


class Step:
    """Model + loss + optimizer of one side; `flavour` is 'ours', 'baseline' or 'upstream'."""

    def __init__(self, flavour, cfg, imgsz, batch_size, hyp, threads, spin_limit=False):
        self.openmp = "torch's default"
        if flavour == "ours" and not (spin_limit or trainer_limits_spinning()):
            self.openmp += " (train.py does not call utils.training.cpu_speed.limit_openmp_spinning; --spin-limit applies it)"
        elif flavour == "ours":  # as a training process must: before this process first imports torch
            from utils.training.cpu_speed import limit_openmp_spinning
            if limit_openmp_spinning():
                self.openmp = ", ".join(f"{k}={os.environ.get(k, 'unset')}"
                                        for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"))
            else:
                self.openmp = "torch was imported first: OpenMP spinning left at its default"
        import torch
        import yaml
        if threads:
            torch.set_num_threads(threads)
        self.torch, self.flavour, self.imgsz, self.batch_size = torch, flavour, imgsz, batch_size
        with open(hyp) as f:
            self.hyp = yaml.safe_load(f)
        import models.yolo
        from models.yolo import Model
        torch.manual_seed(0)  # each side builds from its own yaml; ours' weights are copied over in start()
        self.model = Model(str(Path(models.yolo.__file__).parent / f"{cfg}.yaml"), nc=80).train()
        self.imgs = self.targets = None

    def fixed_batch(self, data_dir):
        """(images (n, 3, s, s) float 0-1 RGB, targets (N, 6) normalised) built with our loader's pieces."""
        import torch
        from utils.data.augmentations import letterbox
        from utils.data.image_files import img2label_path, read_image
        from utils.data.label_checks import parse_label_file
        files = sorted((Path(data_dir) / "images" / "train2017").glob("*.jpg"))[:self.batch_size]
        if len(files) < self.batch_size:
            raise SystemExit(f"need {self.batch_size} images in {data_dir}/images/train2017, found {len(files)}")
        images, targets, s = [], [], self.imgsz
        for i, f in enumerate(files):
            im = read_image(str(f))
            h0, w0 = im.shape[:2]
            im, (rw, rh), (pw, ph) = letterbox(im, s, auto=False)
            images.append(im[:, :, ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
            for c, x, y, w, h in parse_label_file(img2label_path(str(f)))[0]:
                targets.append([i, c, (x * w0 * rw + pw) / s, (y * h0 * rh + ph) / s, w * w0 * rw / s, h * h0 * rh / s])
        imgs = torch.from_numpy(np.ascontiguousarray(np.stack(images))).float() / 255
        return imgs, torch.tensor(targets, dtype=torch.float32)

    def openmp_setting(self):
        return self.openmp

    def state_dict(self):
        return {k: v.clone() for k, v in self.model.state_dict().items()}

    def start(self, imgs, targets, state_dict):
        """Load the shared weights and batch, then build this side's training configuration."""
        self.model.load_state_dict(state_dict)
        self.imgs, self.targets = imgs, targets
        if self.flavour == "upstream":
            self._upstream_setup()
        else:
            self._our_setup()
        return True

    def _our_setup(self):
        from utils.training.cpu_speed import optimise_for_training
        from utils.training.loss import ComputeLoss, scale_loss_gains
        from utils.training.optim import accumulate_steps, build_optimizer
        if self.flavour == "ours":
            optimise_for_training(self.model, "cpu")
        self.model.hyp = scale_loss_gains(self.hyp, self.model.model[-1].nl, 80, self.imgsz)
        self.compute_loss = ComputeLoss(self.model)
        self.optimizer = build_optimizer(self.model, self.hyp, self.batch_size, accumulate_steps(self.batch_size))

    def _upstream_setup(self):
        """What upstream train.py does before its loop, for this model and batch size."""
        import torch.nn as nn
        from utils.loss import ComputeLoss  # upstream's module
        nl, hyp = self.model.model[-1].nl, dict(self.hyp)
        hyp["box"] *= 3 / nl
        hyp["cls"] *= 80 / 80 * 3 / nl
        hyp["obj"] *= (self.imgsz / 640) ** 2 * 3 / nl
        hyp["label_smoothing"] = 0.0
        self.model.nc, self.model.hyp, self.model.gr = 80, hyp, 1.0
        accumulate = max(round(64 / self.batch_size), 1)
        decay = hyp["weight_decay"] * self.batch_size * accumulate / 64
        bn_weights, weights, biases = [], [], []
        for m in self.model.modules():
            if isinstance(getattr(m, "bias", None), nn.Parameter):
                biases.append(m.bias)
            if isinstance(m, nn.BatchNorm2d):
                bn_weights.append(m.weight)
            elif isinstance(getattr(m, "weight", None), nn.Parameter):
                weights.append(m.weight)
        self.optimizer = self.torch.optim.SGD(bn_weights, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
        self.optimizer.add_param_group({"params": weights, "weight_decay": decay})
        self.optimizer.add_param_group({"params": biases})
        self.compute_loss = ComputeLoss(self.model)

    def step(self):
        """One iteration -> (seconds per phase, minor page faults, loss items, peak RSS in MiB)."""
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = [time.perf_counter()]
        pred = self.model(self.imgs)
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

    def profile(self, iterations):
        """The operators with the most self CPU time over `iterations` steps, as a table."""
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iterations):
                self.step()
        return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def measure(opt, cfg, imgsz, workdir):
    names = ["ours"] + (["baseline"] if opt.baseline else []) + (["upstream"] if opt.upstream else [])
    roots = {"ours": side_by_side.OURS, "baseline": side_by_side.OURS}
    if opt.upstream:
        roots["upstream"] = side_by_side.prepared_upstream(opt.upstream, workdir)
    kw = dict(cfg=cfg, imgsz=imgsz, batch_size=opt.batch_size, hyp=opt.hyp, threads=opt.threads,
              spin_limit=opt.spin_limit)
    sides = [side_by_side.Worker(n, roots[n], "train_step", "Step", upstream=n == "upstream", flavour=n, **kw)
             for n in names]
    imgs, targets = sides[0].call("fixed_batch", opt.data_dir)
    weights = sides[0].call("state_dict")
    for s in sides:
        s.call("start", imgs, targets, weights)
    print(f"{cfg:8s} {imgsz:5d} OpenMP waiting: " + "; ".join(f"{s.name} {s.call('openmp_setting')}" for s in sides))
    records = {s.name: [] for s in sides}
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(opt.busy)]
    try:
        side_by_side.alternate(sides, opt.warmup + opt.iters, lambda s, r: records[s.name].append(s.call("step")))
    finally:
        for p in busy:
            p.kill()
            p.wait()
    totals = {}
    for s in sides:
        rec = records[s.name][opt.warmup:]
        times = np.array([r[0] for r in rec])
        totals[s.name] = times.sum(1)
        phases = [float(np.median(times[:, k])) for k in range(len(PHASES))]
        faults, peak = int(np.median([r[1] for r in rec])), rec[-1][3]
        print(f"{cfg:8s} {imgsz:5d} {s.name:9s} " + " ".join(f"{p:8.3f}" for p in phases)
              + f" {float(np.median(totals[s.name])):8.3f} {faults:8d} {peak:8.0f}")
    ratio = None
    if "upstream" in totals:
        first = {n: np.array(records[n][0][2]) for n in names}
        differ = np.abs(first["ours"] - first["upstream"]).max() / np.abs(first["upstream"]).max()
        per_round = totals["ours"] / totals["upstream"]
        ratio = statistics.median(per_round)
        print(f"{cfg:8s} {imgsz:5d} ours / upstream time per iteration: {side_by_side.ratio_text(per_round, 3)}; "
              f"target <= {TARGET_RATIO}); "
              f"first-step loss items differ by {differ:.1e} relative")
    side_by_side.profile_and_close(
        sides, opt.profile and f"{cfg} {imgsz}, top operators by self CPU time over {opt.profile} iterations",
        opt.profile)
    return ratio


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    side_by_side.add_upstream_argument(ap)
    ap.add_argument("--cfg", nargs="+", default=["yolov5n"])
    ap.add_argument("--imgsz", nargs="+", type=int, default=[320])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10, help="timed iterations per side")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="run N CPU-bound processes beside the timed steps (a training step shares the CPU "
                         "with its dataloader workers)")
    ap.add_argument("--spin-limit", action="store_true",
                    help="ours: limit OpenMP spinning (utils.training.cpu_speed.limit_openmp_spinning) even where train.py "
                         "does not; it always does where train.py calls it")
    ap.add_argument("--data-dir", default=str(side_by_side.default_data_dir()))
    ap.add_argument("--hyp", default=str(REPO / "yolov5" / "data" / "hyps" / "hyp.scratch.yaml"))
    ap.add_argument("--baseline", action="store_true", help="also our model as built, without the CPU speed-ups")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="profile N more iterations of each side")
    opt = ap.parse_args()
    if opt.iters < 1 or opt.warmup < 0 or opt.busy < 0:
        ap.error("--iters must be >= 1, --warmup >= 0 and --busy >= 0")
    print(f"settings: batch {opt.batch_size}, fp32 CPU, {opt.warmup} warm-up + {opt.iters} timed iterations per "
          f"side, alternating, {opt.busy} busy processes beside them; {Path(opt.hyp).name}, data {opt.data_dir}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'model':8s} {'imgsz':>5s} {'side':9s} " + " ".join(f"{p:>8s}" for p in PHASES)
          + f" {'total':>8s} {'faults':>8s} {'peak MiB':>8s}   (median seconds per iteration)")
    with side_by_side.scratch_dir("train_step_") as tmp:
        for cfg in opt.cfg:
            for imgsz in opt.imgsz:
                measure(opt, cfg, imgsz, tmp)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not opt.upstream:
        side_by_side.say_ours_only("train_step.py")


if __name__ == "__main__":
    sys.exit(main())
