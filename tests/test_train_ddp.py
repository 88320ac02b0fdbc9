"""torchrun with 2 CPU processes (gloo): the batch is split, gradients are averaged, only rank 0 writes.

A small wrapper script runs train.main with a callback that records, per rank, the images each
batch held and a hash of the model's parameters at the end; the test compares the ranks.
"""
import json
import subprocess
import sys
import textwrap
import time

from train_helpers import YOLO_DIR, cli_env, make_data_yaml, train_args
from utils.io.checkpoint import load_checkpoint
from utils.training.results_log import read_results

WRAPPER = textwrap.dedent("""
    import hashlib, json, os, sys
    sys.path.insert(0, {yolo_dir!r})
    import train
    from utils.training.callbacks import Callbacks
    from utils.device.parallel import de_parallel

    rank, seen = int(os.environ["RANK"]), {{"batches": []}}
    callbacks = Callbacks()

    def batch_end(ni, model, imgs, targets, paths, plots, sync_bn):
        seen["model"] = model
        seen["batches"].append([ni, [os.path.basename(p) for p in paths]])

    def train_end(*args):
        params = de_parallel(seen["model"]).named_parameters()
        digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for _, p in params)).hexdigest()
        with open(os.path.join({out_dir!r}, f"rank{{rank}}.json"), "w") as f:
            json.dump({{"params": digest, "batches": seen["batches"],
                       "ddp": type(seen["model"]).__name__}}, f)

    callbacks.register_action("on_train_batch_end", "record", batch_end)
    callbacks.register_action("on_train_end", "record", train_end)
    train.main(sys.argv[1:], callbacks=callbacks)
""")


def test_two_rank_gloo_training(tmp_path, real_images_dir):
    data = make_data_yaml(tmp_path, real_images_dir, n=16)
    script = tmp_path / "ddp_train.py"
    script.write_text(WRAPPER.format(yolo_dir=str(YOLO_DIR), out_dir=str(tmp_path)))
    args = train_args(data, tmp_path / "runs", "ddp", 64, 8, 3, "--iters", "3", "--noautoanchor")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), *args], cwd=YOLO_DIR, env=cli_env(), capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-4000:])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["ddp"] for r in ranks] == ["DistributedDataParallel"] * 2
    assert ranks[0]["params"] == ranks[1]["params"]  # gradients averaged: identical weights
    for r in ranks:  # 16 images, 4 per rank per batch: 2 batches per epoch, 3 iterations in all
        assert [ni for ni, _ in r["batches"]] == [0, 1, 2] and all(len(p) == 4 for _, p in r["batches"])
    epoch0 = [{name for _, paths in r["batches"][:2] for name in paths} for r in ranks]
    assert len(epoch0[0]) == len(epoch0[1]) == 8 and not epoch0[0] & epoch0[1]  # each rank half the data

    # only rank 0 wrote: one run directory, one results row per epoch, finished checkpoints
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"]
    assert list(read_results(tmp_path / "runs" / "ddp" / "results.csv")[1][:, 0]) == [0, 1]
    last = load_checkpoint(tmp_path / "runs" / "ddp" / "weights" / "last.pt")
    assert last["epoch"] == -1 and last["model"].nc == 80
    assert run.stdout.count("Starting training for 3 epochs") == 1  # rank 1 logs warnings only


PATIENCE_WRAPPER = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {yolo_dir!r})
    import train
    import utils.training.trainer

    falling = iter([0.5, 0.4, 0.3, 0.2, 0.1])  # fitness gets worse every epoch: epoch 0 stays the best
    utils.training.trainer.fitness = lambda x: np.array([next(falling)])
    train.main(sys.argv[1:])
""")


def test_two_rank_patience_stops_every_rank(tmp_path, real_images_dir):
    """--patience 1 under DDP: rank 0's early-stopping verdict ends the run on both ranks after epoch 1
    (before, DDP ignored --patience and trained all 5 epochs)."""
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    script = tmp_path / "ddp_patience.py"
    script.write_text(PATIENCE_WRAPPER.format(yolo_dir=str(YOLO_DIR)))
    args = train_args(data, tmp_path / "runs", "pat", 64, 8, 5, "--patience", "1", "--noautoanchor")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), *args], cwd=YOLO_DIR, env=cli_env(), capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-4000:])
    assert "Stopping training early" in run.stdout + run.stderr
    assert list(read_results(tmp_path / "runs" / "pat" / "results.csv")[1][:, 0]) == [0, 1]


DYING_RANK_WRAPPER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {yolo_dir!r})
    import train
    from utils.training.callbacks import Callbacks

    def die(ni, *args):
        if os.environ["RANK"] == "1" and ni == 1:  # rank 1 vanishes in the middle of epoch 0
            os._exit(3)

    callbacks = Callbacks()
    callbacks.register_action("on_train_batch_end", "die", die)
    train.main(sys.argv[1:], callbacks=callbacks)
""")


def test_dead_rank_makes_the_other_exit_with_a_clear_message(tmp_path, real_images_dir):
    data = make_data_yaml(tmp_path, real_images_dir, n=16)
    script = tmp_path / "ddp_dies.py"
    script.write_text(DYING_RANK_WRAPPER.format(yolo_dir=str(YOLO_DIR)))
    args = train_args(data, tmp_path / "runs", "dead", 64, 8, 3, "--noautoanchor")
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), *args], cwd=YOLO_DIR, env=cli_env(), capture_output=True, text=True,
                         timeout=240)
    took = time.monotonic() - started
    out = run.stdout + run.stderr
    assert run.returncode != 0 and took < 120, out[-3000:]
    errors = [line for line in out.splitlines() if "ERROR: rank 0 of 2: another process" in line]
    assert len(errors) == 1 and "--resume" in errors[0], out[-3000:]
    assert "[rank0]: Traceback" not in out, out[-3000:]


STOP_AFTER_EPOCH0 = textwrap.dedent("""
    import sys
    sys.path.insert(0, {yolo_dir!r})
    import train
    from utils.training.callbacks import Callbacks

    callbacks = Callbacks()

    def stop(values, epoch, *args):
        callbacks.stop_training = epoch == 0  # rank 0 validates; the ranks agree on the stop
    callbacks.register_action("on_fit_epoch_end", "stop", stop)
    train.main(sys.argv[1:], callbacks=callbacks)
""")


def _two_nodes(script, args, port):
    """torchrun on two 'nodes' of one process each, rendezvous on 127.0.0.1 (gloo)."""
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(i), "--master_addr", "127.0.0.1", "--master_port", str(port),
                               str(script), *map(str, args)], cwd=YOLO_DIR, env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    return [node.returncode for node in nodes], outputs


def test_two_node_training_stops_and_resumes(tmp_path, real_images_dir):
    """Every node has a local rank 0: only global rank 0 may write the run directory and log."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = make_data_yaml(tmp_path, real_images_dir, n=16)
    script = tmp_path / "stop_after_epoch0.py"
    script.write_text(STOP_AFTER_EPOCH0.format(yolo_dir=str(YOLO_DIR)))
    codes, outs = _two_nodes(script, train_args(data, tmp_path / "runs", "mn", 64, 8, 2, "--noautoanchor"), port)
    assert codes == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "Stopped early (callback)" in outs[0] and "Starting training" not in outs[1]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["mn"]  # node 1 made no run directory
    last = tmp_path / "runs" / "mn" / "weights" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 0 and "resume_state" in load_checkpoint(last)

    codes, outs = _two_nodes(YOLO_DIR / "train.py", ["--resume", last], port + 1 if port < 65535 else port - 1)
    assert codes == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "Resuming training from" in outs[0]
    assert list(read_results(tmp_path / "runs" / "mn" / "results.csv")[1][:, 0]) == [0, 1]
    final = load_checkpoint(last)
    assert final["epoch"] == -1 and "resume_state" not in final


HANGING_RANK_WRAPPER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {yolo_dir!r})
    import train
    from utils.training.callbacks import Callbacks

    def hang(ni, *args):
        if os.environ["RANK"] == "1" and ni == 1:  # rank 1 stops answering in the middle of epoch 0
            print("RANK 1 HANGS", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)

    callbacks = Callbacks()
    callbacks.register_action("on_train_batch_end", "hang", hang)
    train.main(sys.argv[1:], callbacks=callbacks)
""")


def test_hung_rank_makes_the_other_exit_after_the_collective_timeout(tmp_path, real_images_dir):
    """YOLOV5_DDP_TIMEOUT=4: rank 1 is stopped (SIGSTOP) after its second batch; rank 0 gives up in its next
    collective after about 4 s with one clear line, instead of gloo's default 30 minutes."""
    import os
    import signal
    import threading

    from train_helpers import RANK_LAUNCHER, free_port
    data = make_data_yaml(tmp_path, real_images_dir, n=16)
    script = tmp_path / "ddp_hangs.py"
    script.write_text(HANGING_RANK_WRAPPER.format(yolo_dir=str(YOLO_DIR)))
    launcher = tmp_path / "launch_ranks.py"
    launcher.write_text(RANK_LAUNCHER)
    args = train_args(data, tmp_path / "runs", "hung", 64, 4, 1, "--noautoanchor")
    proc = subprocess.Popen([sys.executable, str(launcher), str(free_port()), str(script), *args], cwd=YOLO_DIR,
                            env=cli_env(YOLOV5_DDP_TIMEOUT=4), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, hung, took = [], None, None
    watchdog = threading.Timer(90, os.killpg, (proc.pid, signal.SIGKILL))  # without a timeout: gloo's 30 min
    watchdog.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("RANK 1 HANGS"):
                hung = time.monotonic()
            if line.startswith("RANK 0 EXIT"):
                took = time.monotonic() - hung
                break
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # rank 1 is still stopped
        proc.wait(30)
    out = "".join(lines)
    assert lines[-1] == "RANK 0 EXIT 1\n" and 4 <= took < 60, (took, out[-3000:])
    errors = [line for line in out.splitlines() if "ERROR: rank 0 of 2: another process" in line]
    assert len(errors) == 1 and "stopped answering" in errors[0] and "--resume" in errors[0], out[-3000:]
    assert "Traceback" not in out, out[-3000:]


def test_collective_timeout_setting():
    import pytest

    from utils.training.ddp_failures import collective_timeout
    from utils.errors import UserError
    assert collective_timeout({}) is None and collective_timeout({"YOLOV5_DDP_TIMEOUT": " "}) is None
    assert collective_timeout({"YOLOV5_DDP_TIMEOUT": "600"}) == 600.0
    for bad in ("0", "-5", "ten", "inf", "nan"):
        with pytest.raises(UserError, match="YOLOV5_DDP_TIMEOUT=.* is not a number of seconds above 0"):
            collective_timeout({"YOLOV5_DDP_TIMEOUT": bad})
