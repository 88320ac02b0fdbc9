"""`python train.py` as users run it: bad options, SIGTERM and resume, benchmark log, log-friendly output."""
import json
import re
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from train_helpers import COCO_NAMES, YOLO_DIR, cli_env, make_data_yaml, train_args, train_cli
from utils.io.checkpoint import load_checkpoint


def _bad_label_data(tmp_path, real_images_dir):
    """A copy of 4 coco128 images whose second label file has class 85 on line 2 (nc is 80)."""
    images, labels = tmp_path / "bad" / "images", tmp_path / "bad" / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i, src in enumerate(sorted((real_images_dir / "images" / "train2017").glob("*.jpg"))[:4]):
        shutil.copy(src, images / src.name)
        rows = (real_images_dir / "labels" / "train2017" / f"{src.stem}.txt").read_text().splitlines()
        if i == 1:
            rows.insert(1, "85 " + rows[0].split(" ", 1)[1])
            bad = labels / f"{src.stem}.txt"
        (labels / f"{src.stem}.txt").write_text("\n".join(rows) + "\n")
    data = tmp_path / "bad.yaml"
    data.write_text(yaml.safe_dump({"train": str(images), "val": str(images), "nc": 80, "names": COCO_NAMES}))
    return data, bad


def test_bad_options_give_one_line_and_exit_2(tmp_path, real_images_dir):
    data = make_data_yaml(tmp_path, real_images_dir, n=4)
    bad_data, bad_label = _bad_label_data(tmp_path, real_images_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["--img", "64", "--batch", "2", "--epochs", "1", "--workers", "0", "--project", str(tmp_path / "runs")]
    cases = [  # (arguments, working directory, fragment of the message)
        (["--data", str(tmp_path / "missing.yaml"), "--cfg", "yolov5n.yaml", "--weights", ""], YOLO_DIR,
         f"--data {tmp_path / 'missing.yaml'}: file not found"),
        (["--data", str(data), "--cfg", "yolov5q.yaml", "--weights", ""], YOLO_DIR, "--cfg 'yolov5q.yaml' not found"),
        (["--resume"], empty, "--resume: no last.pt found below the working directory"),
        (["--data", str(data), "--cfg", "yolov5n.yaml", "--weights", "", "--device", "mlu"], YOLO_DIR,
         "--device 'mlu': torch_mlu is not installed"),
        (["--data", str(data), "--weights", str(tmp_path / "nothere.pt")], YOLO_DIR,
         f"--weights {tmp_path / 'nothere.pt'}: file not found"),
        (["--data", str(bad_data), "--cfg", "yolov5n.yaml", "--weights", "", "--device", "cpu"], YOLO_DIR,
         f"{bad_label.name}:2: class id 85 is out of range"),
    ]
    procs = [subprocess.Popen([sys.executable, str(YOLO_DIR / "train.py"), *args, *base], cwd=cwd, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args, cwd, _ in cases]
    for proc, (args, _, fragment) in zip(procs, cases):
        out, err = proc.communicate(timeout=120)
        errors = [line for line in err.splitlines() if line.startswith("ERROR")]
        assert proc.returncode == 2, (args, err[-2000:])
        assert len(errors) == 1 and fragment in errors[0], (fragment, err[-2000:])
        assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing was written for any of them


def _start(args, **env):
    return subprocess.Popen([sys.executable, str(YOLO_DIR / "train.py"), *map(str, args)], cwd=YOLO_DIR,
                            env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _sigterm_after(proc, marker, timeout=120):
    """Read output until `marker`, then SIGTERM; returns (return code, whole output)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=timeout)
    return proc.returncode, "".join(seen) + rest


def test_sigterm_saves_resumable_last_and_resume_finishes(tmp_path, real_images_dir):
    """SIGTERM in the first epoch -> exit 143 with a resumable last.pt; resume, SIGTERM again; resume to
    the end; a further --resume says the run is finished (exit 2)."""
    data = make_data_yaml(tmp_path, real_images_dir, n=16)
    last = tmp_path / "sig" / "weights" / "last.pt"
    code, out = _sigterm_after(_start(train_args(data, tmp_path, "sig", 64, 2, 1, "--noautoanchor")),
                               "Starting training")
    assert code == 143, out[-3000:]  # 128 + SIGTERM: stopped early, cleanly
    assert "SIGTERM received" in out and f"Resume with:  python train.py --resume {last}" in out
    first = load_checkpoint(last)
    state = first["resume_state"]
    assert first["epoch"] == -1 and state["interrupted"] and 1 <= state["iterations_done"] < 8
    assert first["optimizer"] is not None and first["updates"] == state["iterations_done"]

    code, out = _sigterm_after(_start(["--resume", last]), "Starting training")
    assert code == 143 and "Resuming training from" in out, out[-3000:]
    second = load_checkpoint(last)["resume_state"]
    assert second["interrupted"] and second["iterations_done"] > state["iterations_done"]

    done = train_cli(["--resume", last])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Optimizer stripped from {last}," in done.stdout  # utils.io.checkpoint logs through "yolov5"
    final = load_checkpoint(last)
    assert final["epoch"] == -1 and final["optimizer"] is None and "resume_state" not in final
    assert len((tmp_path / "sig" / "results.csv").read_text().splitlines()) == 2  # header + epoch 0

    again = train_cli(["--resume", last])
    errors = [line for line in again.stderr.splitlines() if line.startswith("ERROR")]
    assert again.returncode == 2 and len(errors) == 1 and "already finished" in errors[0]
    assert load_checkpoint(last)["epoch"] == -1  # untouched


def test_benchmark_log_and_log_friendly_progress(tmp_path, real_images_dir):
    """BENCHMARK_LOG: one JSON line with the configs.json fields; throughput = bs * cards / batch time.
    Output to a pipe: the batch bar is drawn about twice per epoch, not once per iteration."""
    data = make_data_yaml(tmp_path, real_images_dir, n=16)
    log = tmp_path / "log.json"
    run = train_cli(train_args(data, tmp_path, "bench", 64, 2, 5, "--iters", "12", "--skip", "--noautoanchor"),
                    env=cli_env(BENCHMARK_LOG=log, MLU_ADAPTIVE_STRATEGY_COUNT=2))
    assert run.returncode == 0, run.stderr[-3000:]
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    fields = json.loads((YOLO_DIR.parent / "utils_mlu" / "configs.json").read_text())["BENCHMARK_LOG"]
    assert list(record) == ["date"] + fields + ["device", "dataset"]
    assert (record["net"], record["batch_size"], record["cards"], record["precision"], record["DPF_mode"]) == \
        ("yolov5n", 2, 1, "fp32", "single")
    assert record["iterations"] == 10 and record["warmup_iterations"] == 2  # 12 timed, first 2 dropped
    assert record["throughput"] == pytest.approx(2 * 1 / record["batch_time_avg"], abs=0.006)  # 2 decimals
    assert f"throughput {record['throughput']:.2f} images/s on 1 card(s)" in run.stdout
    assert not list((tmp_path / "bench" / "weights").glob("*.pt"))  # --skip: no checkpoints

    # 12 iterations = 1.5 epochs of 8 batches; a bar refreshed per batch would draw 12+ epoch lines.
    # In a log each bar leaves its final state (plus a line per 30 s), never carriage returns.
    output = run.stdout + run.stderr
    bar_draws = [s for s in output.splitlines() if re.match(r"\s+[01]/4\s+-\s+", s)]
    assert 2 <= len(bar_draws) <= 4 and "\r" not in output, bar_draws
    assert bar_draws[0].split()[:1] == ["0/4"] and bar_draws[-1].split()[:1] == ["1/4"]
    assert sum("Scanning" in line for line in run.stderr.splitlines()) == 1  # the label scan: once
    assert re.search(r"^train: weights=, cfg=\S+/yolov5n.yaml, data=\S+, hyp=\S+hyp.scratch.yaml, epochs=5, ",
                     run.stdout, re.M)
    assert re.search(r"^hyperparameters: lr0=0.01, lrf=0.1, momentum=0.937, ", run.stdout, re.M)


def test_default_weights_come_from_model_root(tmp_path, real_images_dir, upstream_checkpoint):
    """No --weights: v6.0's default yolov5s.pt, found where prepare.sh put it ($MODEL_ROOT), not downloaded.
    (The stand-in is the upstream yolov5n checkpoint saved under that name.)"""
    root = tmp_path / "weights_root"
    root.mkdir()
    shutil.copy(upstream_checkpoint, root / "yolov5s.pt")
    data = make_data_yaml(tmp_path, real_images_dir, n=4)
    args = ["--data", data, "--img", 64, "--batch-size", 2, "--epochs", 1, "--device", "cpu", "--workers", 0,
            "--project", tmp_path, "--name", "default", "--iters", 1, "--skip", "--noautoanchor"]
    run = train_cli(args, env=cli_env(MODEL_ROOT=root))
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"train: weights={root / 'yolov5s.pt'}, cfg=, " in run.stdout
    assert re.search(r"Transferred 349/349 items from \S+yolov5s.pt", run.stdout), run.stdout[-3000:]
