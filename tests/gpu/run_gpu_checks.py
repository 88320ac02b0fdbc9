"""GPU checks: yolov5s on coco128 with CUDA fp32 and with AMP, validated, benchmarked, tabulated.

On a CUDA machine, from the repository root (about 2-3 minutes on one H100, start-up included):

    python tests/gpu/run_gpu_checks.py [--data-dir ../shared/data/coco128] [--out runs/gpu_checks]

A tiny CPU rehearsal (what tests/test_gpu_checks_script.py runs):

    python tests/gpu/run_gpu_checks.py --device cpu --quick

What it does, in order:
1. loss parity: one coco128 batch through a freshly initialised model (same weights everywhere):
   the loss items (box, obj, cls) on the device in fp32 must match CPU fp32, and under the device's
   autocast they must match the device's fp32 (fp16 on CUDA, bf16 on CPU);
2. two trainings with train.py (each in its own process, BENCHMARK_LOG set): fp32 and AMP, a few
   epochs from scratch, validated at the end (train.py then re-validates best.pt);
3. a table: throughput and batch time from the benchmark log line, peak device memory, the final
   epoch's training losses, validation mAP; then every failed check.
Exit status: 0 when every check passes, 1 when one fails, 2 for bad input (no CUDA, no data).

train.py has no switch for fp32 on CUDA (upstream v6.0 always uses AMP there); for the fp32 run the
child process overrides `Device.amp_default` before calling train.main.
"""
import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
YOLO = REPO / "yolov5"
CHILD_FLAG = "--train-child"
PRECISIONS = ("fp32", "amp")
# |a - b| <= RTOL * |b| + ATOL per loss item; device fp32 vs CPU allows for TF32 convolutions.
PARITY_TOL = {"device fp32 vs CPU fp32": (1e-2, 1e-4), "fp16": (2e-2, 1e-4), "bf16": (5e-2, 1e-4)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="device to check [cuda]")
    p.add_argument("--quick", action="store_true", help="tiny settings (CPU rehearsal): 24 images at 128 px")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "coco128"),
                   help="coco128 folder with images/train2017 and labels/train2017")
    p.add_argument("--out", default=str(REPO / "runs" / "gpu_checks"), help="output folder")
    p.add_argument("--cfg", default="yolov5s.yaml", help="model yaml [yolov5s.yaml]")
    p.add_argument("--img", type=int, help="image size [640; quick 128]")
    p.add_argument("--batch", type=int, help="batch size [16; quick 8]")
    p.add_argument("--images", type=int, help="train/val on the first N images [all; quick 24]")
    p.add_argument("--epochs", type=int, help="epochs per run [3; quick 1]")
    p.add_argument("--warmup", type=int, help="iterations dropped from timing [one epoch; quick 1]")
    p.add_argument("--workers", type=int, help="dataloader workers [8; quick 0]")
    p.add_argument("--timeout", type=int, default=240, help="seconds allowed per training run [240]")
    return p.parse_args(argv)


def settings(args, n_available):
    """Run settings from the options, the --quick defaults and the number of images available."""
    def pick(value, quick, full):
        return value if value is not None else (quick if args.quick else full)

    s = SimpleNamespace(img=pick(args.img, 128, 640), batch=pick(args.batch, 8, 16),
                        images=min(pick(args.images, 24, n_available), n_available),
                        epochs=pick(args.epochs, 1, 3), workers=pick(args.workers, 0, 8),
                        device=args.device, cfg=args.cfg)
    if min(s.img, s.batch, s.images, s.epochs) < 1 or s.workers < 0:
        raise ValueError("--img, --batch, --images and --epochs must be at least 1, --workers at least 0")
    s.batches = math.ceil(s.images / s.batch)  # per epoch
    s.iters = s.epochs * s.batches  # --iters ends with the last epoch, so that epoch is validated
    s.warmup = pick(args.warmup, 1, s.batches)
    if not 0 <= s.warmup < s.iters:
        raise ValueError(f"{s.iters} iterations with {s.warmup} warm-up leave nothing to time; "
                         f"use more --epochs or a smaller --warmup")
    return s


def prepare_data(data_dir, out, n_images):
    """A data yaml over the first n images (train = val, as coco128.yaml), written under `out`."""
    import yaml
    images = sorted((data_dir / "images" / "train2017").glob("*.jpg"))[:n_images]
    listing = out / "images.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    names = yaml.safe_load((YOLO / "data" / "coco128.yaml").read_text())["names"]
    data = out / "coco128_checks.yaml"
    data.write_text(yaml.safe_dump({"path": str(out), "train": str(listing), "val": str(listing),
                                    "nc": len(names), "names": names}, sort_keys=False))
    return data


# ---------------------------------------------------------------------------------------------- parity
def loss_parity(s, data_yaml):
    """Rows (name, [box, obj, cls], reference items, passed) for one batch, same initial weights."""
    import copy
    import torch
    from models.yolo import Model
    from utils.data.data_config import load_data_config
    from utils.device.devices import select_device
    from utils.data.loaders import create_dataloader
    from utils.training.loss import ComputeLoss, scale_loss_gains
    from utils.training.train_setup import load_hyp

    dev, cpu = select_device(s.device, log=False), select_device("cpu", log=False)
    dev.set_current()
    hyp = load_hyp(str(YOLO / "data" / "hyps" / "hyp.scratch.yaml"))
    data = load_data_config(str(data_yaml))
    torch.manual_seed(0)
    model = Model(str(YOLO / "models" / s.cfg), ch=3, nc=int(data["nc"]))
    model.nc = int(data["nc"])
    model.hyp = scale_loss_gains(hyp, model.model[-1].nl, model.nc, s.img)
    loader, _ = create_dataloader(data["train"], s.img, s.batch, int(model.stride.max()), hyp=hyp,
                                  augment=False, workers=0, prefix="parity: ", nc=model.nc)
    imgs, targets, _, _ = next(iter(loader))
    imgs = imgs.float() / 255

    def items(device, amp):
        m = device.move(copy.deepcopy(model)).train()
        with device.autocast(enabled=amp):
            loss, parts = ComputeLoss(m)(m(device.move(imgs)), device.move(targets))
        if not torch.isfinite(loss).all():
            return [float("nan")] * 3
        return [float(x) for x in parts.detach().float().cpu()]

    def close(a, b, tol):
        rtol, atol = tol
        return all(abs(x - y) <= rtol * abs(y) + atol for x, y in zip(a, b))

    rows = []
    reference = items(cpu, False)
    rows.append(("CPU fp32 (reference)", reference, None, all(math.isfinite(x) and x > 0 for x in reference)))
    dev_fp32 = reference
    if dev.kind != "cpu":
        dev_fp32 = items(dev, False)
        rows.append((f"{dev.kind} fp32", dev_fp32, reference,
                     close(dev_fp32, reference, PARITY_TOL["device fp32 vs CPU fp32"])))
    kind = "fp16" if dev.amp_dtype() == torch.float16 else "bf16"
    amp = items(dev, True)
    rows.append((f"{dev.kind} autocast {kind}", amp, dev_fp32, close(amp, dev_fp32, PARITY_TOL[kind])))
    return rows


# -------------------------------------------------------------------------------------------- training
def child_main(argv):
    """`--train-child PRECISION -- train.py args`: one training in this process."""
    precision, train_argv = argv[0], argv[2:]
    sys.path.insert(0, str(YOLO))
    os.chdir(YOLO)
    import train
    from utils.device.devices import Device
    if precision == "fp32":
        Device.amp_default = lambda self, pyamp=False: bool(pyamp)  # CUDA's AMP off; CPU/MLU unchanged
    train.main(train_argv)


def read_records(log):
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []


def train_once(precision, s, data_yaml, out, timeout):
    run_dir = out / precision
    log = out / "benchmark_log"
    before = len(read_records(log))
    argv = ["--data", str(data_yaml), "--cfg", s.cfg, "--weights", "", "--img", str(s.img),
            "--batch-size", str(s.batch), "--epochs", str(s.epochs), "--iters", str(s.iters), "--noval",
            "--device", s.device, "--workers", str(s.workers), "--project", str(out), "--name", precision,
            "--exist-ok", "--seed", "0"]
    if precision == "amp" and s.device != "cuda":
        argv.append("--pyamp")  # CUDA has AMP on by default (upstream)
    env = dict(os.environ, BENCHMARK_LOG=str(log), MLU_ADAPTIVE_STRATEGY_COUNT=str(s.warmup),
               DATASET_NAME="coco128", PYTHONUNBUFFERED="1")
    console = out / f"train_{precision}.log"
    t0 = time.time()
    with open(console, "w") as f:
        try:
            rc = subprocess.run([sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, precision, "--", *argv],
                                stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    records = read_records(log)
    text = console.read_text(errors="replace")
    final = re.search(r"Final mAP@0.5 ([\d.]+), mAP@0.5:0.95 ([\d.]+)", text)
    return SimpleNamespace(precision=precision, rc=rc, wall=time.time() - t0, console=console, run_dir=run_dir,
                           record=records[-1] if len(records) > before else None,
                           rows=read_results(run_dir / "results.csv"),
                           final=tuple(map(float, final.groups())) if final else None,
                           tail="\n".join(text.splitlines()[-15:]))


def read_results(path):
    if not path.is_file():
        return []
    with open(path) as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def check_run(run, s):
    """Failed checks of one training run (empty when it passed)."""
    if run.rc != 0:
        return [f"{run.precision}: train.py ended with {run.rc} (see {run.console}):\n{run.tail}"]
    bad, rec = [], run.record
    if rec is None:
        return [f"{run.precision}: no benchmark log line was written"]
    if rec.get("status") != "ok":
        bad.append(f"{run.precision}: benchmark status {rec.get('status')!r}")
    if rec.get("precision") != run.precision:
        bad.append(f"{run.precision}: log says precision {rec.get('precision')!r}")
    if rec.get("iterations") != s.iters - s.warmup or rec.get("warmup_iterations") != s.warmup:
        bad.append(f"{run.precision}: {rec.get('iterations')} timed + {rec.get('warmup_iterations')} warm-up "
                   f"iterations logged, expected {s.iters - s.warmup} + {s.warmup}")
    avg = rec.get("batch_time_avg")
    if not isinstance(avg, (int, float)) or avg <= 0 or \
            rec.get("throughput") != round(rec["batch_size"] * rec["cards"] / avg, 2):
        bad.append(f"{run.precision}: throughput {rec.get('throughput')} is not batch x cards / {avg}")
    if s.device != "cpu" and not (isinstance(rec.get("peak_memory_mb"), (int, float)) and rec["peak_memory_mb"] > 0):
        bad.append(f"{run.precision}: no peak device memory in the log ({rec.get('peak_memory_mb')!r})")
    if len(run.rows) != s.epochs:
        bad.append(f"{run.precision}: results.csv has {len(run.rows)} rows, expected {s.epochs}")
    elif run.rows:
        last = run.rows[-1]
        train = [last[f"train/{k}_loss"] for k in ("box", "obj", "cls")]
        val = [last[f"val/{k}_loss"] for k in ("box", "obj", "cls")]
        if not all(math.isfinite(x) and x > 0 for x in train):
            bad.append(f"{run.precision}: training losses {train}")
        if not all(math.isfinite(x) and x > 0 for x in val):
            bad.append(f"{run.precision}: validation losses {val} (did the final epoch validate?)")
        if not all(0 <= last[k] <= 1 for k in ("metrics/mAP_0.5", "metrics/mAP_0.5:0.95")):
            bad.append(f"{run.precision}: mAP out of range")
    for name in ("last.pt", "best.pt"):
        if not (run.run_dir / "weights" / name).is_file():
            bad.append(f"{run.precision}: weights/{name} missing")
    if run.final is None:
        bad.append(f"{run.precision}: no 'Final mAP' line: best.pt was not re-validated")
    return bad


# ----------------------------------------------------------------------------------------------- table
def fmt(x, spec=".4g"):
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


def table(s, parity, runs, env_line):
    lines = [f"## GPU checks: {s.cfg.replace('.yaml', '')}, {s.images} coco128 images at {s.img} px, batch {s.batch}, "
             f"{s.epochs} epoch(s) = {s.iters} iterations ({s.warmup} warm-up)", "", env_line, "",
             "| loss parity (one batch) | box | obj | cls | compared with | ok |", "|---|---|---|---|---|---|"]
    for name, got, ref, ok in parity:
        lines.append(f"| {name} | " + " | ".join(fmt(x, ".6f") for x in got) +
                     f" | {'-' if ref is None else ', '.join(fmt(x, '.6f') for x in ref)} | {'yes' if ok else 'NO'} |")
    lines += ["", "| run | throughput (img/s) | batch time (s) | peak memory (MB) | train box/obj/cls | "
              "mAP@0.5 | mAP@0.5:0.95 | best.pt mAP@0.5 | wall (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rec, last = r.record or {}, (r.rows[-1] if r.rows else {})
        train = "/".join(fmt(last.get(f"train/{k}_loss", "-"), ".4f") for k in ("box", "obj", "cls"))
        lines.append(f"| {s.device} {r.precision} | {fmt(rec.get('throughput', '-'))} | "
                     f"{fmt(rec.get('batch_time_avg', '-'))} | {fmt(rec.get('peak_memory_mb', '-'))} | {train} | "
                     f"{fmt(last.get('metrics/mAP_0.5', '-'))} | {fmt(last.get('metrics/mAP_0.5:0.95', '-'))} | "
                     f"{fmt(r.final[0]) if r.final else '-'} | {r.wall:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_FLAG]:
        return child_main(argv[1:])
    args = parse_args(argv)
    sys.path.insert(0, str(YOLO))
    import torch
    from utils.device.devices import select_device
    from utils.errors import UserError
    data_dir, out = Path(args.data_dir).resolve(), Path(args.out).resolve()
    images = sorted((data_dir / "images" / "train2017").glob("*.jpg"))
    if not images or not (data_dir / "labels" / "train2017").is_dir():
        print(f"ERROR: no coco128 at {data_dir} (needs images/train2017/*.jpg and labels/train2017); "
              f"give --data-dir", file=sys.stderr)
        return 2
    try:
        dev = select_device(args.device, log=False)
    except UserError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    try:
        s = settings(args, len(images))
    except ValueError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    log = out / "benchmark_log"
    if log.exists():
        log.unlink()  # this run's lines only
    data_yaml = prepare_data(data_dir, out, s.images)
    env_line = (f"torch {torch.__version__}, {dev.name}" + (f", CUDA {torch.version.cuda}, cuDNN "
                f"{torch.backends.cudnn.version()}" if dev.kind == "cuda" else "") + f", {os.cpu_count()} CPUs")
    t0 = time.time()
    print(f"[gpu checks] {env_line}; loss parity...", flush=True)
    parity = loss_parity(s, data_yaml)
    runs = []
    for precision in PRECISIONS:
        print(f"[gpu checks] training {precision} ({s.iters} iterations)...", flush=True)
        runs.append(train_once(precision, s, data_yaml, out, args.timeout))
    failures = [f"loss parity: {name} items {got} vs {ref}" for name, got, ref, ok in parity if not ok]
    for run in runs:
        failures += check_run(run, s)
    report = table(s, parity, runs, env_line) + f"\n\nTotal {time.time() - t0:.0f} s; benchmark log {log}\n"
    report += ("\nFAILED:\n" + "\n".join(f"- {f}" for f in failures)) if failures else "\nALL CHECKS PASSED"
    print("\n" + report, flush=True)
    (out / "gpu_checks.md").write_text(report + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
