"""utils.training.cpu_speed: the CPU training speed-up removes page faults, changes no number, and only
applies to the CPU.

The allocator setting is process-wide and permanent, so the checks that switch it run in a
child process (one run shared by the tests below) and leave this pytest process untouched.
"""
import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

import utils.training.cpu_speed as cpu_speed
from train_helpers import YOLO_DIR
from utils.device.devices import select_device

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Child process: page faults of re-allocating a 48 MiB block (above glibc's largest mmap
# threshold, so by default always mmapped and faulted in again), before and after
# keep_freed_memory; and one training step (yolov5n, 4 real coco128 images at 64 px, real
# labels) from the same seed without and with optimise_for_training.
CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import numpy as np, torch, yaml
    from models.yolo import Model
    from utils.data.augmentations import letterbox
    from utils.training.cpu_speed import keep_freed_memory, optimise_for_training
    from utils.data.image_files import img2label_path, read_image
    from utils.data.label_checks import parse_label_file
    from utils.training.loss import ComputeLoss, scale_loss_gains
    from utils.training.optim import build_optimizer

    coco, yolo = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)

    def faults_of_reallocating(n=4):
        out = []
        for _ in range(n):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            block = torch.empty(12 * 2 ** 20)  # 48 MiB of float32
            block.fill_(1.0)  # touch every page
            del block
            out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        return out

    imgs, targets = [], []
    for i, f in enumerate(sorted((coco / "images" / "train2017").glob("*.jpg"))[:4]):
        im = letterbox(read_image(str(f)), 64, auto=False)[0]
        imgs.append(im[:, :, ::-1].transpose(2, 0, 1))
        for c, x, y, w, h in parse_label_file(img2label_path(str(f)))[0]:  # images are ~square: keep xywh
            targets.append([i, c, x, y, w, h])
    imgs = torch.from_numpy(np.ascontiguousarray(np.stack(imgs))).float() / 255
    targets = torch.tensor(targets, dtype=torch.float32)
    hyp = yaml.safe_load((yolo / "data" / "hyps" / "hyp.scratch.yaml").read_text())

    def train_step(optimise):
        torch.manual_seed(0)
        model = Model(str(yolo / "models" / "yolov5n.yaml"), nc=80).train()
        if optimise:
            assert optimise_for_training(model, "cpu") is model
        model.hyp = scale_loss_gains(hyp, 3, 80, 64)
        optimizer = build_optimizer(model, hyp, 4, 16)
        loss, items = ComputeLoss(model)(model(imgs), targets)
        loss.backward()
        optimizer.step()
        return items, [p.detach().clone() for p in model.parameters()]

    before = faults_of_reallocating()
    base_items, base_params = train_step(False)
    opt_items, opt_params = train_step(True)
    after = faults_of_reallocating()
    print(json.dumps({
        "faults_default": before, "faults_kept": after, "kept": keep_freed_memory(),
        "loss_items": base_items.tolist(), "loss_equal": bool(torch.equal(base_items, opt_items)),
        "params_equal": all(torch.equal(a, b) for a, b in zip(base_params, opt_params)),
        "channels_last": sum(p.dim() == 4 and not p.is_contiguous() for p in opt_params),
    }))
""")


@pytest.fixture(scope="module")
def child_run(repo_root, real_images_dir):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(real_images_dir), str(repo_root / "yolov5")],
                          capture_output=True, text=True, timeout=300, cwd=repo_root / "yolov5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the allocator setting exists only with glibc")
def test_kept_memory_is_not_faulted_in_again(child_run):
    assert child_run["kept"] is True
    pages = 48 * 2 ** 20 // 4096
    # glibc's default: every 48 MiB block is a fresh mapping, all of its pages fault again
    assert all(f >= 0.9 * pages for f in child_run["faults_default"]), child_run["faults_default"]
    # kept: the first block may grow the heap; later ones reuse its pages
    assert all(f < 0.02 * pages for f in child_run["faults_kept"][1:]), child_run["faults_kept"]


def test_training_step_is_bit_identical(child_run):
    items = child_run["loss_items"]
    assert len(items) == 3 and all(v > 0 for v in items)  # box, obj, cls of a real batch
    assert child_run["loss_equal"] is True
    assert child_run["params_equal"] is True  # weights after one SGD step, every parameter
    assert child_run["channels_last"] == 0  # the layout is left alone (see utils/training/cpu_speed.py)


@pytest.mark.parametrize("device", ["cuda:0", "0", "mlu", "mlu:1", "", torch.device("cuda", 0)])
def test_other_devices_are_left_alone(device, monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_speed, "keep_freed_memory", lambda: calls.append(1) or True)
    model = torch.nn.Conv2d(3, 4, 3)
    assert cpu_speed.optimise_for_training(model, device) is model
    assert calls == []


@pytest.mark.parametrize("device", ["cpu", "CPU", torch.device("cpu"), "device-object"])
def test_cpu_gets_the_setting(device, monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_speed, "keep_freed_memory", lambda: calls.append(1) or True)
    if device == "device-object":
        device = select_device("cpu", log=False)  # utils.device.devices.Device, what the trainer holds
    model = torch.nn.Conv2d(3, 4, 3)
    weight = model.weight.detach().clone()
    assert cpu_speed.optimise_for_training(model, device) is model
    assert calls == [1]
    assert torch.equal(model.weight, weight) and model.weight.is_contiguous()


def test_mlu_device_object_is_left_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_speed, "keep_freed_memory", lambda: calls.append(1) or True)

    class MluDevice:  # the attribute the trainer's utils.device.devices.Device carries
        kind = "mlu"

    model = torch.nn.Linear(2, 2)
    assert cpu_speed.optimise_for_training(model, MluDevice()) is model
    assert calls == []


# Child process: limit_openmp_spinning before torch is imported (argv[3] == "limit") or OpenMP left
# at its defaults, then two SGD steps of yolov5n on 4 real coco128 images at 64 px with two threads.
SPIN_CHILD = textwrap.dedent("""
    import hashlib, json, os, sys
    from pathlib import Path
    from utils.training.cpu_speed import limit_openmp_spinning, openmp_loaded
    loaded_before = openmp_loaded()
    applied = limit_openmp_spinning() if sys.argv[3] == "limit" else None
    env = {k: os.environ.get(k) for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    import numpy as np, torch, yaml
    from models.yolo import Model
    from utils.data.augmentations import letterbox
    from utils.data.image_files import img2label_path, read_image
    from utils.data.label_checks import parse_label_file
    from utils.training.loss import ComputeLoss, scale_loss_gains
    from utils.training.optim import build_optimizer

    late = {"loaded": openmp_loaded(), "applied": limit_openmp_spinning(environ={})}
    coco, yolo = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(2)
    imgs, targets = [], []
    for i, f in enumerate(sorted((coco / "images" / "train2017").glob("*.jpg"))[:4]):
        imgs.append(letterbox(read_image(str(f)), 64, auto=False)[0][:, :, ::-1].transpose(2, 0, 1))
        targets += [[i, *row] for row in parse_label_file(img2label_path(str(f)))[0]]
    imgs = torch.from_numpy(np.ascontiguousarray(np.stack(imgs))).float() / 255
    targets = torch.tensor(targets, dtype=torch.float32)
    hyp = yaml.safe_load((yolo / "data" / "hyps" / "hyp.scratch.yaml").read_text())
    torch.manual_seed(0)
    model = Model(str(yolo / "models" / "yolov5n.yaml"), nc=80).train()
    model.hyp = scale_loss_gains(hyp, 3, 80, 64)
    optimizer, compute_loss, items = build_optimizer(model, hyp, 4, 16), ComputeLoss(model), []
    for _ in range(2):
        loss, loss_items = compute_loss(model(imgs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        items.append(loss_items.tolist())
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()
    print(json.dumps({"loaded_before": loaded_before, "applied": applied, "env": env, "late": late,
                      "threads": torch.get_num_threads(), "loss_items": items, "weights": digest}))
""")


@pytest.fixture(scope="module")
def spin_runs(repo_root, real_images_dir):
    env = {k: v for k, v in os.environ.items() if k not in cpu_speed.OPENMP_WAIT_VARIABLES}
    runs = {}
    for mode in ("default", "limit"):
        proc = subprocess.run([sys.executable, "-c", SPIN_CHILD, str(real_images_dir), str(repo_root / "yolov5"), mode],
                              capture_output=True, text=True, timeout=300, cwd=repo_root / "yolov5", env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return runs


def test_openmp_spin_limit_applies_before_torch_and_not_after(spin_runs):
    limit = spin_runs["limit"]
    assert limit["loaded_before"] is False  # importing utils.training.cpu_speed does not load torch's OpenMP
    assert limit["applied"] is True
    assert limit["env"] == {"GOMP_SPINCOUNT": "10000", "OMP_WAIT_POLICY": None}
    assert limit["late"] == {"loaded": True, "applied": False}  # too late once torch is in
    assert spin_runs["default"]["env"] == {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": None}


def test_openmp_spin_limit_changes_no_number(spin_runs):
    default, limit = spin_runs["default"], spin_runs["limit"]
    assert default["threads"] == limit["threads"] == 2
    assert len(default["loss_items"]) == 2 and all(v > 0 for v in default["loss_items"][1])
    assert limit["loss_items"] == default["loss_items"]  # exact floats, both steps
    assert limit["weights"] == default["weights"]  # every state_dict byte after two SGD steps


@pytest.mark.parametrize("user", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "INFINITY"},
                                  {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "5"}])
def test_openmp_spin_limit_keeps_the_users_choice(user, monkeypatch):
    monkeypatch.setattr(cpu_speed, "openmp_loaded", lambda: False)
    environ = dict(user, PATH="/bin")
    assert cpu_speed.limit_openmp_spinning(environ) is True
    assert environ == dict(user, PATH="/bin")


def test_openmp_spin_limit_sets_nothing_once_openmp_is_loaded(monkeypatch):
    environ = {"PATH": "/bin"}
    assert cpu_speed.openmp_loaded() is True  # this pytest process imported torch
    assert cpu_speed.limit_openmp_spinning(environ) is False
    assert environ == {"PATH": "/bin"}
    monkeypatch.setattr(cpu_speed, "openmp_loaded", lambda: False)
    assert cpu_speed.limit_openmp_spinning(environ) is True
    assert environ == {"PATH": "/bin", "GOMP_SPINCOUNT": "10000"}


def test_train_py_limits_spinning_before_torch_loads():
    """train.py's main sets the limit before anything imports torch (a fresh interpreter, --help)."""
    code = ("import os, sys\nimport train\nloaded = 'torch' in sys.modules\n"
            "try:\n    train.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(loaded, os.environ.get('GOMP_SPINCOUNT'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], cwd=YOLO_DIR, env=env, capture_output=True, text=True,
                         timeout=120).stdout.strip().splitlines()[-1]
    assert out == "False 10000"
