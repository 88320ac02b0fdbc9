"""A full disk (or a file-size limit) during a save: earlier files stay intact, one clear error, exit 2.

Limits are set with RLIMIT_FSIZE (Python ignores SIGXFSZ, so an oversized write fails with EFBIG);
the soft limit is lowered only around the write and restored afterwards."""
import contextlib
import errno
import hashlib
import os
import resource
import subprocess
import sys

import pytest
import torch

from train_helpers import YOLO_DIR, cli_env, make_data_yaml, train_args
from utils.io.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import UserError
from utils.training.results_log import append_results, read_results


@contextlib.contextmanager
def file_size_limit(nbytes):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_over_the_size_limit_keeps_the_previous_one(tmp_path):
    last = save_checkpoint({"epoch": 3, "w": torch.arange(10.0)}, tmp_path / "last.pt")
    before = digest(last)
    with file_size_limit(last.stat().st_size + 4096), pytest.raises(UserError) as e:
        save_checkpoint({"epoch": 4, "w": torch.zeros(100_000)}, last)
    msg = str(e.value)
    assert f"cannot save {last}: writing it in {tmp_path} exceeds" in msg and "ulimit -f" in msg
    assert "the previous last.pt is intact" in msg and "\n" not in msg
    assert digest(last) == before and load_checkpoint(last)["epoch"] == 3
    assert os.listdir(tmp_path) == ["last.pt"]  # the temporary file was removed


def test_no_space_left_names_the_folder_and_the_space_needed(tmp_path, monkeypatch):
    last = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
    before = digest(last)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if not hasattr(f, "fileno"):  # the size estimate writes to a counting sink: let it through
            return real_save(obj, f, *args, **kwargs)
        f.write(b"partial")
        raise RuntimeError("file write failed") from OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError) as e:
        save_checkpoint({"epoch": 2, "w": torch.zeros(250_000)}, last)  # 1 MB of float32
    msg = str(e.value)
    assert f"{tmp_path} needs 1.0 MB free, " in msg and " MB are free" in msg
    assert digest(last) == before and os.listdir(tmp_path) == ["last.pt"]


def test_a_failed_results_append_leaves_no_partial_row(tmp_path):
    csv = tmp_path / "results.csv"
    for epoch in range(2):
        append_results(csv, epoch, [0.1] * 13)
    before = csv.read_bytes()
    with file_size_limit(len(before) + 100), pytest.raises(UserError) as e:  # a row is 294 bytes
        append_results(csv, 2, [0.2] * 13)
    assert f"cannot write {csv}: File too large" in str(e.value)
    assert csv.read_bytes() == before
    assert read_results(csv)[1].shape == (2, 14)
    with file_size_limit(100), pytest.raises(UserError):  # a new file is removed, not left half written
        append_results(tmp_path / "new.csv", 0, [0.1] * 13)
    assert not (tmp_path / "new.csv").exists()


def test_train_under_a_file_size_limit_stops_with_one_line_and_exit_2(tmp_path, real_images_dir):
    """End to end: yolov5n's checkpoints (about 30 MB with optimizer) cannot be written under a 2 MB limit."""
    data = make_data_yaml(tmp_path, real_images_dir, n=4)
    limit = 2_000_000

    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    run = subprocess.run([sys.executable, str(YOLO_DIR / "train.py"),
                          *train_args(data, tmp_path / "runs", "exp", 64, 4, 1)], cwd=YOLO_DIR, env=cli_env(),
                         capture_output=True, timeout=300, preexec_fn=preexec)
    err = run.stderr.decode(errors="replace")
    assert run.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("ERROR")]
    weights = tmp_path / "runs" / "exp" / "weights"
    # best.pt is written first: last.pt, written last, is what --resume trusts
    assert errors == [f"ERROR: cannot save {weights / 'best.pt'}: writing it in {weights} exceeds this "
                      "process's file size limit (ulimit -f); no best.pt was written. Free some space (or choose "
                      "another --project) and run again (--resume continues from a saved last.pt)"]
    assert os.listdir(weights) == []
    assert read_results(weights.parent / "results.csv")[1].shape == (1, 14)  # the epoch's row is whole


def test_a_failed_rewrite_keeps_the_old_run_file(tmp_path):
    """opt.yaml is rewritten when a run resumes: a full disk then must not leave it empty."""
    from utils.io.disk_writes import write_text
    opt_yaml = tmp_path / "opt.yaml"
    write_text(opt_yaml, "epochs: 3\n")
    with file_size_limit(20), pytest.raises(UserError) as e:
        write_text(opt_yaml, "epochs: 3\n" + "x: 1\n" * 20)
    assert f"cannot write {opt_yaml}: File too large" in str(e.value)
    assert opt_yaml.read_text() == "epochs: 3\n" and os.listdir(tmp_path) == ["opt.yaml"]
