"""What a user sees after training: the image size stored in the checkpoint (and used by val.py and
detect.py when --img is not given), the header of the final validation table, the count of finished
epochs in the stop message.

One tiny real training (yolov5n, 96 px, 8 generated demo images, 1 epoch) is shared by the tests."""
import subprocess
import sys

import pytest
import torch

from train_helpers import YOLO_DIR, OneThread, cli_env, train_args, train_in_process
from utils.training.callbacks import Callbacks
from utils.io.checkpoint import CHECKPOINT_KEYS, load_checkpoint, save_checkpoint
from utils.data.demo_data import NAMES, generate_demo_dataset
from utils.io.train_imgsz import TRAIN_IMGSZ_KEY
from utils.evaluation.validator import HEADER

TRAIN_IMG = 96
TRAINED_AT = "image size 96, the size these weights were trained at (from the checkpoint)"


@pytest.fixture(scope="module")
def demo_yaml(tmp_path_factory):
    """8 train and 4 val images of 160 px (2 batches of 4 per epoch)."""
    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_train=8, n_val=4, imgsz=160, seed=1)


@pytest.fixture(scope="module")
def trained(demo_yaml, tmp_path_factory):
    """(run dir, combined stdout+stderr as a log file would hold it) of `train.py --img 96 --epochs 1`."""
    project = tmp_path_factory.mktemp("runs")
    args = train_args(demo_yaml, project, "exp", TRAIN_IMG, 4, 1, "--noautoanchor")
    run = subprocess.run([sys.executable, str(YOLO_DIR / "train.py"), *args], cwd=YOLO_DIR, env=cli_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    log = run.stdout.decode(errors="replace")
    assert run.returncode == 0, log[-3000:]
    return project / "exp", log


def _cli(script, *args):
    run = subprocess.run([sys.executable, str(YOLO_DIR / script), *map(str, args)], cwd=YOLO_DIR, env=cli_env(),
                         capture_output=True, timeout=300)
    out, err = run.stdout.decode(errors="replace"), run.stderr.decode(errors="replace")
    assert run.returncode == 0, (out + err)[-3000:]
    return out


def _val(weights, demo_yaml, tmp_path, *extra):
    return _cli("val.py", "--weights", weights, "--data", demo_yaml, "--device", "cpu", "--workers", "0",
                "--project", tmp_path, "--name", "val", *extra)


def _detect(weights, source, tmp_path, *extra):
    return _cli("detect.py", "--weights", weights, "--source", source, "--device", "cpu", "--nosave",
                "--project", tmp_path, "--name", "det", *extra)


@pytest.fixture(scope="module")
def upstream_style(trained, tmp_path_factory):
    """best.pt without the training-size key, as upstream's train.py writes checkpoints."""
    ckpt = load_checkpoint(trained[0] / "weights" / "best.pt")
    del ckpt[TRAIN_IMGSZ_KEY]
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("upstream") / "best.pt")


# ------------------------------------------------------------------------------ the stored size
def test_stripped_checkpoints_keep_the_training_size_and_the_upstream_keys(trained):
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(trained[0] / "weights" / name)
        assert ckpt[TRAIN_IMGSZ_KEY] == TRAIN_IMG
        assert set(CHECKPOINT_KEYS) <= set(ckpt) and ckpt["epoch"] == -1 and ckpt["optimizer"] is None
        assert isinstance(ckpt["model"], torch.nn.Module)


def test_val_without_img_uses_the_training_size(trained, demo_yaml, tmp_path):
    out = _val(trained[0] / "weights" / "best.pt", demo_yaml, tmp_path)
    assert out.count(TRAINED_AT) == 1
    assert f"at shape (32, 3, {TRAIN_IMG}, {TRAIN_IMG})" in out


def test_val_explicit_img_wins(trained, demo_yaml, tmp_path):
    out = _val(trained[0] / "weights" / "best.pt", demo_yaml, tmp_path, "--img", "128")
    assert "trained at" not in out and "at shape (32, 3, 128, 128)" in out


def test_val_of_a_checkpoint_without_the_key_keeps_640(upstream_style, demo_yaml, tmp_path):
    out = _val(upstream_style, demo_yaml, tmp_path)
    assert "trained at" not in out and "at shape (32, 3, 640, 640)" in out


def test_detect_sizes(trained, upstream_style, demo_yaml, tmp_path):
    """No --img: the training size (160 px images letterboxed to 96x96); --img 128 wins; no key: 640."""
    source = demo_yaml.parent / "images" / "val"
    best = trained[0] / "weights" / "best.pt"
    out = _detect(best, source, tmp_path)
    assert out.count(TRAINED_AT) == 1
    assert [line.split(": ")[1].split()[0] for line in out.splitlines() if line.startswith("image ")] == ["96x96"] * 4
    out = _detect(best, source, tmp_path, "--img", "128")
    assert "trained at" not in out and out.count(": 128x128 ") == 4
    out = _detect(upstream_style, source, tmp_path)
    assert "trained at" not in out and out.count(": 640x640 ") == 4


# ------------------------------------------------------------------------------ the table header
def test_final_validation_keeps_its_header_in_a_log(trained):
    """Per-epoch validations leave no bar line in a log; the final one leaves exactly one: the header,
    after 'Validating best.pt' and right before its 'all' row."""
    lines = trained[1].splitlines()
    header_rows = [i for i, line in enumerate(lines) if line.startswith(HEADER)]
    validating = next(i for i, line in enumerate(lines) if line.startswith("Validating "))
    assert len(header_rows) == 1 and header_rows[0] > validating
    assert lines[header_rows[0] + 1].split()[:2] == ["all", "4"]
    assert [line.split()[0] for line in lines[header_rows[0] + 2:header_rows[0] + 8]] == list(NAMES)


class _Terminal:
    """A stderr stand-in that says it is a terminal and records what is written."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True

    def screen(self):
        """The lines a terminal would show: '\\r' returns to the line start and later text overwrites."""
        lines, current, col = [], [], 0
        for ch in self.text:
            if ch == "\n":
                lines.append("".join(current).rstrip())
                current, col = [], 0
            elif ch == "\r":
                col = 0
            else:
                if col < len(current):
                    current[col] = ch
                else:
                    current.append(ch)
                col += 1
        lines.append("".join(current).rstrip())
        return [line for line in lines if line]


@pytest.mark.parametrize("verbose", [True, False])
def test_header_on_a_terminal(demo_yaml, tmp_path, monkeypatch, verbose):
    """The trainer's validation on a terminal: the final one (verbose) keeps the header line on screen,
    the per-epoch ones clear their bar."""
    from models.yolo import Model
    from utils.data.loaders import create_dataloader
    from utils.evaluation.validator import run as validate

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    loader = create_dataloader(str(demo_yaml.parent / "images" / "val"), 64, 4, 32, pad=0.5, rect=True,
                               workers=0, prefix="", nc=6)[0]
    terminal.text = ""  # only the validation's own output
    with OneThread():
        model = Model("yolov5n.yaml", nc=6).eval()
        validate({"nc": 6, "names": list("abcdef")}, model=model, dataloader=loader, imgsz=64, plots=False,
                 save_dir=tmp_path, verbose=verbose, device="cpu")
    shown = [line for line in terminal.screen() if line.startswith(HEADER)]
    assert len(shown) == (1 if verbose else 0), terminal.screen()
    if verbose:
        assert "100%" in shown[0] and "1/1" in shown[0]


# ------------------------------------------------------------------------------ epochs completed
def test_a_full_run_counts_its_epoch(trained):
    assert "\n1 epoch completed in " in trained[1]


def test_stop_in_the_first_batch_of_the_second_epoch_counts_one_epoch(demo_yaml, tmp_path, capsys):
    callbacks, seen = Callbacks(), {}
    callbacks.register_action("on_train_epoch_start", "epoch", lambda epoch: seen.update(epoch=epoch))

    def stop_in_epoch_1(*args):
        if seen["epoch"] == 1:
            callbacks.stop_training = True
    callbacks.register_action("on_train_batch_start", "stop", stop_in_epoch_1)
    with OneThread():
        train_in_process(train_args(demo_yaml, tmp_path, "stop", 64, 4, 3, "--noautoanchor"), callbacks)
    out = capsys.readouterr().out
    assert "\n1 epoch completed in " in out and "epochs completed" not in out
    last = load_checkpoint(tmp_path / "stop" / "weights" / "last.pt")
    assert last["epoch"] == 0 and last["resume_state"]["interrupted"]  # epoch 0 is the one finished
    assert last["resume_state"]["iterations_done"] == 3  # 2 batches of epoch 0 + the first of epoch 1
    assert len((tmp_path / "stop" / "results.csv").read_text().splitlines()) == 2  # header + epoch 0
