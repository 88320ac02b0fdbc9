"""kill -9 at chosen moments of a short run, then --resume: the run reaches its last epoch, last.pt and
best.pt load, and results.csv has exactly one row per epoch.

A wrapper runs train.py's main with hooks that SIGKILL the process at the Nth hit of a named site:
  batch   after a training batch (on_train_batch_end)
  val     after a validation batch of an epoch (on_val_batch_end)
  csv     after an epoch's results.csv row, before its checkpoints (on_fit_epoch_end)
  ckpt    inside a checkpoint write, after the data reached the temp file, before the rename (fsync)
  saved   after an epoch's checkpoints (on_model_save)
The moments are drawn with a fixed seed from every hit after the first last.pt exists (epoch >= 1).
By default the first csv and ckpt moments run (the sites where a row could be logged twice or a temp
file left behind), plus the kill after the final epoch's save (the resumed run only finishes: strips the
optimizer and validates best.pt); KILL_RESUME_ALL=1 runs all 20 through
the same code:  KILL_RESUME_ALL=1 python -m pytest tests/test_kill_resume.py
"""
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest

from train_helpers import YOLO_DIR, cli_env, make_data_yaml, train_args
from utils.io.checkpoint import load_checkpoint
from utils.training.results_log import read_results

EPOCHS, BATCHES = 4, 2  # 8 images, batch 4; validation is one batch of 8
HOOKS = {"batch": "on_train_batch_end", "val": "on_val_batch_end", "csv": "on_fit_epoch_end",
         "saved": "on_model_save"}


def kill_points():
    """Every (site, n) hit after epoch 0 of an uninterrupted run of EPOCHS epochs (final validation and
    the optimizer stripping at the end excluded: the run is complete by then)."""
    points = [("batch", n) for n in range(BATCHES + 1, EPOCHS * BATCHES + 1)]
    points += [(site, n) for site in ("val", "csv", "saved") for n in range(2, EPOCHS + 1)]
    points += [("ckpt", n) for n in range(3, 2 * EPOCHS + 1)]  # best.pt then last.pt every epoch
    return points


def kill_moments(seed=0, count=20):
    return random.Random(seed).sample(kill_points(), count)


def ci_moments(moments, sites=("csv", "ckpt")):
    """The first moment of each of `sites` in the seeded order (CI time: a pair takes ~15 s)."""
    seen = {}
    for site, n in moments:
        if site in sites:
            seen.setdefault(site, (site, n))
    return list(seen.values())


MOMENTS = kill_moments()
FINAL_SAVE = ("saved", EPOCHS)  # after the last epoch's checkpoints, before the run's finish step
RUN = MOMENTS if os.environ.get("KILL_RESUME_ALL") else ci_moments(MOMENTS) + [FINAL_SAVE]

WRAPPER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {yolo_dir!r})
    import train
    from utils.training.callbacks import Callbacks

    site, target, hits = os.environ["KILL_SITE"], int(os.environ["KILL_N"]), []

    def hit(*args, **kwargs):
        hits.append(1)
        if len(hits) == target:
            os.kill(os.getpid(), signal.SIGKILL)

    callbacks = Callbacks()
    if site == "ckpt":
        real_fsync = os.fsync

        def fsync(fd):
            real_fsync(fd)
            if os.readlink(f"/proc/self/fd/{{fd}}").endswith(".tmp"):  # a checkpoint's temp file
                hit()
        os.fsync = fsync
    else:
        callbacks.register_action({hooks!r}[site], "kill", hit)
    train.main(sys.argv[1:], callbacks=callbacks)
""")


def test_kill_points_cover_every_site():
    assert len(set(MOMENTS)) == 20 and {s for s, _ in MOMENTS} == {"batch", "val", "csv", "ckpt", "saved"}
    assert FINAL_SAVE in MOMENTS


@pytest.fixture(scope="module")
def kill_data(tmp_path_factory, real_images_dir):
    return make_data_yaml(tmp_path_factory.mktemp("kill_data"), real_images_dir, n=8)


@pytest.mark.parametrize("site,n", RUN, ids=[f"{s}{n}" for s, n in RUN])
def test_kill_then_resume_finishes_with_one_row_per_epoch(tmp_path, kill_data, site, n):
    script = tmp_path / "killed_train.py"
    script.write_text(WRAPPER.format(yolo_dir=str(YOLO_DIR), hooks=HOOKS))
    args = train_args(kill_data, tmp_path, "k", 64, 4, EPOCHS, "--noautoanchor")
    killed = subprocess.run([sys.executable, str(script), *args], cwd=YOLO_DIR, capture_output=True, text=True,
                            env=cli_env(KILL_SITE=site, KILL_N=n), timeout=240)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout[-2000:], killed.stderr[-3000:])
    last, best = tmp_path / "k" / "weights" / "last.pt", tmp_path / "k" / "weights" / "best.pt"
    assert not list(last.parent.glob("last*.pt"))[1:]  # no partial file that a resume could pick

    resumed = subprocess.run([sys.executable, "train.py", "--resume", str(last)], cwd=YOLO_DIR, env=cli_env(),
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, (resumed.stdout[-2000:], resumed.stderr[-3000:])
    if (site, n) == ("saved", EPOCHS):  # killed after the final epoch's last.pt: only the finish step is left
        assert f"all {EPOCHS} epochs were trained; finishing the run" in resumed.stdout + resumed.stderr
        assert "Validating" in resumed.stdout + resumed.stderr
    else:
        assert "Resuming training from" in resumed.stdout + resumed.stderr
    assert list(read_results(tmp_path / "k" / "results.csv")[1][:, 0]) == list(range(EPOCHS))
    final = load_checkpoint(last)
    assert final["epoch"] == -1 and final["optimizer"] is None and "resume_state" not in final
    assert load_checkpoint(best)["model"].nc == 80
    assert not [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")]
