"""Device layer: --device grammar, environment rules, and every per-device decision.

CPU decisions run for real. CUDA decisions that need no GPU run against a patched
torch.cuda (availability, count, properties only; no tensor goes to CUDA). MLU decisions run
against tests/mlu_double.py in both torch_mlu API shapes; it records what we ask of torch_mlu.
"""
import json
import os
import socket
import subprocess
import sys
import time
import types
from contextlib import nullcontext
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from mlu_double import MluDouble
from utils import torch_utils
from utils.device import devices
from utils.device.device_spec import launch_env, parse_device, visible_devices
from utils.device.devices import Device, select_device
from utils.errors import UserError, exit_on_user_error

ENV_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "CUDA_VISIBLE_DEVICES",
            "MLU_VISIBLE_DEVICES", "CN_VISIBLE_DEVICES")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Two visible CUDA devices as far as discovery is concerned (no kernels are run)."""
    props = {0: types.SimpleNamespace(name="Fake GPU A", total_memory=16 * 2 ** 30),
             1: types.SimpleNamespace(name="Fake GPU B", total_memory=8 * 2 ** 30)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)


@pytest.fixture
def mlu(no_cuda):
    """Factory installing an MluDouble; uninstalled (torch.mlu removed) after the test."""
    made = []

    def make(**kwargs):
        made.append(MluDouble(**kwargs).install())
        return made[-1]
    yield make
    for double in made:
        double.uninstall()
    assert not hasattr(torch, "mlu") and "torch_mlu" not in sys.modules


# --- --device grammar ------------------------------------------------------------------------
@pytest.mark.parametrize("text,kind,indices", [
    ("", "auto", ()), (None, "auto", ()), ("cpu", "cpu", ()), (" CPU ", "cpu", ()),
    ("0", "cuda", (0,)), ("0,1,2,3", "cuda", (0, 1, 2, 3)), ("1, 0", "cuda", (1, 0)),
    ("cuda", "cuda", ()), ("cuda:1", "cuda", (1,)), ("CUDA:0,1", "cuda", (0, 1)),
    ("mlu", "mlu", ()), ("mlu:3", "mlu", (3,)), ("MLU:0,1", "mlu", (0, 1)),
])
def test_parse_device_forms(text, kind, indices):
    req = parse_device(text)
    assert (req.kind, req.indices) == (kind, indices)


@pytest.mark.parametrize("text,needle", [
    ("gpu", "use 'cuda' or an index"), ("mps", "not supported"), ("cuda:x", "'mlu:N'"),
    ("0,,1", "'0,1'"), ("0,", "'cuda:N'"), ("-1", "'cpu'"), ("mlu:", "'mlu'"),
    ("cpu:0", "'cpu'"), ("0,0", "lists a device twice"), ("npu", "'mlu:N'"),
])
def test_parse_device_rejects_with_one_clear_line(text, needle):
    with pytest.raises(UserError) as e:
        parse_device(text)
    assert needle in str(e.value) and repr(text) in str(e.value) and "\n" not in str(e.value)


# --- environment: visibility and torchrun ------------------------------------------------------
@pytest.mark.parametrize("kind,env,variable,entries", [
    ("cuda", {}, None, None),
    ("cuda", {"CUDA_VISIBLE_DEVICES": "0,1"}, "CUDA_VISIBLE_DEVICES", ("0", "1")),
    ("cuda", {"CUDA_VISIBLE_DEVICES": ""}, "CUDA_VISIBLE_DEVICES", ()),
    ("cuda", {"CUDA_VISIBLE_DEVICES": "-1"}, "CUDA_VISIBLE_DEVICES", ()),
    ("cuda", {"CUDA_VISIBLE_DEVICES": "2,-1,3"}, "CUDA_VISIBLE_DEVICES", ("2",)),
    ("cuda", {"CUDA_VISIBLE_DEVICES": "GPU-8a1b-22,1"}, "CUDA_VISIBLE_DEVICES", ("GPU-8a1b-22", "1")),
    ("cuda", {"MLU_VISIBLE_DEVICES": "0"}, None, None),
    ("mlu", {"MLU_VISIBLE_DEVICES": "0,1,2,3", "CUDA_VISIBLE_DEVICES": "0"},
     "MLU_VISIBLE_DEVICES", ("0", "1", "2", "3")),
    ("mlu", {"CN_VISIBLE_DEVICES": "3", "MLU_VISIBLE_DEVICES": "0,1"}, "CN_VISIBLE_DEVICES", ("3",)),
    # torch_mlu 2.x falls back to CUDA_VISIBLE_DEVICES: upstream's '-1' for cpu would hide MLUs
    ("mlu", {"CUDA_VISIBLE_DEVICES": "-1"}, "CUDA_VISIBLE_DEVICES", ()),
])
def test_visible_devices(kind, env, variable, entries):
    seen = visible_devices(kind, env)
    assert (seen.variable, seen.entries) == (variable, entries)
    assert seen.count == (None if entries is None else len(entries))


def test_visible_devices_describe():
    assert visible_devices("mlu", {"MLU_VISIBLE_DEVICES": ""}).describe() == "MLU_VISIBLE_DEVICES=''"
    assert visible_devices("mlu", {"MLU_VISIBLE_DEVICES": "0,2"}).describe() == "MLU_VISIBLE_DEVICES=0,2"
    assert visible_devices("cuda", {}).describe() == "no visible-device variable set"


def test_launch_env():
    assert launch_env({}) == launch_env({"LOCAL_RANK": ""})
    plain = launch_env({})
    assert (plain.local_rank, plain.rank, plain.world_size, plain.distributed) == (-1, -1, 1, False)
    env = launch_env({"LOCAL_RANK": "1", "RANK": "3", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})
    assert (env.local_rank, env.rank, env.world_size, env.local_world_size) == (1, 3, 4, 2)
    with pytest.raises(UserError, match=r"LOCAL_RANK='x' is not an integer"):
        launch_env({"LOCAL_RANK": "x"})
    with pytest.raises(UserError, match="outside LOCAL_WORLD_SIZE=2"):
        launch_env({"LOCAL_RANK": "2", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})


# --- CPU, for real -----------------------------------------------------------------------------
def test_cpu_device_decisions():
    dev = select_device("cpu", log=False)
    assert (dev.kind, dev.index, dev.indices, dev.name) == ("cpu", None, (), "CPU")
    assert dev.torch_device == torch.device("cpu")
    assert not dev.is_accelerator and not dev.pin_memory and not dev.nms_on_cpu
    assert dev.postprocess_device == torch.device("cpu")
    assert dev.dist_backend == "gloo" and dev.ddp_kwargs() == {}
    assert (dev.amp_default(False), dev.amp_default(True)) == (False, True)
    assert dev.amp_dtype() == torch.bfloat16
    with pytest.raises(UserError, match="fp16 autocast is not offered on CPU"):
        dev.amp_dtype("fp16")
    assert dev.memory_reserved() is None and dev.peak_memory() is None
    dev.reset_peak_memory()
    dev.synchronize()
    assert dev.checkpoint_map_location == "cpu"


def test_cpu_autocast_runs_matmul_in_bf16():
    dev = select_device("cpu", log=False)
    a = torch.randn(8, 8)
    with dev.autocast(True):
        assert (a @ a).dtype == torch.bfloat16
    with dev.autocast(False):
        assert (a @ a).dtype == torch.float32
    assert isinstance(dev.autocast(False), nullcontext)


def test_cpu_scaler_is_a_disabled_pass_through():
    dev = select_device("cpu", log=False)
    scaler = dev.make_grad_scaler(True)
    assert not scaler.is_enabled()
    loss = torch.tensor(3.0, requires_grad=True)
    assert scaler.scale(loss) is loss


def test_cpu_stopwatch_measures_host_time():
    watch = select_device("cpu", log=False).stopwatch()
    watch.start()
    time.sleep(0.03)
    lap = watch.stop()
    assert 25 <= lap.elapsed_ms < 1000 and lap.hardware_us is None
    with pytest.raises(RuntimeError, match="before start"):
        watch.stop()


def test_seed_touches_only_device_generators(monkeypatch):
    """Host generators and cuDNN flags belong to utils/training/seeds.py; Device.seed must not reset them."""
    torch.backends.cudnn.deterministic = True
    state = torch.get_rng_state()
    select_device("cpu", log=False).seed(7)
    assert torch.equal(torch.get_rng_state(), state) and torch.backends.cudnn.deterministic
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    Device("cuda", 0, (0,), module=torch.cuda).seed(9)
    assert seeded == [9] and torch.backends.cudnn.deterministic


def test_move_tensors_modules_and_containers():
    dev = select_device("cpu", log=False)
    batch = {"img": torch.zeros(2), "meta": [torch.ones(1), "name"], "n": 3}
    moved = dev.move(batch)
    assert moved["img"].device.type == "cpu" and moved["meta"][1] == "name" and moved["n"] == 3
    layer = torch.nn.Linear(2, 2)
    assert dev.move(layer) is layer


def test_auto_without_accelerators_is_cpu_and_env_untouched(no_cuda):
    before = dict(os.environ)
    assert select_device("", log=False).kind == "cpu"
    assert select_device("cpu", log=False).kind == "cpu"
    assert dict(os.environ) == before  # no CUDA_VISIBLE_DEVICES=-1 (it would hide MLUs too)


def test_banner_logged(caplog):
    with caplog.at_level("INFO", logger="yolov5"):
        select_device("cpu")
        select_device("cpu", newline=False)
    first, second = [r.getMessage() for r in caplog.records]
    assert first.startswith("YOLOv5 🚀 ") and f"torch {torch.__version__} CPU\n" in first
    assert second == first.rstrip()


def test_real_gloo_process_group_on_cpu(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0",
                 "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    dev = select_device("cpu", log=False)
    assert (dev.local_rank, dev.world_size) == (0, 1)
    dev.init_distributed(timeout_s=60)
    try:
        assert dist.get_backend() == "gloo"
        with dev.local_zero_first():
            dev.barrier()
    finally:
        dist.destroy_process_group()


# --- CUDA decisions (discovery patched, nothing runs on a GPU) --------------------------------
def test_cuda_unavailable_is_a_user_error(no_cuda):
    with pytest.raises(UserError) as e:
        select_device("0", log=False)
    msg = str(e.value)
    assert "CUDA is not available" in msg and "--device cpu" in msg and "\n" not in msg


def test_cuda_index_lists(fake_cuda):
    dev = select_device("0,1", batch_size=4, log=False)
    assert (dev.kind, dev.index, dev.indices) == ("cuda", 0, (0, 1))
    assert [p.name for p in dev.props] == ["Fake GPU A", "Fake GPU B"]
    assert dev.torch_device == torch.device("cuda", 0)
    banner = dev.banner("v6.0-test")
    assert banner.startswith(f"YOLOv5 🚀 v6.0-test torch {torch.__version__} CUDA:0 (Fake GPU A, 16384MB)\n")
    assert banner.splitlines()[1].strip() == "CUDA:1 (Fake GPU B, 8192MB)"
    assert select_device("", log=False).indices == (0, 1)  # auto: every visible GPU (upstream)
    assert select_device("cuda:1", log=False).indices == (1,)
    assert select_device("cuda", log=False).indices == (0,)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_cuda_missing_index_and_batch_rule(fake_cuda, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    with pytest.raises(UserError) as e:
        select_device("2", log=False)
    assert "CUDA device 2 does not exist; 2 visible (indices 0-1, CUDA_VISIBLE_DEVICES=4,5)" in str(e.value)
    with pytest.raises(UserError, match="--batch-size 3 is not a multiple of the 2 devices"):
        select_device("0,1", batch_size=3, log=False)
    with pytest.raises(UserError, match="not a multiple"):
        torch_utils.select_device("0,1", batch_size=5)


def test_cuda_amp_scaler_ddp(fake_cuda, monkeypatch):
    dev = select_device("cuda:1", log=False)
    assert dev.amp_default(False) is True  # upstream: AMP on by default on CUDA
    assert dev.amp_dtype() == torch.float16
    with pytest.raises(UserError, match="does not support bf16"):
        dev.amp_dtype("bf16")
    scaler = dev.make_grad_scaler(True)
    assert isinstance(scaler, torch.amp.GradScaler) and scaler._device == "cuda" and scaler.is_enabled()
    assert not dev.make_grad_scaler(False).is_enabled()
    assert dev.ddp_kwargs() == {"device_ids": [1], "output_device": 1}
    assert dev.dist_backend == ("nccl" if dist.is_nccl_available() else "gloo")
    assert not dev.nms_on_cpu and dev.pin_memory
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    monkeypatch.setattr(dist, "barrier", lambda **kw: calls.append(kw))
    dev.barrier()
    assert calls == [{"device_ids": [1]}]


def test_cuda_ranks_under_torchrun(fake_cuda, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert select_device("", log=False).indices == (1,)
    assert select_device("0,1", batch_size=8, log=False).indices == (1,)
    assert select_device("1,0", log=False).index == 0
    with pytest.raises(UserError, match="lists 1 device.*torchrun starts 2 processes"):
        select_device("cuda:1", log=False)
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(UserError, match="LOCAL_RANK 2 needs CUDA device 2 but only 2 are visible"):
        select_device("cuda", log=False)


def test_torch_utils_front_returns_torch_device():
    assert torch_utils.select_device("cpu") == torch.device("cpu")


# --- MLU through the test double ---------------------------------------------------------------
def test_mlu_without_torch_mlu(no_cuda):
    assert devices.probe_mlu().status == "missing"
    with pytest.raises(UserError) as e:
        select_device("mlu", log=False)
    msg = str(e.value)
    assert msg.startswith("--device 'mlu': torch_mlu is not installed")
    assert "cannot be installed with pip" in msg and "Cambricon's image" in msg
    assert "--device cpu" in msg and "\n" not in msg


def test_cli_exits_2_without_traceback(tmp_path, repo_root):
    script = ("from utils.errors import exit_on_user_error\n"
              "from utils.device.devices import select_device\n"
              "exit_on_user_error(lambda: select_device('mlu'))()\n")
    env = dict(os.environ, PYTHONPATH=str(repo_root / "yolov5"), CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: --device 'mlu': torch_mlu is not installed")


def test_cli_wrapper_in_process(fake_cuda, capsys):
    with pytest.raises(SystemExit) as e:
        exit_on_user_error(lambda: select_device("7", log=False))()
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("ERROR: --device '7': CUDA device 7 does not exist")


def test_mlu_patched_torch_without_package(mlu):
    mlu(package=False, patched_torch=True)
    with pytest.raises(UserError, match="this torch is Cambricon's build, no module 'torch_mlu'"):
        select_device("mlu", log=False)


def test_mlu_import_failure(mlu):
    double = mlu(import_error="libcnrt.so: cannot open shared object file")
    with pytest.raises(UserError) as e:
        select_device("mlu:0", log=False)
    assert "torch_mlu is installed but unusable (import torch_mlu failed: ImportError: libcnrt.so" \
        in str(e.value) and "NEUWARE_HOME" in str(e.value)
    assert double.names() == ["import torch_mlu"]


def test_mlu_no_device_mentions_visibility(mlu, monkeypatch):
    monkeypatch.setenv("MLU_VISIBLE_DEVICES", "")
    mlu(device_count=0)
    with pytest.raises(UserError) as e:
        select_device("mlu", log=False)
    assert "torch_mlu 1.22.0+torch2.4.0 is installed but no MLU is visible" in str(e.value)
    assert "MLU_VISIBLE_DEVICES=''" in str(e.value) and "cnmon" in str(e.value)


def test_mlu_missing_index(mlu):
    mlu(device_count=2)
    with pytest.raises(UserError, match="MLU device 2 does not exist; 2 visible"):
        select_device("mlu:2", log=False)


@pytest.mark.parametrize("api", ["2.x", "1.x"])
def test_mlu_selection_imports_before_probing(mlu, api):
    double = mlu(api=api, device_count=2)
    dev = select_device("", log=False)  # auto: no CUDA, so MLU
    assert (dev.kind, dev.index, dev.indices) == ("mlu", 0, (0,))
    names = double.names()
    assert names[0] == "import torch_mlu" and names.index("is_available") > 0
    assert dev.runtime_version == double.version
    assert dev.name == ("MLU370-X8" if api == "2.x" else "MLU")
    assert dev.is_accelerator and dev.pin_memory
    assert "MLU:0 (MLU370-X8, 49152MB) torch_mlu 1.22.0" in dev.banner("v") if api == "2.x" else \
        "MLU:0 (MLU) torch_mlu 1.17.0" in dev.banner("v")
    # honest double: 'mlu' is not registered with torch, so no torch.device (and no tensor) exists
    with pytest.raises(RuntimeError, match="does not know the device type 'mlu'"):
        dev.torch_device


@pytest.mark.parametrize("api", ["2.x", "1.x"])
def test_mlu_amp_policy(mlu, api, monkeypatch):
    mlu(api=api)
    dev = select_device("mlu", log=False)
    assert (dev.amp_default(False), dev.amp_default(True)) == (False, True)  # --pyamp only
    assert dev.amp_dtype() == torch.float16
    with pytest.raises(UserError, match=r"MLU:0 \(.*\) does not support bf16"):
        dev.amp_dtype("bf16")  # MLU370 (major 3) and 1.x builds: fp16 only
    entered = []
    monkeypatch.setattr(torch, "autocast", lambda **kw: entered.append(kw) or nullcontext())
    with dev.autocast(True):
        pass
    with dev.autocast(False):
        pass
    assert entered == [{"device_type": "mlu", "dtype": torch.float16}]


def test_mlu_bf16_where_supported(mlu):
    mlu(api="2.x", major=5, name="MLU590")
    dev = select_device("mlu", log=False)
    assert dev.amp_dtype("bf16") == torch.bfloat16 and dev.amp_dtype() == torch.float16
    assert not dev.make_grad_scaler(True, dtype="bf16").is_enabled()  # bf16 needs no scaling


def test_mlu_scaler_choice(mlu, monkeypatch):
    double = mlu(api="2.x")
    dev = select_device("mlu", log=False)
    scaler = dev.make_grad_scaler(True)
    assert isinstance(scaler, torch.amp.GradScaler) and scaler._device == "mlu" and scaler.is_enabled()
    assert not dev.make_grad_scaler(False).is_enabled()
    assert double.called("amp.GradScaler") == []  # the deprecated one is not used when avoidable
    monkeypatch.delattr(torch.amp, "GradScaler")  # torch < 2.3: the device module's own
    with pytest.warns(FutureWarning):
        own = dev.make_grad_scaler(True)
    assert own.is_enabled() and double.called("amp.GradScaler") == [((), {"enabled": True})]


def test_mlu_events_2x(mlu):
    double = mlu(api="2.x", device_count=2)
    dev = select_device("mlu:1", log=False)
    double.calls.clear()
    double.scripted_times.append((12.5, 9000.0))
    watch = dev.stopwatch()
    watch.start()
    lap = watch.stop()
    assert lap.elapsed_ms == 12.5 and lap.hardware_us == 9000.0
    assert double.names() == ["Event", "Event.record", "Event", "Event.record", "Event.synchronize",
                              "Event.hardware_time", "Event.elapsed_time"]
    assert all(kw == {"enable_timing": True} for _, kw in double.called("Event"))


def test_mlu_notifier_1x(mlu):
    double = mlu(api="1.x")
    dev = select_device("mlu", log=False)
    double.calls.clear()
    double.scripted_times.append((4.0, 3500.0))
    watch = dev.stopwatch()
    watch.start()
    assert watch.stop() == (4.0, 3500.0)
    assert double.names() == ["Notifier", "Notifier.place", "Notifier", "Notifier.place",
                              "Notifier.synchronize", "Notifier.hardware_time",
                              "Notifier.elapsed_time"]


@pytest.mark.parametrize("api", ["2.x", "1.x"])
def test_mlu_sync_memory_seed(mlu, api):
    double = mlu(api=api, device_count=2)
    dev = select_device("mlu:1", log=False)
    double.calls.clear()
    dev.synchronize()
    assert dev.memory_reserved() == double.memory_reserved_bytes
    assert dev.peak_memory() == double.peak_bytes
    dev.reset_peak_memory()
    dev.seed(11)
    dev.set_current()
    expected = [("synchronize", ()), ("memory_reserved", (1,)), ("max_memory_allocated", (1,))]
    expected += [("reset_peak_memory_stats", (1,))] if api == "2.x" else []  # 1.x has no reset
    expected += [("manual_seed_all", (11,)), ("set_device", (1,))]
    assert [(n, a) for n, a, _ in double.calls] == expected


def test_mlu_distributed_and_postprocess(mlu, monkeypatch):
    double = mlu(api="2.x", device_count=2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    dev = select_device("mlu", log=False)
    assert (dev.index, dev.local_rank, dev.world_size) == (1, 1, 2)
    assert dev.dist_backend == "cncl" and dev.ddp_kwargs() == {}
    assert dev.nms_on_cpu and dev.postprocess_device == torch.device("cpu")
    inits, barriers = [], []
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: inits.append(
        (double.current, kw)))
    dev.init_distributed()
    assert inits == [(1, {"backend": "cncl"})]  # set_device(1) happened before the group
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda **kw: barriers.append(kw))
    with dev.local_zero_first():
        barriers.append("body")
    assert barriers == [{}, "body"]  # rank 1 waits for rank 0 first; no device_ids on MLU


def test_mlu_ranks_under_torchrun(mlu, monkeypatch):
    mlu(api="2.x", device_count=4)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert select_device("mlu:2,3", batch_size=32, log=False).index == 3
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert select_device("mlu", log=False).index == 3
    with pytest.raises(UserError, match="lists 2 device"):
        select_device("mlu:0,1", log=False)


def test_mlu_1x_ddp_rank_mapping(mlu, monkeypatch):
    """Catch-era builds (torch.mlu is torch_mlu.core.mlu_model) on the second node of a 2 x 4 job."""
    double = mlu(api="1.x", device_count=4)
    for name, value in {"LOCAL_RANK": "2", "RANK": "6", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    dev = select_device("mlu", batch_size=64, log=False)
    assert (dev.kind, dev.index, dev.indices, dev.local_rank, dev.world_size) == ("mlu", 2, (2,), 2, 8)
    assert dev.module is sys.modules["torch_mlu.core.mlu_model"]
    assert dev.dist_backend == "cncl" and dev.ddp_kwargs() == {}
    assert dev.nms_on_cpu and dev.postprocess_device == torch.device("cpu")
    inits = []
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: inits.append((double.current, kw)))
    double.calls.clear()
    dev.init_distributed(timeout_s=30)
    assert [(n, a) for n, a, _ in double.calls] == [("set_device", (2,))]  # before the group exists
    assert inits == [(2, {"backend": "cncl", "timeout": timedelta(seconds=30)})]
    barriers = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda **kw: barriers.append(kw))
    dev.barrier()
    assert barriers == [{}]  # device_ids is NCCL-only


def test_validator_runs_nms_on_the_postprocess_device(repo_root, real_images_dir, tmp_path, monkeypatch):
    """The validator hands NMS predictions on `Device.postprocess_device` (CPU for MLU, above).

    No second real device exists here, so a CPU Device whose post-processing device is 'meta'
    shows that the validator moves predictions to whatever the device layer names."""
    from models.yolo import Model
    from utils.evaluation import validator
    from utils.data.loaders import create_dataloader

    class PostprocessOnMeta(Device):
        @property
        def postprocess_device(self):
            return torch.device("meta")

    class Stop(Exception):
        pass

    received = []

    def recording_nms(prediction, *args, **kwargs):
        received.append((prediction.device, prediction.dtype, tuple(prediction.shape)))
        raise Stop
    monkeypatch.setattr(validator, "non_max_suppression", recording_nms)
    listing = tmp_path / "images.txt"
    images = sorted((real_images_dir / "images" / "train2017").glob("*.jpg"))[:2]
    listing.write_text("".join(f"{p}\n" for p in images))
    loader, _ = create_dataloader(str(listing), 64, 2, 32, rect=True, pad=0.5, workers=0)
    torch.manual_seed(0)
    model = Model(str(repo_root / "yolov5" / "models" / "yolov5n.yaml"), nc=80)
    for dev in (PostprocessOnMeta("cpu"), select_device("cpu", log=False)):
        with pytest.raises(Stop):
            validator.run({"nc": 80, "names": [str(i) for i in range(80)]}, model=model, dataloader=loader,
                          device=dev, plots=False)
    assert [r[0] for r in received] == [torch.device("meta"), torch.device("cpu")]
    assert all(r[1] == torch.float32 and r[2][0] == 2 and r[2][2] == 85 for r in received)


def test_checkpoints_load_on_cpu_then_move(upstream_checkpoint, monkeypatch):
    """Every checkpoint load maps to CPU first (as Cambricon's MLU port does), then moves to the target."""
    from models.experimental import attempt_load
    from utils.io import checkpoint

    asked = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        asked.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)
    monkeypatch.setattr(torch, "load", recording_load)
    ckpt = checkpoint.load_checkpoint(upstream_checkpoint, map_location=torch.device("meta"))
    assert next(ckpt["model"].parameters()).device == torch.device("meta")
    model = attempt_load(upstream_checkpoint, map_location=torch.device("meta"))
    assert {p.device for p in model.parameters()} == {torch.device("meta")}
    assert asked == ["cpu", "cpu"]


def test_mlu_several_cards_need_torchrun(mlu):
    mlu(api="2.x", device_count=2)
    with pytest.raises(UserError, match=r"one process drives one MLU .*--nproc_per_node 2 "
                                        r"train.py --device mlu:0,1"):
        select_device("mlu:0,1", log=False)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.cuda.amp.GradScaler on new torch
def test_mlu_scaler_missing_on_old_torch(mlu, monkeypatch):
    double = mlu(api="2.x")
    dev = select_device("mlu", log=False)
    monkeypatch.delattr(torch.amp, "GradScaler")
    monkeypatch.delattr(double.device_module.amp, "GradScaler")
    with pytest.raises(UserError, match="fp16 AMP on MLU needs a GradScaler"):
        dev.make_grad_scaler(True)
    assert not dev.make_grad_scaler(False).is_enabled()


def test_auto_under_torchrun_takes_local_rank(fake_cuda, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(UserError, match="LOCAL_RANK 3 needs CUDA device 3 but only 2 are visible"):
        select_device("", log=False)


def test_mlu_rank_beyond_visible_cards(mlu, monkeypatch):
    mlu(api="2.x", device_count=1)
    monkeypatch.setenv("MLU_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"LOCAL_RANK 1 needs MLU device 1 but only 1 are visible "
                                        r"\(MLU_VISIBLE_DEVICES=0\)"):
        select_device("mlu", log=False)


def test_registered_backend_in_subprocess(repo_root):
    """With 'mlu' registered as torch_mlu 2.x does: real torch.device, autocast and GradScaler."""
    script = r"""
import json, torch
from mlu_double import MluDouble
from utils.device.devices import select_device
double = MluDouble(api="2.x", device_count=2, register_backend=True).install()
dev = select_device("mlu:1", log=False)
out = {"device": str(dev.torch_device), "post": str(dev.postprocess_device)}
with dev.autocast(True):
    out["autocast"] = [torch.is_autocast_enabled("mlu"), str(torch.get_autocast_dtype("mlu"))]
s = dev.make_grad_scaler(True)
out["scaler"] = [s._device, s.is_enabled()]
try:
    dev.move(torch.zeros(1))
    out["tensor"] = "moved"
except (NotImplementedError, RuntimeError) as e:
    out["tensor"] = type(e).__name__
dev.seed(5)
out["seeds"] = [a[0] for a, _ in double.called("manual_seed_all")]
print(json.dumps(out))
"""
    paths = os.pathsep.join([str(repo_root / "yolov5"), str(repo_root / "tests")])
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=paths, CUDA_VISIBLE_DEVICES=""),
                         timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["device"] == "mlu:1" and out["post"] == "cpu"
    assert out["autocast"] == [True, "torch.float16"]
    assert out["scaler"] == ["mlu", True]
    assert out["tensor"] == "NotImplementedError"  # no kernels: nothing pretends to run on MLU
    assert out["seeds"] and set(out["seeds"]) == {5}


# --- real CUDA (runs only on a machine with a GPU) -------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_cuda_amp_events_memory():
    dev = select_device("0", log=False)
    dev.set_current()
    assert dev.torch_device == torch.device("cuda", 0) and dev.props[0].total_memory > 0
    a = dev.move(torch.randn(512, 512))
    with dev.autocast(True):
        assert (a @ a).dtype == torch.float16
    layer = dev.move(torch.nn.Linear(512, 1))
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    scaler = dev.make_grad_scaler(True)
    with dev.autocast(True):
        loss = layer(a).float().mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() > 0
    dev.reset_peak_memory()
    watch = dev.stopwatch()
    watch.start()
    big = dev.move(torch.empty(64 * 2 ** 20, dtype=torch.uint8))  # 64 MiB
    for _ in range(20):
        a = a @ a / 512
    lap = watch.stop()
    assert lap.elapsed_ms > 0 and lap.hardware_us is None
    assert dev.peak_memory() >= big.numel() and dev.memory_reserved() >= big.numel()
    dev.synchronize()
