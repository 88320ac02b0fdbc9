"""The stand-in mlu device itself: a separate torch device on host memory, with the behaviour of an
accelerator where our code depends on it (mixed-device refusal, AMP, scaler, events, memory,
seeding) and counters of every host<->device copy and synchronisation."""
import copy
import io
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from train_helpers import REPO_ROOT, YOLO_DIR


def test_tensors_live_on_a_separate_device(standin_mlu):
    x = torch.arange(6.0).reshape(2, 3).to("mlu")
    assert x.device == torch.device("mlu", 0) and x.is_mlu and not torch.arange(1).is_mlu
    assert standin_mlu.device_count() == 2 and torch.zeros(1, device="mlu:1").device.index == 1
    assert x.cpu().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert (x.t().contiguous() * 2).cpu().tolist() == [[0, 6], [2, 8], [4, 10]]  # views and kernels
    lin = torch.nn.Linear(3, 2).mlu()
    assert lin.weight.device.type == "mlu" and lin(x).device.type == "mlu"
    y = torch.zeros(5, device="mlu")
    y[1:3] += 1  # in place through a view
    assert y.cpu().tolist() == [0, 1, 1, 0, 0]
    assert torch.arange(4, device="mlu").cpu().tolist() == [0, 1, 2, 3]  # out= kernels that resize


@pytest.mark.parametrize("op", [
    lambda d, h: d + h,
    lambda d, h: torch.cat([d, h]),
    lambda d, h: torch.nn.functional.conv2d(d.reshape(1, 1, 2, 2), h.reshape(1, 1, 2, 2)),
    lambda d, h: d.mul_(h),
    lambda d, h: torch.where(d > 0, d, h),
])
def test_mixed_devices_fail_like_an_accelerator(standin_mlu, op):
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        op(torch.ones(4, device="mlu"), torch.ones(4))
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        op(torch.ones(4, device="mlu:0"), torch.ones(4, device="mlu:1"))


def test_cpu_scalars_may_join_device_tensors(standin_mlu):
    out = torch.ones(3, device="mlu") * torch.tensor(2.5)  # 0-dim CPU tensor, as CUDA allows
    assert out.device.type == "mlu" and out.cpu().tolist() == [2.5] * 3
    assert torch.ones(3, device="mlu")[torch.tensor([0, 2])].shape == (2,)  # CPU indices, as CUDA


def test_counters_count_every_host_sync_and_copy(standin_counters):
    x = torch.arange(10, dtype=torch.float32)
    d = x.to("mlu")
    c = standin_counters()
    assert (c["h2d_copies"], c["h2d_bytes"], c["d2h_copies"]) == (1, 40, 0)
    d.sum().item()
    d[0].tolist()
    bool(d[3] > 1)
    d.cpu()
    c = standin_counters()
    assert (c["d2h_copies"], c["scalar_reads"]) == (4, 2)  # item, tolist, bool, cpu
    assert c["d2h_bytes"] == 4 + 4 + 1 + 40  # a float, a float, a bool, ten floats
    str(d)  # printing reads the values too
    assert standin_counters()["d2h_copies"] > 4
    before = standin_counters()
    (d * 2 + 1).relu_()
    assert standin_counters()["d2h_copies"] == before["d2h_copies"]  # device work alone: no sync
    torch.mlu.synchronize()
    ev = torch.mlu.Event(enable_timing=True)
    ev.record()
    ev.synchronize()
    assert standin_counters()["synchronizes"] == 2


def test_event_elapsed_time(standin_mlu):
    start, end = standin_mlu.Event(enable_timing=True), standin_mlu.Event(enable_timing=True)
    start.record()
    time.sleep(0.05)
    end.record()
    end.synchronize()
    assert 45 <= start.elapsed_time(end) < 5000
    untimed = standin_mlu.Event()
    untimed.record()
    with pytest.raises(RuntimeError, match="enable_timing=True"):
        untimed.elapsed_time(end)


def test_memory_statistics_follow_the_allocator(standin_mlu):
    standin_mlu.reset_peak_memory_stats()
    base = standin_mlu.memory_allocated()
    a = torch.empty(1024, device="mlu")  # 4096 bytes
    assert standin_mlu.memory_allocated() == base + 4096 == standin_mlu.memory_reserved()
    b = torch.empty(256, dtype=torch.float64, device="mlu")  # 2048 bytes
    assert standin_mlu.max_memory_allocated() == base + 6144
    del a, b
    assert standin_mlu.memory_allocated() == base and standin_mlu.max_memory_allocated() == base + 6144
    standin_mlu.reset_peak_memory_stats()
    assert standin_mlu.max_memory_allocated() == base
    torch.empty(8, device="mlu:1")
    assert standin_mlu.max_memory_allocated(1) >= 32 and standin_mlu.memory_allocated(1) == 0


def test_seeding_and_generator_state(standin_mlu):
    torch.manual_seed(7)  # reaches the device module, as for CUDA
    a = torch.rand(5, device="mlu")
    standin_mlu.manual_seed(7)
    b = torch.rand(5, device="mlu")
    state = standin_mlu.get_rng_state()
    c = torch.randn(3, device="mlu")
    standin_mlu.set_rng_state(state)
    assert torch.equal(a.cpu(), b.cpu()) and torch.equal(torch.randn(3, device="mlu").cpu(), c.cpu())
    standin_mlu.manual_seed(8)
    assert not torch.equal(torch.rand(5, device="mlu").cpu(), a.cpu())


def test_autocast_casts_to_fp16_or_bf16(standin_mlu):
    x = torch.randn(1, 3, 8, 8, device="mlu")
    conv = torch.nn.Conv2d(3, 4, 3).to("mlu")
    with torch.autocast("mlu"):
        y = conv(x)
        assert y.dtype == torch.float16
        assert torch.softmax(y, 1).dtype == torch.float32  # precision-sensitive ops stay fp32
        assert conv.weight.dtype == torch.float32
    with torch.autocast("mlu", dtype=torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16
    assert conv(x).dtype == torch.float32


def test_grad_scaler_scales_unscales_and_skips_non_finite_steps(standin_mlu):
    w = torch.nn.Parameter(torch.ones(3, device="mlu"))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("mlu", init_scale=1024.0)
    loss = (w * 2).sum()
    assert scaler.scale(loss).item() == 6 * 1024
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    assert w.grad.cpu().tolist() == [2.0] * 3
    scaler.step(opt)
    scaler.update()
    assert w.detach().cpu().tolist() == pytest.approx([0.8] * 3) and scaler.get_scale() == 1024.0
    opt.zero_grad()
    scaler.scale((w * float("inf")).sum()).backward()
    scaler.step(opt)  # skipped: the gradients are not finite
    scaler.update()
    assert w.detach().cpu().tolist() == pytest.approx([0.8] * 3) and scaler.get_scale() == 512.0


def test_model_step_on_mlu_equals_cpu_bit_for_bit(standin_mlu):
    """yolov5n forward, backward and SGD step. Caught a stand-in bug: silu_backward has a CPU
    kernel and a decomposition, and a backend without its own kernel took the decomposition,
    whose gradients differ in the last bit (the loader now routes such ops to the CPU kernel)."""
    from models.yolo import Model
    torch.manual_seed(0)
    cpu = Model(str(YOLO_DIR / "models" / "yolov5n.yaml"), nc=6)
    dev = copy.deepcopy(cpu).to("mlu")
    x = torch.rand(2, 3, 64, 64)
    for model, inp in ((cpu, x), (dev, x.to("mlu"))):
        sum(p.float().sum() for p in model(inp)).backward()
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True).step()
    for (name, p), q in zip(cpu.named_parameters(), dev.parameters()):
        assert q.device.type == "mlu" and torch.equal(p, q.cpu()), name
    silu_in, grad = torch.randn(1000), torch.randn(1000)
    assert torch.equal(torch.ops.aten.silu_backward(grad, silu_in),
                       torch.ops.aten.silu_backward(grad.to("mlu"), silu_in.to("mlu")).cpu())


def test_deepcopy_save_load_and_pinned_memory(standin_mlu):
    lin = torch.nn.Linear(3, 2).to("mlu")
    twin = copy.deepcopy(lin)
    assert twin.weight.device.type == "mlu" and twin.weight.data_ptr() != lin.weight.data_ptr()
    assert torch.equal(twin.weight.cpu(), lin.weight.cpu())
    buf = io.BytesIO()
    torch.save(lin.state_dict(), buf)
    buf.seek(0)
    assert torch.load(buf, map_location="cpu")["weight"].device.type == "cpu"
    pinned = torch.ones(4).pin_memory()
    assert pinned.is_pinned() and not torch.ones(4).is_pinned()
    assert pinned.to("mlu", non_blocking=True).device.type == "mlu"


def _python(code, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "YOLOV5_STANDIN_MLU"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], cwd=YOLO_DIR, env=env, capture_output=True, text=True,
                          timeout=600)


def test_product_code_loads_nothing_without_the_variable():
    code = ("import sys, torch, train, val, detect, export\n"
            "from utils.device.devices import select_device, inventory\n"
            "select_device('cpu'); inventory()\n"
            "print(sorted(m for m in sys.modules if 'standin' in m and m != 'utils.device.standin_device'),"
            " torch._C._get_privateuse1_backend_name(), hasattr(torch, 'mlu'))\n"
            "from utils.errors import UserError\n"
            "try:\n    select_device('mlu')\nexcept UserError as e:\n    print(e)\n")
    run = _python(code)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "[] privateuseone False"
    assert lines[1].startswith("--device 'mlu': torch_mlu is not installed")


def test_variable_loads_it_and_the_banner_and_collect_env_say_stand_in(standin_mlu):
    run = _python("from utils.device.devices import select_device\nd = select_device('mlu:1')\n"
                  "print(d.banner(), d.torch_device, d.name)", {"YOLOV5_STANDIN_MLU": "1"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1].strip() == "mlu:1 standin-mlu"
    banner = [ln for ln in run.stdout.splitlines() if "YOLOv5" in ln][0]
    assert banner.endswith("MLU:1 (standin-mlu) stand-in on host memory (test device, not a Cambricon card)")
    env = dict(os.environ, YOLOV5_STANDIN_MLU="1")
    report = subprocess.run([sys.executable, str(REPO_ROOT / "utils_mlu" / "collect_env.py"), "--json"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr
    info = json.loads(report.stdout)
    assert info["cambricon"]["torch_mlu"] == "not installed"
    assert info["cambricon"]["torch_mlu_status"] == "ok (stand-in on host memory (test device, not a Cambricon card))"
    assert info["devices"]["mlu_devices"].startswith("2 (MLU:0 standin-mlu 0MB; MLU:1 standin-mlu 0MB)")
    assert info["devices"]["mlu_devices"].endswith("; stand-in on host memory (test device, not a Cambricon card)")

