"""MetricCollector: activation by BENCHMARK_LOG, warm-up dropping, units, log line format."""
import json
import re
import sys
import time
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch

from mlu_double import MluDouble
from utils.device.devices import select_device
from utils.errors import UserError
from utils_mlu import metric
from utils_mlu.metric import MetricCollector, load_log_fields, read_platform_name

CAMBRICON_FIELDS = ["net", "batch_size", "cards", "precision", "DPF_mode", "batch_time_avg",
                    "batch_time_var", "hardware_time_avg", "hardware_time_var", "throughput"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("BENCHMARK_LOG", "AVG_LOG", "MLU_ADAPTIVE_STRATEGY_COUNT", "DATASET_NAME", "PROC_DRIVER_ROOT",
                 "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def scripted_clock(monkeypatch):
    """Replace the collector's clock: each perf_counter() returns the next scripted value."""
    def install(values):
        it = iter(values)
        monkeypatch.setattr(metric, "time", types.SimpleNamespace(perf_counter=lambda: next(it)))
    return install


def read_lines(path):
    return [json.loads(line, object_pairs_hook=OrderedDict) for line in path.read_text().splitlines()]


def test_configs_json_keeps_cambricon_fields_first(repo_root):
    fields = load_log_fields(repo_root / "utils_mlu" / "configs.json")
    assert list(fields) == ["BENCHMARK_LOG", "AVG_LOG"]
    assert fields["BENCHMARK_LOG"][:10] == CAMBRICON_FIELDS
    assert fields["AVG_LOG"] == ["net", "accuracy"]


def test_inactive_without_benchmark_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mc = MetricCollector(enable_only_benchmark=True, record_elapsed_time=True)
    assert not mc.enabled
    mc.place(), mc.record(), mc.insert_metrics(net="yolov5s"), mc.dump()
    assert mc.get_metrics() == OrderedDict()
    monkeypatch.setenv("AVG_LOG", str(tmp_path / "avg.log"))  # another log is not enough
    assert not MetricCollector(enable_only_benchmark=True).enabled
    monkeypatch.setenv("BENCHMARK_LOG", str(tmp_path / "bench.log"))
    assert not MetricCollector(enable=False, enable_only_benchmark=True).enabled
    assert MetricCollector(enable_only_benchmark=True).enabled
    assert list(tmp_path.iterdir()) == []


def test_real_cpu_loop_writes_a_valid_line(tmp_path, monkeypatch):
    log = tmp_path / "logs" / "benchmark_log"
    monkeypatch.setenv("BENCHMARK_LOG", str(log))
    monkeypatch.setenv("MLU_ADAPTIVE_STRATEGY_COUNT", "2")
    monkeypatch.setenv("DATASET_NAME", "coco128")
    device = select_device("cpu", log=False)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.SiLU(),
                                torch.nn.Conv2d(16, 16, 3, padding=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mc = MetricCollector(enable_only_benchmark=True, record_elapsed_time=True,
                         record_hardware_time=False, device=device)
    start = time.perf_counter()
    mc.place()
    for _ in range(6):
        x = torch.randn(4, 3, 96, 96)
        model(x).square().mean().backward()
        opt.step(), opt.zero_grad()
        time.sleep(0.005)  # keep each sample well above the 1 ms rounding step
        mc.record()
        mc.place()
    wall = time.perf_counter() - start
    mc.insert_metrics(net="yolov5s", batch_size=4, cards=2, precision="fp32", DPF_mode="ddp")
    mc.dump()
    (rec,) = read_lines(log)
    fields = load_log_fields()["BENCHMARK_LOG"]
    assert list(rec) == ["date"] + fields + ["device", "dataset"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rec["date"])
    assert (rec["net"], rec["batch_size"], rec["cards"], rec["precision"], rec["DPF_mode"]) == \
        ("yolov5s", 4, 2, "fp32", "ddp")
    assert (rec["iterations"], rec["warmup_iterations"], rec["status"]) == (4, 2, "ok")
    assert 0.005 <= rec["batch_time_avg"] and rec["batch_time_avg"] * 4 <= wall
    assert rec["batch_time_avg"] == round(rec["batch_time_avg"], 6)
    assert rec["batch_time_var"] >= 0
    assert rec["batch_time_p50"] <= rec["batch_time_p90"] <= rec["batch_time_p99"]
    assert rec["throughput"] == round(4 / rec["batch_time_avg"] * 2, 2)  # images/s, all cards
    assert rec["hardware_time_avg"] == rec["hardware_time_var"] == "unknow"
    assert rec["peak_memory_mb"] == "unknow"  # CPU reports none
    assert rec["torch_version"] == torch.__version__ and rec["torch_mlu_version"] == "not installed"
    assert rec["dataset"] == "coco128" and rec["device"] == metric._cpu_name()
    mc.dump()
    assert len(read_lines(log)) == 2  # appended, one JSON object per line


def test_warmup_dropped_and_statistics_exact(tmp_path, monkeypatch, scripted_clock):
    log = tmp_path / "bench.log"
    monkeypatch.setenv("BENCHMARK_LOG", str(log))
    monkeypatch.setenv("MLU_ADAPTIVE_STRATEGY_COUNT", "2")
    # place/record pairs: intervals 9, 8 (warm-up), then 0.1, 0.2, 0.3, 0.4 s
    marks = [0, 9, 10, 18, 20, 20.1, 21, 21.2, 22, 22.3, 23, 23.4]
    scripted_clock(marks)
    mc = MetricCollector(enable_only_benchmark=True, record_elapsed_time=True)
    for _ in range(6):
        mc.place()
        mc.record()
    m = mc.get_metrics()
    kept = np.array([0.1, 0.2, 0.3, 0.4])
    assert m["batch_time_avg"] == 0.25 and m["batch_time_var"] == round(float(kept.var()), 10)
    assert (m["iterations"], m["warmup_iterations"]) == (4, 2)
    assert m["batch_time_p50"] == 0.25 and m["batch_time_p99"] == round(float(np.percentile(kept, 99)), 6)
    mc.insert_metrics(net="yolov5m", batch_size=16)
    mc.insert_metrics(cards=1)  # merged, not replaced
    mc.dump()
    (rec,) = read_lines(log)
    assert rec["net"] == "yolov5m" and rec["throughput"] == 64.0  # 16 / 0.25 * 1
    assert rec["device"] == (read_platform_name() or "unknow") and rec["dataset"] == "unknow"


def test_mlu_hardware_time_from_device_events(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("BENCHMARK_LOG", str(tmp_path / "bench.log"))
    monkeypatch.setenv("MLU_ADAPTIVE_STRATEGY_COUNT", "1")
    with MluDouble(api="2.x") as double:
        device = select_device("mlu", log=False)
        double.scripted_times.extend([(90.0, 80000.0), (30.0, 10000.0), (40.0, 20000.0),
                                      (50.0, 30000.0)])
        mc = MetricCollector(enable_only_benchmark=True, record_elapsed_time=True,
                             record_hardware_time=True, device=device)
        double.calls.clear()
        mc.place()
        for _ in range(4):
            time.sleep(0.002)
            mc.record()
            mc.place()
        m = mc.get_metrics()
        mc.insert_metrics(net="yolov5s", batch_size=8, precision="amp", DPF_mode="single")
        mc.dump()
    assert m["hardware_time_avg"] == 0.02  # µs -> s, first sample dropped
    assert m["hardware_time_var"] == round(float(np.var([0.01, 0.02, 0.03])), 10)
    assert m["iterations"] == 3 and m["cards"] == 1
    # events are polled, never waited for: the host does not wait for the device at any sample
    assert double.names().count("Event.synchronize") == 0 and double.names().count("synchronize") == 0
    assert double.names().count("Event.query") == 4 and double.names().count("Event.hardware_time") == 4
    assert m["batch_time_avg"] == 0.04  # the events' elapsed times (ms -> s), first sample dropped
    (rec,) = read_lines(tmp_path / "bench.log")
    assert rec["device"] == "MLU370-X8" and rec["torch_mlu_version"] == double.version
    assert rec["peak_memory_mb"] == double.peak_bytes / 2 ** 20
    assert rec["throughput"] == round(8 / rec["batch_time_avg"] * 1, 2)


def test_elapsed_only_synchronizes_device_before_reading_clock(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("BENCHMARK_LOG", str(tmp_path / "bench.log"))
    with MluDouble(api="1.x") as double:
        device = select_device("mlu", log=False)
        mc = MetricCollector(enable_only_benchmark=True, record_elapsed_time=True, device=device)
        double.calls.clear()
        for _ in range(3):
            mc.place()
            mc.record()
    assert double.names() == ["synchronize"] * 3
    assert mc.get_metrics()["iterations"] == 3


@pytest.mark.parametrize("iterations", [0, 3])
def test_too_few_iterations_is_reported_not_raised(tmp_path, monkeypatch, iterations):
    log = tmp_path / "bench.log"
    monkeypatch.setenv("BENCHMARK_LOG", str(log))
    monkeypatch.setenv("MLU_ADAPTIVE_STRATEGY_COUNT", "5")
    mc = MetricCollector(enable_only_benchmark=True, record_elapsed_time=True,
                         record_hardware_time=True, device=select_device("cpu", log=False))
    for _ in range(iterations):
        mc.place()
        mc.record()
    mc.insert_metrics(net="yolov5s", batch_size=4, cards=1)
    with pytest.warns(RuntimeWarning, match=f"too few iterations: {iterations} recorded"):
        mc.dump()
    (rec,) = read_lines(log)
    assert rec["status"] == (f"too few iterations: {iterations} recorded, {iterations} dropped as "
                             f"warm-up (MLU_ADAPTIVE_STRATEGY_COUNT=5); run more than 5 iterations")
    assert rec["batch_time_avg"] == rec["throughput"] == rec["batch_time_p50"] == "unknow"
    assert rec["iterations"] == 0 and rec["warmup_iterations"] == iterations


def test_cpu_hardware_timer_is_unsupported_not_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHMARK_LOG", str(tmp_path / "bench.log"))
    mc = MetricCollector(enable_only_benchmark=True, record_elapsed_time=True,
                         record_hardware_time=True, device=select_device("cpu", log=False))
    mc.place()
    mc.record()
    m = mc.get_metrics()
    assert m["status"] == "ok" and "hardware_time_avg" not in m and m["iterations"] == 1
    with pytest.warns(UserWarning, match="needs device"):
        no_device = MetricCollector(enable_only_benchmark=True, record_hardware_time=True)
    assert no_device._hardware is None


def test_avg_log_and_benchmark_log_together(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHMARK_LOG", str(tmp_path / "bench.log"))
    monkeypatch.setenv("AVG_LOG", str(tmp_path / "avg.log"))
    assert not MetricCollector(enable_only_avglog=True, enable_only_benchmark=True, enable=False).enabled
    mc = MetricCollector(record_elapsed_time=True)
    mc.insert_metrics(net="yolov5s", accuracy=0.372)
    with pytest.warns(RuntimeWarning):
        mc.dump()
    (avg,) = read_lines(tmp_path / "avg.log")
    assert list(avg) == ["date", "net", "accuracy", "device", "dataset"]
    assert avg["accuracy"] == 0.372
    assert len(read_lines(tmp_path / "bench.log")) == 1


def test_bad_environment_values(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHMARK_LOG", str(tmp_path / "bench.log"))
    monkeypatch.setenv("MLU_ADAPTIVE_STRATEGY_COUNT", "twenty")
    with pytest.raises(UserError, match="MLU_ADAPTIVE_STRATEGY_COUNT='twenty' must be a whole number"):
        MetricCollector(enable_only_benchmark=True)
    monkeypatch.setenv("MLU_ADAPTIVE_STRATEGY_COUNT", "0")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("BENCHMARK_LOG", str(blocker / "bench.log"))
    mc = MetricCollector(enable_only_benchmark=True)
    with pytest.raises(UserError, match="BENCHMARK_LOG=.* cannot be written"):
        mc.dump()


def test_read_platform_name(tmp_path, monkeypatch):
    mlu = tmp_path / "a" / "cambricon" / "mlus" / "0000:3b:00.0"
    mlu.mkdir(parents=True)
    (mlu / "information").write_text("Device name                    : MLU370-X8\nDriver: v5\n")
    assert read_platform_name(tmp_path / "a") == "MLU370-X8"
    gpu = tmp_path / "b" / "nvidia" / "gpus" / "0000:17:00.0"
    gpu.mkdir(parents=True)
    (gpu / "information").write_text("Model: \t\t NVIDIA H100 80GB HBM3\nIRQ: 1\n")
    assert read_platform_name(tmp_path / "b") == "NVIDIA H100 80GB HBM3"
    assert read_platform_name(tmp_path / "none") is None
    monkeypatch.setenv("PROC_DRIVER_ROOT", str(tmp_path / "a"))
    assert read_platform_name() == "MLU370-X8"


def test_standalone_import_without_trainer_on_path(repo_root):
    """utils_mlu.metric works when only the repository root is importable."""
    import subprocess
    code = ("import os; os.environ['BENCHMARK_LOG']=''; "
            "from utils_mlu.metric import MetricCollector, UserError; "
            "assert not MetricCollector(enable_only_benchmark=True).enabled; "
            "assert issubclass(UserError, ValueError); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=repo_root, env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_every_iteration_timed_without_a_host_wait_on_the_standin_mlu(tmp_path, monkeypatch, standin_counters):
    """Device events polled, not waited for: timing a loop adds no synchronize and no device->host copy
    (the stand-in runs kernels at once, so every event has completed when polled: no wait even at the end)."""
    monkeypatch.setenv("YOLOV5_STANDIN_MLU", "1")
    monkeypatch.setenv("BENCHMARK_LOG", str(tmp_path / "bench.log"))
    monkeypatch.setenv("MLU_ADAPTIVE_STRATEGY_COUNT", "1")
    device = select_device("mlu", log=False)
    mc = MetricCollector(enable_only_benchmark=True, record_elapsed_time=True, device=device)
    x = torch.ones(32, 32, device="mlu")
    before = standin_counters()
    mc.place()
    for _ in range(5):
        x = (x @ x).clamp_(max=1.0)
        mc.record()
        mc.place()
    during = standin_counters()
    assert (during["synchronizes"], during["d2h_copies"]) == (before["synchronizes"], before["d2h_copies"])
    m = mc.get_metrics()
    assert m["iterations"] == 4 and m["warmup_iterations"] == 1 and m["batch_time_avg"] > 0
    assert standin_counters()["synchronizes"] == before["synchronizes"]


class _QueuedEvent:
    """An event on a busy device: complete only once the device reached it (here: when `done` is set)."""
    device_done = 0  # events recorded up to this count have completed
    recorded = 0

    def __init__(self, enable_timing=True):
        self.n = None

    def record(self):
        _QueuedEvent.recorded += 1
        self.n = _QueuedEvent.recorded

    def query(self):
        return self.n <= _QueuedEvent.device_done

    def synchronize(self):
        _QueuedEvent.device_done = max(_QueuedEvent.device_done, self.n)

    def elapsed_time(self, end):
        assert end.query(), "read before the device finished"
        return 10.0 * (end.n - self.n)  # ms


def test_deferred_laps_read_finished_intervals_in_order_and_wait_once():
    from utils.device.device_timing import DeferredLaps
    _QueuedEvent.device_done = _QueuedEvent.recorded = 0
    laps = DeferredLaps(_QueuedEvent)
    for _ in range(3):
        laps.start()
        laps.stop()
    assert laps.ready() == []  # nothing finished yet: no wait, nothing read
    _QueuedEvent.device_done = 4  # the first two intervals (events 1-4) are done
    assert [lap.elapsed_ms for lap in laps.ready()] == [10.0, 10.0]
    assert [lap.elapsed_ms for lap in laps.ready(wait=True)] == [10.0]
    assert _QueuedEvent.device_done == 6 and laps.ready(wait=True) == []
