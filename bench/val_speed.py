"""Validation throughput, images per second of a whole validation run on the CPU: ours and upstream
YOLOv5's, side by side in one run.

Settings (val.py defaults): coco128 at 640, batch 16, conf 0.001, IoU 0.6, rect batches, pad 0.5,
default --workers (2 loader processes on 2 cores), fp32 on the CPU. The model is yolov5n built from
its yaml with the default initialisation (seeded); upstream builds its own Model and loads our
weights, and each side saves them as a checkpoint in its own format (fp16, as train.py writes it), so
both validate the same weights and must report the same metrics and detections: the script prints
both sides' metrics, the number of detections NMS kept and the sum of their confidences.

Each side runs its own val.run (ours: utils.evaluation.validator; upstream: val.py) in its own process, on its
own copy of the data folder. One untimed run per side first (label cache, first-call set-up); then
the sides take turns, `--rounds` times, alternating who goes first. A turn is one call of run(),
timed whole (checkpoint load, loader start, inference, NMS, metrics), which is what a user waits
for; each turn also prints run()'s own pre-process / inference / NMS split in ms per image. The
ratio ours / upstream images/s is the median of the per-round ratios. --profile prints, for each
side, the functions with the most own CPU time over one more run (cProfile with process time, so
other load on the machine does not count; the loader workers' decoding is not in it).
Without --upstream only our side is measured.

Run from the repository root:
  .venv/bin/python bench/val_speed.py --upstream ../yolov5-v6.0 [--rounds 3] [--profile]
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


class Validation:
    """One side's validation of a fixed checkpoint; `flavour` is 'ours' or 'upstream'."""

    def __init__(self, flavour, data_dir, workdir, cfg, imgsz, batch_size):
        import torch
        import yaml
        import models.yolo
        from models.yolo import Model
        self.torch, self.flavour, self.imgsz, self.batch_size = torch, flavour, imgsz, batch_size
        self.workdir = Path(workdir) / f"val-{flavour}"
        self.workdir.mkdir()
        names = yaml.safe_load((REPO / "yolov5" / "data" / "coco128.yaml").read_text())["names"]
        data_copy = self.workdir / "data"
        shutil.copytree(data_dir, data_copy, ignore=shutil.ignore_patterns("*.cache", "*.cache.npy"))
        self.data = self.workdir / "data.yaml"
        self.data.write_text(yaml.safe_dump({"path": str(data_copy), "train": "images/train2017",
                                             "val": "images/train2017", "nc": 80, "names": names}))
        torch.manual_seed(0)  # ours' weights are the ones used: upstream loads them in save()
        self.model = Model(str(Path(models.yolo.__file__).parent / f"{cfg}.yaml"), nc=80)
        self.model.names = names
        self.weights = self.workdir / f"{cfg}_init.pt"
        if flavour == "ours":
            import utils.evaluation.validator
            self.run_fn = utils.evaluation.validator.run
        else:
            import val
            self.run_fn = val.run

    def state_dict(self):
        return {k: v.clone() for k, v in self.model.state_dict().items()}

    def save(self, state_dict):
        """Load the shared weights and write them as this side's checkpoint."""
        import copy
        self.model.load_state_dict(state_dict)
        if self.flavour == "ours":
            from utils.io.checkpoint import build_checkpoint, save_checkpoint
            save_checkpoint(build_checkpoint(self.model), self.weights)
        else:  # what upstream train.py stores: the whole model in fp16
            self.model.nc = 80
            self.torch.save({"epoch": -1, "best_fitness": None, "model": copy.deepcopy(self.model).half(),
                             "ema": None, "updates": None, "optimizer": None, "wandb_id": None}, self.weights)
        del self.model
        return True

    def run(self):
        """One validation: (wall seconds, images, (P, R, mAP@.5, mAP@.5:.95), (pre, inf, NMS ms per image),
        (detections kept by NMS, sum of their confidences))."""
        from utils.callbacks import Callbacks  # the v6.0 path: both code bases have it
        detections = [0, 0.0]

        def count(pred, *_):  # on_val_image_end: both code bases call it with each image's detections
            detections[0] += len(pred)
            detections[1] += float(pred[:, 4].sum())

        callbacks = Callbacks()
        callbacks.register_action("on_val_image_end", "bench", count)
        t0 = time.perf_counter()
        (p, r, map50, map_, *_), _, speed = self.run_fn(
            str(self.data), weights=str(self.weights), batch_size=self.batch_size, imgsz=self.imgsz, device="cpu",
            plots=False, callbacks=callbacks, project=str(self.workdir / "runs"), name="exp")
        dt = time.perf_counter() - t0
        n = len(list((self.workdir / "data" / "images" / "train2017").iterdir()))
        return (dt, n, (float(p), float(r), float(map50), float(map_)), tuple(float(x) for x in speed[:3]),
                tuple(detections))

    def profile(self):
        """cProfile of one more run, top functions by own CPU time (process time, all threads)."""
        import cProfile
        import io
        import pstats
        pr = cProfile.Profile(time.process_time)
        pr.enable()
        self.run()
        pr.disable()
        out = io.StringIO()
        pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(18)
        return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    side_by_side.add_upstream_argument(ap)
    ap.add_argument("--data-dir", default=str(side_by_side.default_data_dir()))
    ap.add_argument("--cfg", default="yolov5n")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="timed runs per side, alternating")
    ap.add_argument("--profile", action="store_true", help="cProfile one more run of each side")
    opt = ap.parse_args()
    if opt.rounds < 1:
        ap.error("--rounds must be >= 1")
    side_by_side.check_data_dir(ap, opt.data_dir)

    with side_by_side.scratch_dir("val_speed_") as tmp:
        names, roots = side_by_side.side_roots(opt.upstream, tmp)
        sides = [side_by_side.Worker(n, roots[n], "val_speed", "Validation", upstream=n == "upstream", flavour=n,
                                     data_dir=opt.data_dir, workdir=tmp, cfg=opt.cfg, imgsz=opt.imgsz,
                                     batch_size=opt.batch_size)
                 for n in names]
        weights = sides[0].call("state_dict")
        for s in sides:
            s.call("save", weights)
        print(f"settings: {opt.data_dir}, {opt.cfg} default init (seeded), imgsz {opt.imgsz}, batch {opt.batch_size}, "
              f"conf 0.001, IoU 0.6, fp32 CPU; one untimed run then {opt.rounds} timed runs per side, alternating; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
        metrics, detections = {}, {}
        for s in sides:
            _, _, metrics[s.name], _, detections[s.name] = s.call("run")
        rates = {n: [] for n in names}

        def turn(side, r):
            dt, n, _, (pre, inf, nms), _ = side.call("run")
            rates[side.name].append(n / dt)
            print(f"round {r + 1} {side.name:8s}: {n} images in {dt:6.2f} s -> {n / dt:6.2f} images/s; per image "
                  f"pre-process {pre:.1f} ms, inference {inf:.1f} ms, NMS {nms:.1f} ms; load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)

        side_by_side.alternate(sides, opt.rounds, turn)
        for n in names:
            p, r, map50, map_ = metrics[n]
            print(f"{n:8s}: median {statistics.median(rates[n]):.2f} images/s (range {min(rates[n]):.2f}-"
                  f"{max(rates[n]):.2f}); P {p:.6f} R {r:.6f} mAP@.5 {map50:.6f} mAP@.5:.95 {map_:.6f}; "
                  f"{detections[n][0]} detections, confidence sum {detections[n][1]:.4f}")
        if opt.upstream:
            per_round = [a / b for a, b in zip(rates["ours"], rates["upstream"])]
            same = all(abs(a - b) <= 1e-6 for a, b in zip(metrics["ours"], metrics["upstream"]))
            print(f"ours / upstream images per second: {side_by_side.ratio_text(per_round)}; "
                  f"target >= {TARGET_RATIO}); metrics "
                  f"{'identical' if same else 'DIFFER'}")
        side_by_side.profile_and_close(
            sides, opt.profile and "one validation run in the benchmark process, top functions by own time")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not opt.upstream:
        side_by_side.say_ours_only("val_speed.py")


if __name__ == "__main__":
    sys.exit(main())
