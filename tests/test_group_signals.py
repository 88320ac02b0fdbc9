"""Stop signals sent to the whole process group (Slurm, torchrun, `kill -TERM -<pgid>`) while
dataloader workers run: the trainer stops cleanly (exit 143 / 130, resumable last.pt), no worker
traceback, and a process that exits with workers still alive does not hang; in one process and
with 2 DDP ranks (gloo), where the ranks also leave a running validation together."""
import os
import signal
import subprocess
import sys
import textwrap
import time

from train_helpers import RANK_LAUNCHER, YOLO_DIR, cli_env, free_port, make_data_yaml, train_args
from utils.io.checkpoint import load_checkpoint
from utils.training.results_log import read_results
from utils.training.train_state import resume_start_epoch

# train.main with a callback that prints a marker at a chosen hook and pauses there, so the test can
# signal the group while the run is in that phase (training batch or validation batch).
WRAPPER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {yolo_dir!r})
    import train
    from utils.training.callbacks import Callbacks

    hook = os.environ["MARK_HOOK"]
    callbacks, calls = Callbacks(), []

    def mark(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            print(f"MARK {{hook}}", flush=True)
            time.sleep(3)  # the signal lands here, with the workers alive

    callbacks.register_action(hook, "mark", mark)
    train.main(sys.argv[1:], callbacks=callbacks)
""")


def with_workers(args, n):
    args = list(args)
    args[args.index("--workers") + 1] = str(n)
    return args


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except FileNotFoundError:  # it has just exited
        return []


def _descendants(pid):
    return [d for c in _children(pid) for d in [c, *_descendants(c)]]


def _run_and_signal_group(script, args, hook, sig, timeout=240):
    """Start the wrapper in a new session; at the marker, signal its whole process group.
    Returns (exit code, output, seconds from signal to exit, processes below it at the signal)."""
    proc = subprocess.Popen([sys.executable, str(script), *map(str, args)], cwd=YOLO_DIR, start_new_session=True,
                            env=cli_env(MARK_HOOK=hook), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, workers, sent = [], [], None
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(f"MARK {hook}"):
                workers = _descendants(proc.pid)
                sent = time.monotonic()
                os.killpg(proc.pid, sig)
                break
        rest, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    took = time.monotonic() - sent if sent else None
    return proc.returncode, "".join(seen) + rest, took, workers


def test_group_signals_in_training_and_validation_with_workers(tmp_path, real_images_dir):
    """SIGTERM to the group during a training batch -> 143; SIGINT to the group during validation ->
    validation abandoned, 130; both leave a resumable last.pt and the resumed run finishes."""
    data = make_data_yaml(tmp_path, real_images_dir, n=16)
    script = tmp_path / "marked_train.py"
    script.write_text(WRAPPER.format(yolo_dir=str(YOLO_DIR)))
    last = tmp_path / "tr" / "weights" / "last.pt"

    run_args = with_workers(train_args(data, tmp_path, "tr", 64, 4, 1, "--noautoanchor"), 2)
    code, out, took, workers = _run_and_signal_group(script, run_args, "on_train_batch_end", signal.SIGTERM)
    assert len(workers) >= 2, out[-3000:]  # the group held the loader workers
    assert code == 143, out[-4000:]
    assert "DataLoader worker" not in out and "Traceback" not in out, out[-4000:]
    assert "SIGTERM received" in out and took < 20
    ckpt = load_checkpoint(last)
    state = ckpt["resume_state"]
    assert ckpt["epoch"] == -1 and state["interrupted"] and state["iterations_done"] == 2  # batch 1 runs, then it stops
    assert resume_start_epoch(ckpt, last, 1) == 0

    # SIGINT (Ctrl-C in a terminal reaches the whole foreground group) while validating epoch 0
    val_last = tmp_path / "va" / "weights" / "last.pt"
    run_args = with_workers(train_args(data, tmp_path, "va", 64, 4, 1, "--noautoanchor"), 2)
    code, out, took, workers = _run_and_signal_group(script, run_args, "on_val_batch_end", signal.SIGINT)
    assert len(workers) >= 2 and code == 130, out[-4000:]
    assert "DataLoader worker" not in out and "Traceback" not in out, out[-4000:]
    assert "Validation of epoch 0 abandoned" in out and took < 20
    ckpt = load_checkpoint(val_last)
    state = ckpt["resume_state"]
    # the whole epoch trained (16 images / 4), then saved as a stop at its last batch, with that LR
    assert ckpt["epoch"] == -1 and state["interrupted"] and state["iterations_done"] == 4
    assert not (tmp_path / "va" / "results.csv").exists()  # an unvalidated epoch is not logged

    done = subprocess.run([sys.executable, "train.py", "--resume", str(val_last)], cwd=YOLO_DIR, env=cli_env(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(read_results(tmp_path / "va" / "results.csv")[1][:, 0]) == [0]
    assert load_checkpoint(val_last)["epoch"] == -1 and "resume_state" not in load_checkpoint(val_last)


EXIT_WITH_LIVE_ITERATOR = textwrap.dedent("""
    import sys
    sys.path.insert(0, {yolo_dir!r})
    from utils.data.loaders import create_dataloader

    loader, dataset = create_dataloader({images!r}, 64, 2, 32, augment=False, workers=2, image_weights=True)
    batches = iter(loader)
    next(batches)  # workers alive, epoch unfinished, iterator still referenced at exit
    print("ITERATING", flush=True)
""")


def test_exit_with_an_unfinished_worker_iterator_does_not_hang(tmp_path, real_images_dir):
    """multiprocessing's exit clean-up SIGTERMs the live workers; they must still end on it."""
    script = tmp_path / "live_iterator.py"
    images = str(real_images_dir / "images" / "train2017")
    script.write_text(EXIT_WITH_LIVE_ITERATOR.format(yolo_dir=str(YOLO_DIR), images=images))
    run = subprocess.run([sys.executable, str(script)], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "ITERATING" in run.stdout, run.stderr[-3000:]


def test_a_forwarded_duplicate_signal_is_one_request_a_later_repeat_stops_at_once():
    """torchrun forwards the group's SIGTERM to ranks that already got it: the same signal again within
    REPEAT_WINDOW_S is the same request; after it, a repeat means "stop at once"."""
    import pytest

    from utils.training.train_interrupts import REPEAT_WINDOW_S, StopRequest, stop_on_signals
    request = StopRequest()
    with stop_on_signals(request):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the forwarded copy
        assert request.reason == "SIGTERM" and request.exit_code == 143
        time.sleep(REPEAT_WINDOW_S + 0.1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here at the latest


def _ddp_run_and_signal_group(tmp_path, script, args, hook, sig):
    """Both ranks in one new session; at rank 0's marker, signal the whole group. Returns (rank exit
    codes, output, seconds from signal to the last rank's exit, processes below the launcher then)."""
    launcher = tmp_path / "launch_ranks.py"
    launcher.write_text(RANK_LAUNCHER)
    code, out, took, below = _run_and_signal_group(launcher, [free_port(), script, *args], hook, sig)
    assert code == 0, out[-4000:]
    codes = next(line for line in out.splitlines() if line.startswith("RANK EXIT CODES")).split()[3:]
    return [int(c) for c in codes], out, took, below


def test_ddp_group_sigterm_in_a_training_batch_with_workers(tmp_path, real_images_dir):
    """2 ranks (gloo), 2 loader workers each, SIGTERM to the whole group during a training batch: every
    rank exits 143 at the same batch, rank 0 saves a resumable last.pt, and a single process resumes it."""
    data = make_data_yaml(tmp_path, real_images_dir, n=16)
    script = tmp_path / "marked_train.py"
    script.write_text(WRAPPER.format(yolo_dir=str(YOLO_DIR)))
    last = tmp_path / "tr" / "weights" / "last.pt"
    args = with_workers(train_args(data, tmp_path, "tr", 64, 4, 1, "--noautoanchor"), 2)
    codes, out, took, below = _ddp_run_and_signal_group(tmp_path, script, args, "on_train_batch_end",
                                                        signal.SIGTERM)
    assert len(below) >= 4, out[-3000:]  # the group held 2 ranks and their loader workers (1+ each)
    assert codes == [143, 143], out[-4000:]
    assert "DataLoader worker" not in out and "Traceback" not in out, out[-4000:]
    assert out.count("SIGTERM received") == 2 and took < 20, (took, out[-4000:])
    ckpt = load_checkpoint(last)
    state = ckpt["resume_state"]
    # 8 images per rank in batches of 2: the ranks agree on the stop at batch 1 (the refresh after the
    # signal) and leave together, without starting batch 2
    assert ckpt["epoch"] == -1 and state["interrupted"] and state["iterations_done"] == 2
    assert resume_start_epoch(ckpt, last, 1) == 0

    done = subprocess.run([sys.executable, "train.py", "--resume", str(last)], cwd=YOLO_DIR, env=cli_env(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(read_results(tmp_path / "tr" / "results.csv")[1][:, 0]) == [0]
    assert load_checkpoint(last)["epoch"] == -1 and "resume_state" not in load_checkpoint(last)


def test_ddp_group_sigint_during_validation_abandons_it_on_every_rank(tmp_path, real_images_dir):
    """SIGINT to the group while the 2 ranks validate their shards: the ranks agree at the next validation
    batch, leave the validation together, rank 0 saves the trained epoch as interrupted, both exit 130."""
    data = make_data_yaml(tmp_path, real_images_dir, n=16)
    script = tmp_path / "marked_train.py"
    script.write_text(WRAPPER.format(yolo_dir=str(YOLO_DIR)))
    args = with_workers(train_args(data, tmp_path, "va", 64, 4, 1, "--noautoanchor"), 2)
    # validation batches of 4: 4 batches, 2 per rank; rank 0 pauses after its first one
    codes, out, took, below = _ddp_run_and_signal_group(tmp_path, script, args, "on_val_batch_end", signal.SIGINT)
    assert len(below) >= 4 and codes == [130, 130], out[-4000:]
    assert "DataLoader worker" not in out and "Traceback" not in out, out[-4000:]
    assert "Validation of epoch 0 abandoned" in out and took < 20, (took, out[-4000:])
    ckpt = load_checkpoint(tmp_path / "va" / "weights" / "last.pt")
    state = ckpt["resume_state"]
    # the whole epoch trained (4 batches per rank), saved as a stop at its last batch
    assert ckpt["epoch"] == -1 and state["interrupted"] and state["iterations_done"] == 4
    assert not (tmp_path / "va" / "results.csv").exists()  # an unvalidated epoch is not logged


def test_ddp_validation_asks_only_in_the_batches_every_shard_has():
    """Shards may differ by one batch: the ranks agree (a collective) at the start of each of their first
    `agreed_batches` batches only, so a rank's extra batch never waits for a peer that has finished."""
    import pytest

    from utils.training.callbacks import Callbacks
    from utils.training.train_interrupts import ValidationAbandoned, abandon_validation_on_stop
    votes, others_want = [], [False, False, False]

    def agree(flag):  # the peers' votes for batches 0, 1, ...
        votes.append(flag)
        return flag or others_want[len(votes) - 1]

    callbacks = Callbacks()
    with abandon_validation_on_stop(callbacks, lambda: False, agree=agree, agreed_batches=2):
        for _ in range(3):  # this rank's shard has 3 batches, the shortest 2
            callbacks.run("on_val_batch_start")
    assert votes == [False, False] and callbacks.get_registered_actions("on_val_batch_start") == []

    votes.clear()
    others_want[1] = True  # a peer got the signal: this rank leaves at the same batch as the peer
    with pytest.raises(ValidationAbandoned):
        with abandon_validation_on_stop(callbacks, lambda: False, agree=agree, agreed_batches=2):
            for _ in range(3):
                callbacks.run("on_val_batch_start")
    assert votes == [False, False]
