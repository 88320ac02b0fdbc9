"""Host-synchronisation budget of the training loop, counted on the stand-in mlu device.

Every `.item()`, `.cpu()`, `.tolist()`, `bool(tensor)` or print of a device tensor makes the host
wait for the device; on a real accelerator each one drains the queue of launched work. The
stand-in device (tests/standin_mlu, host memory) counts them exactly. This script trains on it
(train.py itself, --iters N --skip, --workers 0, demo data generated in a temporary folder),
reads the counters at the start of every training batch, and reports the steady state:
iterations after --warmup, excluding the first iteration of each epoch (epoch start and end
work: loader start, logs), the last one of the run, and the iterations where the loop refreshes
its progress bar (utils/training/loop_monitor.py; here every --refresh-every iterations instead of about
once a second, so the count does not depend on the machine's speed). Refresh iterations are
reported on their own.

Prints per steady-state iteration: host->device copies, synchronize calls, bytes moved each way,
how many iterations were counted, the device->host copies per refresh, and as its last line:
    device->host copies per steady-state iteration: <number>

Run from the repository root:
    .venv/bin/python bench/sync_budget.py [--model yolov5n] [--img 128] [--batch 8] [--iters 40] [--refresh-every 4]
The first run builds the stand-in (a few minutes on 2 cores); later runs reuse the build.
"""
import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
YOLO_DIR = REPO_ROOT / "yolov5"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="yolov5n", help="model yaml name under yolov5/models (yolov5n, yolov5s, ...)")
    p.add_argument("--img", type=int, default=128, help="training image size (pixels)")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--iters", type=int, default=40, help="training iterations to run")
    p.add_argument("--warmup", type=int, default=5, help="first iterations left out of the count")
    p.add_argument("--refresh-every", type=int, default=4, help="iterations between progress refreshes")
    p.add_argument("--pyamp", action="store_true", help="train with fp16 autocast and GradScaler")
    args = p.parse_args(argv)
    if args.batch < 1 or args.img < 64 or args.warmup < 0 or args.refresh_every < 1:
        p.error("--batch must be >= 1, --img >= 64, --warmup >= 0 and --refresh-every >= 1")
    if args.iters < args.warmup + 4:
        p.error(f"--iters {args.iters} leaves too few iterations after --warmup {args.warmup}: use at least "
                f"{args.warmup + 4}")
    return args


class CounterLog:
    """Counter snapshots at the start of every training batch, and where epochs begin."""

    def __init__(self, read):
        self.read, self.snapshots, self.epoch_starts, self.refreshed = read, [], set(), set()

    def epoch_start(self, *args):
        self.epoch_starts.add(len(self.snapshots))

    def batch_start(self, *args):
        self.snapshots.append(self.read())

    def refresh(self):
        self.refreshed.add(len(self.snapshots) - 1)  # during the iteration that started last

    def steady_iterations(self, warmup, refreshes=False):
        """Per-iteration counter deltas: batch start to next batch start, same epoch, after warmup;
        the iterations without a progress refresh, or (refreshes=True) those with one."""
        out = []
        for i in range(warmup, len(self.snapshots) - 1):
            if i in self.epoch_starts or (i + 1) in self.epoch_starts or (i in self.refreshed) != refreshes:
                continue
            a, b = self.snapshots[i], self.snapshots[i + 1]
            out.append({k: b[k] - a[k] for k in a})
        return out


def main(argv=None):
    args = parse_args(argv)
    os.environ["YOLOV5_STANDIN_MLU"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path[:0] = [str(YOLO_DIR)]
    from utils.device.standin_device import load_standin_if_requested
    load_standin_if_requested()
    import standin_mlu
    import train
    from utils.training import loop_monitor
    from utils.training.callbacks import Callbacks
    from utils.data.demo_data import generate_demo_dataset

    log = CounterLog(standin_mlu.counters)
    loop_monitor.FIXED_INTERVAL = args.refresh_every
    refresh = loop_monitor.LoopMonitor.refresh

    def counted_refresh(monitor, *a, **k):
        log.refresh()
        return refresh(monitor, *a, **k)
    loop_monitor.LoopMonitor.refresh = counted_refresh
    callbacks = Callbacks()
    callbacks.register_action("on_train_epoch_start", "sync_budget", log.epoch_start)
    callbacks.register_action("on_train_batch_start", "sync_budget", log.batch_start)
    with tempfile.TemporaryDirectory(prefix="sync_budget_") as tmp:
        data = Path(tmp) / "demo"
        generate_demo_dataset(data, n_train=args.batch * 8, n_val=args.batch, imgsz=max(args.img, 128), seed=0)
        argv = ["--data", str(data / "demo.yaml"), "--cfg", f"{args.model}.yaml", "--weights", "", "--img",
                str(args.img), "--batch-size", str(args.batch), "--epochs", "1", "--iters", str(args.iters), "--skip",
                "--device", "mlu", "--workers", "0", "--noautoanchor", "--project", str(Path(tmp) / "runs")]
        train.main(argv + (["--pyamp"] if args.pyamp else []), callbacks=callbacks)
    steady, at_refresh = log.steady_iterations(args.warmup), log.steady_iterations(args.warmup, refreshes=True)
    if not steady:
        raise SystemExit("no steady-state iteration was counted: raise --iters")

    def per_iter(key, rows=steady):
        return statistics.mean(d[key] for d in rows)
    print(f"model {args.model}, image size {args.img}, batch {args.batch}, {'fp16 AMP' if args.pyamp else 'fp32'}, "
          f"{len(log.snapshots)} iterations run")
    print(f"progress refresh every {args.refresh_every} iterations; iterations with a refresh counted: "
          f"{len(at_refresh)}")
    if at_refresh:
        print(f"device->host copies per refresh iteration: {per_iter('d2h_copies', at_refresh):g}")
    print(f"iterations counted: {len(steady)}")
    print(f"host->device copies per steady-state iteration: {per_iter('h2d_copies'):g}")
    print(f"synchronize calls per steady-state iteration: {per_iter('synchronizes'):g}")
    print(f"bytes host->device per steady-state iteration: {per_iter('h2d_bytes'):g}")
    print(f"bytes device->host per steady-state iteration: {per_iter('d2h_bytes'):g}")
    print(f"scalar reads (.item(), bool) per steady-state iteration: {per_iter('scalar_reads'):g}")
    print(f"device->host copies per steady-state iteration: {per_iter('d2h_copies'):g}")


if __name__ == "__main__":
    main()
