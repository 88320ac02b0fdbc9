"""Validation throughput: images/s of `val.py` on coco128 at 640 (default-initialised yolov5n, CPU).

Settings mirror the upstream measurement quoted in issue 5: yolov5n built from yolov5n.yaml with the
default initialisation (seeded here), saved as a checkpoint and validated like
`python val.py --weights yolov5n_init.pt --data coco128 --img 640 --batch 16 --device cpu`
(conf 0.001, IoU 0.6, rect batches, pad 0.5, --workers 8 default -> 2 loader processes on 2 cores).
Upstream v6.0 validated coco128 at 7.6 and 7.4 images/s (about 118 ms inference and 6 ms NMS per
image) on the same kind of machine (2 CPU cores, torch 2.14.1); those figures are quoted from the
issue, not re-measured here.

images/s is counted over the validation loop (first batch requested to the metrics printed), as the
upstream figure is; the setup (checkpoint load, label cache read) is reported separately. Each run
also prints the pre-process / inference / NMS split in ms per image (val.py's Speed line) and the
process CPU time per image, which other load on a shared machine affects less than wall time.
Each run also times the plain (NCHW) layout right after, in the same process, to show what
channels_last brings (`--layouts channels_last` skips it). The machine is shared: the load average is printed before and after each run.

Run from the repository root:  .venv/bin/python bench/val_speed.py [--runs 2] [--layouts both]
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "yolov5"))

import psutil  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import utils.validator as validator  # noqa: E402
from models.yolo import Model  # noqa: E402
from utils.callbacks import Callbacks  # noqa: E402
from utils.checkpoint import build_checkpoint, save_checkpoint  # noqa: E402

UPSTREAM_IMAGES_PER_S = (7.6, 7.4)
TARGET_RATIO = 1.5


def _loop_timer():
    """Callbacks that record the wall and CPU time of the validation loop (on_val_start..on_val_end)."""
    marks = {}
    cb = Callbacks()
    cb.register_action("on_val_start", "bench", lambda: marks.update(t0=time.perf_counter(), c0=_cpu_s()))
    cb.register_action("on_val_end", "bench", lambda: marks.update(t1=time.perf_counter(), c1=_cpu_s()))
    return cb, marks


def _cpu_s():
    """CPU seconds of this process and its loader workers (user + system)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def main():
    with tempfile.TemporaryDirectory(prefix="val_speed_") as tmp:
        _bench(Path(tmp))


def _bench(tmp):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "coco128"))
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=8, help="val.py default (capped at CPUs and batch size)")
    ap.add_argument("--runs", type=int, default=2, help="timed runs (upstream reported 2)")
    ap.add_argument("--layouts", choices=("channels_last", "both"), default="both")
    opt = ap.parse_args()

    names = yaml.safe_load((REPO / "yolov5" / "data" / "coco128.yaml").read_text())["names"]
    data = tmp / "coco128.yaml"
    data.write_text(yaml.safe_dump({"path": opt.data_dir, "train": "images/train2017", "val": "images/train2017",
                                    "nc": 80, "names": names}))
    torch.manual_seed(0)
    model = Model(str(REPO / "yolov5" / "models" / "yolov5n.yaml"), nc=80)
    model.names = names
    weights = save_checkpoint(build_checkpoint(model), tmp / "yolov5n_init.pt")
    del model

    print(f"settings: coco128 ({opt.data_dir}), yolov5n default init, imgsz {opt.imgsz}, batch {opt.batch_size}, "
          f"--workers {opt.workers}, conf 0.001, IoU 0.6, CPU, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs")
    layouts = [True, False] if opt.layouts == "both" else [True]
    rates = {cl: [] for cl in layouts}
    for r in range(opt.runs):
        for cl in layouts:
            validator.CHANNELS_LAST_ON_CPU = cl
            load_before = os.getloadavg()[0]
            cb, marks = _loop_timer()
            t_start = time.perf_counter()
            (_, _, _, _, *_), _, (t_pre, t_inf, t_nms) = validator.run(
                str(data), weights=str(weights), batch_size=opt.batch_size, imgsz=opt.imgsz, device="cpu",
                workers=opt.workers, plots=False, callbacks=cb, project=tmp / "runs", name="exp")
            total = time.perf_counter() - t_start
            loop = marks["t1"] - marks["t0"]
            n = 128
            rate = n / loop
            rates[cl].append(rate)
            print(f"run {r + 1} [{'channels_last' if cl else 'NCHW'}]: {rate:.2f} images/s over the loop "
                  f"({loop:.1f} s for {n} images; setup {total - loop:.1f} s); per image: pre-process "
                  f"{t_pre:.1f} ms, inference {t_inf:.1f} ms, NMS {t_nms:.1f} ms; CPU "
                  f"{(marks['c1'] - marks['c0']) / n * 1e3:.0f} ms/image; load average {load_before:.2f} -> "
                  f"{os.getloadavg()[0]:.2f}")
    upstream = sum(UPSTREAM_IMAGES_PER_S) / len(UPSTREAM_IMAGES_PER_S)
    for cl in layouts:
        mean, best = sum(rates[cl]) / len(rates[cl]), max(rates[cl])
        print(f"{'channels_last' if cl else 'NCHW'}: mean {mean:.2f} images/s = {mean / upstream:.2f}x upstream "
              f"v6.0 (best run {best:.2f} = {best / upstream:.2f}x; upstream {UPSTREAM_IMAGES_PER_S[0]} and "
              f"{UPSTREAM_IMAGES_PER_S[1]} images/s; target {TARGET_RATIO}x = {TARGET_RATIO * upstream:.1f} images/s)")
    if len(layouts) == 2:
        ratio = [a / b for a, b in zip(rates[True], rates[False])]
        print(f"channels_last / NCHW, run by run: {', '.join(f'{x:.2f}' for x in ratio)}")


if __name__ == "__main__":
    main()
