"""Exact resume, early stops and diverging losses of the trainer (in this process, CPU, --workers 0)."""
import hashlib
import os
import shutil
import signal

import pytest
import torch

import utils.training.trainer as trainer_module
from train_helpers import OneThread, make_data_yaml, train_args, train_in_process
from utils.training.callbacks import Callbacks
from utils.io.checkpoint import load_checkpoint


@pytest.fixture(autouse=True)
def one_thread():
    with OneThread():
        yield


@pytest.fixture
def fast_schedule(monkeypatch):
    """Warmup over the first two batches only and an optimizer step every batch, so that these
    tiny runs step at the scheduler's learning rates from epoch 1 on (normally the 100-iteration
    minimum warmup sets every lr, and batch 4 accumulates 16 batches per step)."""
    monkeypatch.setattr(trainer_module, "warmup_iterations", lambda *args, **kwargs: 1)
    monkeypatch.setattr(trainer_module, "accumulate_steps", lambda batch_size, nbs=64: 1)


def _keep_unstripped_last(copy_to, at_epoch):
    """Callbacks copying last.pt right after the save of `at_epoch` (before the final strip)."""
    callbacks = Callbacks()

    def on_model_save(last, epoch, *args):
        if epoch == at_epoch:
            shutil.copy(last, copy_to)
    callbacks.register_action("on_model_save", "keep", on_model_save)
    return callbacks


def _assert_same_state(a, b):
    sa, sb = a["resume_state"], b["resume_state"]
    for key in ("model_fp32", "ema_fp32"):
        assert sa[key].keys() == sb[key].keys()
        different = [k for k in sa[key] if not torch.equal(sa[key][k], sb[key][k])]
        assert not different, f"{key}: {len(different)} tensors differ, e.g. {different[:3]}"
    assert (a["updates"], sa["iterations_done"], sa["last_opt_step"]) == (b["updates"], sb["iterations_done"],
                                                                          sb["last_opt_step"])
    for ga, gb in zip(a["optimizer"]["param_groups"], b["optimizer"]["param_groups"]):
        assert ga["lr"] == gb["lr"] and ga["momentum"] == gb["momentum"]
    for k, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])
    assert a["best_fitness"] == b["best_fitness"] and sa["stopper"] == sb["stopper"]


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, real_images_dir, fast_schedule, capsys):
    """3 epochs straight vs SIGINT at the end of epoch 1 + --resume: identical weights, EMA, optimizer,
    and identical results.csv rows (so data order and augmentation matched too)."""
    data = make_data_yaml(tmp_path, real_images_dir, n=8)  # 2 full batches per epoch
    args = ("--noautoanchor", "--seed", "3")
    train_in_process(train_args(data, tmp_path, "straight", 64, 4, 3, *args),
                     _keep_unstripped_last(tmp_path / "straight_last.pt", at_epoch=2))

    interrupt = _keep_unstripped_last(tmp_path / "unused.pt", at_epoch=99)
    interrupt.register_action("on_fit_epoch_end", "sigint",
                              lambda values, epoch, *a: epoch == 1 and os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(SystemExit) as stopped:
        train_in_process(train_args(data, tmp_path, "split", 64, 4, 3, *args), interrupt)
    assert stopped.value.code == 130  # 128 + SIGINT
    out = capsys.readouterr().out
    last = tmp_path / "split" / "weights" / "last.pt"
    assert f"python train.py --resume {last}" in out
    saved = load_checkpoint(last)
    assert saved["epoch"] == 1 and saved["optimizer"] is not None and not saved["resume_state"]["interrupted"]

    # the resumed run restores the learning rates the scheduler had reached (not lf(0) again)
    from utils.device.devices import select_device
    from utils.training.train_options import parse_opt, resolve_resume
    from utils.training.train_setup import load_hyp
    opt = resolve_resume(parse_opt(["--resume", str(last)]))
    probe = trainer_module.Trainer(opt, load_hyp(opt.hyp), select_device("cpu", log=False))
    probe._setup()
    assert [g["lr"] for g in probe.optimizer.param_groups] == [g["lr"] for g in saved["optimizer"]["param_groups"]]
    assert probe.start_epoch == 2 and probe.scheduler.last_epoch == 1

    train_in_process(["--resume", str(last)], _keep_unstripped_last(tmp_path / "split_last.pt", at_epoch=2))
    out = capsys.readouterr().out
    assert "Resuming training from" in out and "at epoch 2 of 3" in out
    _assert_same_state(load_checkpoint(tmp_path / "straight_last.pt"), load_checkpoint(tmp_path / "split_last.pt"))
    straight_rows = (tmp_path / "straight" / "results.csv").read_text().splitlines()
    split_rows = (tmp_path / "split" / "results.csv").read_text().splitlines()
    assert len(straight_rows) == 4 and split_rows == straight_rows
    for run in ("straight", "split"):  # both finished: stripped weights with the same tensors
        assert load_checkpoint(tmp_path / run / "weights" / "last.pt")["epoch"] == -1
    a = load_checkpoint(tmp_path / "straight" / "weights" / "last.pt")["model"].state_dict()
    b = load_checkpoint(tmp_path / "split" / "weights" / "last.pt")["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_callback_stop_is_resumable_and_exits_zero(tmp_path, real_images_dir, capsys):
    """callbacks.stop_training = True: same clean stop as a signal, but a normal return (exit 0)."""
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    callbacks = Callbacks()

    def stop_after_first_batch(ni, *args):
        callbacks.stop_training = True
    callbacks.register_action("on_train_batch_end", "stop", stop_after_first_batch)
    results = train_in_process(train_args(data, tmp_path, "cb", 64, 2, 2, "--noautoanchor"), callbacks)
    assert results == (0, 0, 0, 0, 0, 0, 0)  # stopped before any validation
    ckpt = load_checkpoint(tmp_path / "cb" / "weights" / "last.pt")
    # the stop is seen before the next backward: batch 0 ran, batch 1 ran, then the loop left epoch 0
    assert ckpt["epoch"] == -1 and ckpt["resume_state"]["interrupted"]
    assert ckpt["resume_state"]["iterations_done"] == 2 and ckpt["updates"] == 2
    assert not (tmp_path / "cb" / "results.csv").exists()  # an unfinished epoch is not logged
    assert "Stopped early (callback)" in capsys.readouterr().out


class NanOnCall:
    """ComputeLoss whose training call number `n` (counted from 1, validation calls excluded) is NaN."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, model):
        real = trainer_module_compute_loss(model)

        def compute(pred, targets):
            loss, items = real(pred, targets)
            if torch.is_grad_enabled():
                self.calls += 1
                if self.calls == self.n:
                    loss = loss * float("nan")
            return loss, items
        return compute


trainer_module_compute_loss = trainer_module.ComputeLoss


def test_non_finite_loss_stops_with_epoch_iteration_and_keeps_last_checkpoint(tmp_path, real_images_dir, monkeypatch,
                                                                               capsys):
    data = make_data_yaml(tmp_path, real_images_dir, n=8)
    monkeypatch.setattr(trainer_module, "ComputeLoss", NanOnCall(4))  # epoch 1, second batch
    with pytest.raises(SystemExit) as failed:
        train_in_process(train_args(data, tmp_path, "nan", 64, 4, 3, "--noautoanchor", "--noval"))
    assert failed.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line]  # progress bars aside
    assert len(err) == 1 and err[0].startswith("ERROR: loss became nan at epoch 1, iteration 1 of 2 ")
    last = tmp_path / "nan" / "weights" / "last.pt"
    assert "Hint: lower lr0" in err[0] and f"The last checkpoint written before this is {last}" in err[0]
    ckpt = load_checkpoint(last)  # epoch 0's checkpoint, untouched and finite
    assert ckpt["epoch"] == 0 and ckpt["resume_state"]["iterations_done"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["resume_state"]["model_fp32"].values() if v.is_floating_point())
    digest = hashlib.sha256(last.read_bytes()).hexdigest()
    assert len((tmp_path / "nan" / "results.csv").read_text().splitlines()) == 2  # header + epoch 0

    # resuming it reproduces the failure at the same place and leaves the file byte for byte as it was
    with pytest.raises(SystemExit):
        monkeypatch.setattr(trainer_module, "ComputeLoss", NanOnCall(2))
        train_in_process(["--resume", str(last)])
    assert "at epoch 1, iteration 1 of 2 " in capsys.readouterr().err
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest


def test_resume_options_come_from_the_run_with_its_directory(tmp_path, monkeypatch):
    """opt.yaml may hold a save_dir relative to another working directory: the run directory is where
    last.pt lies; --device and --workers from the command line win, everything else is the run's."""
    from utils.training.train_options import parse_opt, resolve_resume, save_options
    run = tmp_path / "moved" / "exp3"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.pt").write_bytes(b"not read here")
    saved = parse_opt(["--epochs", "7", "--batch-size", "6", "--device", "0", "--workers", "3"])
    saved.save_dir = "runs/train/exp3"  # as written by a run started in another directory
    save_options(saved, run / "opt.yaml")
    monkeypatch.chdir(tmp_path)
    opt = resolve_resume(parse_opt(["--resume", str(run / "weights" / "last.pt"), "--device", "cpu"]))
    assert opt.save_dir == str(run) and (opt.epochs, opt.batch_size, opt.workers) == (7, 6, 3)
    assert opt.device == "cpu" and opt.resume is True and opt.cfg == ""
    opt = resolve_resume(parse_opt(["--resume", str(run / "weights" / "last.pt"), "--workers", "0"]))
    assert (opt.device, opt.workers) == ("0", 0)
