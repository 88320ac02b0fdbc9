"""Shared pieces of the training tests: a tiny coco128 data yaml, in-process and CLI train.py runs.

Runs are tiny (yolov5n, 64-128 px, a few batches of 8-16 real coco128 images) and use one torch
thread: on this shared 2-core machine, torch's default of two OpenMP threads per process turns
a 30 ms step into seconds whenever another process is busy.
"""
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
YOLO_DIR = REPO_ROOT / "yolov5"
COCO_NAMES = yaml.safe_load((YOLO_DIR / "data" / "coco128.yaml").read_text())["names"]


def make_data_yaml(tmp_path, real_images_dir, n=8, name="data", start=0):
    """A data yaml over the first `n` real images (tests/data/coco16) (train = val), listed in a txt file in tmp_path."""
    images = sorted((Path(real_images_dir) / "images" / "train2017").glob("*.jpg"))[start:start + n]
    assert len(images) == n, f"the real image set has only {len(images)} images from index {start}"
    listing = Path(tmp_path) / f"{name}.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    data = Path(tmp_path) / f"{name}.yaml"
    data.write_text(yaml.safe_dump({"train": str(listing), "val": str(listing), "nc": 80, "names": COCO_NAMES}))
    return data


def train_args(data, project, name="exp", img=64, batch=4, epochs=1, *extra, cfg="yolov5n.yaml", weights=""):
    """Command-line arguments of a tiny CPU run."""
    args = ["--data", str(data), "--weights", weights, "--img", str(img), "--batch-size", str(batch),
            "--epochs", str(epochs), "--device", "cpu", "--workers", "0", "--project", str(project), "--name", name]
    if cfg:
        args += ["--cfg", cfg]
    return args + [str(x) for x in extra]


def train_in_process(argv, callbacks=None):
    """train.main(argv) in this process; SystemExit (exit codes) propagates to the caller.

    train.py configures the 'yolov5' logger for a console; it is put back afterwards so other
    tests (caplog) see the logger as they expect."""
    import logging

    import train
    logger = logging.getLogger("yolov5")
    before = (list(logger.handlers), logger.propagate, logger.level)
    try:
        return train.main(argv, callbacks=callbacks)
    finally:
        logger.handlers[:], logger.propagate, logger.level = before


def cli_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def train_cli(args, cwd=YOLO_DIR, timeout=180, env=None):
    """`python train.py args` as a subprocess (from yolov5/ by default); CompletedProcess with str output,
    decoded without newline translation so carriage returns stay visible."""
    run = subprocess.run([sys.executable, str(YOLO_DIR / "train.py"), *map(str, args)], cwd=cwd,
                         env=env or cli_env(), capture_output=True, timeout=timeout)
    run.stdout, run.stderr = run.stdout.decode(errors="replace"), run.stderr.decode(errors="replace")
    return run


# `python RANK_LAUNCHER PORT script args...` starts the two ranks of a gloo run with torchrun's variables
# and reports each rank's exit code as it comes ("RANK r EXIT code"), then "RANK EXIT CODES c0 c1". Started
# in a new session, it and the ranks form one process group; unlike torchrun (which exits 1 on a SIGTERM
# it receives) it lives through the group's stop signals, so a test sees every rank's own exit code.
RANK_LAUNCHER = textwrap.dedent("""
    import os, signal, subprocess, sys
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *args: None)  # a handler, not SIG_IGN: the ranks get the default back
    port, argv = sys.argv[1], sys.argv[2:]
    ranks = [subprocess.Popen([sys.executable] + argv, env=dict(
        os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2")) for r in (0, 1)]
    codes = []
    for r, p in enumerate(ranks):
        codes.append(p.wait())
        print(f"RANK {r} EXIT {codes[-1]}", flush=True)
    print("RANK EXIT CODES", *codes, flush=True)
""")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OneThread:
    """Context: torch limited to one intra-op thread (restored afterwards)."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)
