"""MetricCollector: per-iteration timing of a benchmark run, written as Cambricon-style log lines.

Same constructor and methods as the collector in Cambricon's ports (their `utils_mlu/metric.py`):
it is active only when an environment variable named in configs.json (BENCHMARK_LOG, AVG_LOG)
names an output file, drops the first MLU_ADAPTIVE_STRATEGY_COUNT samples as warm-up, and
`dump()` appends one record per active log. Usage in a training loop:

    mc = MetricCollector(enable_only_benchmark=True, record_elapsed_time=True,
                         record_hardware_time=device.kind == 'mlu', device=device)
    mc.place()
    for batch in loader:           # data wait is inside the interval, as Cambricon measures
        ...; mc.record(); mc.place()
    mc.insert_metrics(net='yolov5s', batch_size=16, cards=1, precision='amp', DPF_mode='single')
    mc.dump()

Differences from Cambricon's collector, on purpose:
- timing comes from the `device` object (`utils.device.devices.Device`): where the device has events that
  can be polled (CUDA, torch_mlu >= 1.13), each interval is timed between two events on the
  device and read once they have completed, so no iteration waits for the device (one wait when
  the metrics are read); torch_mlu 1.x Notifiers time hardware at every sample (a wait each), and
  without events the wall clock is read after `device.synchronize()`, so asynchronous work counts;
- one JSON object per line (theirs are pretty-printed, which no JSON reader can stream);
- environment variables are read when a collector is built, not at import;
- too few iterations never crash: the record says so in `status` and a warning is issued;
- times are rounded to µs (avg, percentiles) and 1e-10 s² (var), not to ms: at 10 ms per
  iteration Cambricon's 3-decimal avg put the throughput derived from it off by up to 5 %;
- additions: latency percentiles, kept/dropped counts, peak device memory, torch versions;
  peak memory is reported whenever a device is given, so `profile_memory` (which raised
  "Not Implemented" in theirs) is accepted for compatibility and changes nothing.
Missing values are written as "unknow", Cambricon's spelling, which their log readers expect.
"""
import json
import os
import platform
import time
import warnings
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np

try:
    from utils.errors import UserError  # the trainer's error type (yolov5/ on sys.path)
except ImportError:  # used on its own: a ValueError is the nearest standard meaning
    class UserError(ValueError):
        pass

CONFIGS_PATH = Path(__file__).with_name("configs.json")
UNKNOWN = "unknow"
WARMUP_VARIABLE = "MLU_ADAPTIVE_STRATEGY_COUNT"


def load_log_fields(path=CONFIGS_PATH) -> "OrderedDict[str, list]":
    """{log environment variable: [fields in output order]} from configs.json."""
    with open(path) as f:
        return json.load(f, object_pairs_hook=OrderedDict)


def warmup_count(environ=None) -> int:
    env = os.environ if environ is None else environ
    value = env.get(WARMUP_VARIABLE, "0").strip() or "0"
    if not value.isdigit():
        raise UserError(f"{WARMUP_VARIABLE}={value!r} must be a whole number of warm-up "
                        f"iterations to drop (e.g. 20)")
    return int(value)


def read_platform_name(root=None) -> Optional[str]:
    """Device model from the driver's information file ('Device name' on MLU, 'Model' on GPU).

    `root` defaults to $PROC_DRIVER_ROOT or /proc/driver, as in common_utils.sh.
    """
    root = root or os.environ.get("PROC_DRIVER_ROOT", "/proc/driver")
    for info in sorted(Path(root).glob("*/*/*/information")):
        try:
            lines = info.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if line.split(":")[0].strip() in ("Device name", "Model"):
                return line.rsplit(":", 1)[1].strip()
    return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


class _Series:
    """Samples of one timer after dropping the first `warmup` ones."""

    def __init__(self, warmup: int):
        self.countdown, self.dropped, self.samples = warmup, 0, []

    def add(self, seconds: float) -> None:
        if self.countdown > 0:
            self.countdown -= 1
            self.dropped += 1
        else:
            self.samples.append(seconds)

    def stats(self, prefix: str) -> dict:
        if not self.samples:
            return {}
        a = np.asarray(self.samples, dtype=np.float64)
        out = {f"{prefix}_avg": round(float(a.mean()), 6), f"{prefix}_var": round(float(a.var()), 10)}
        if prefix == "batch_time":
            for q in (50, 90, 99):
                out[f"{prefix}_p{q}"] = round(float(np.percentile(a, q)), 6)
        return out


class MetricCollector:
    """Collects per-iteration times and writes them to the logs named by environment variables."""

    def __init__(self, enable=True, enable_only_benchmark=False, enable_only_avglog=False,
                 record_elapsed_time=False, record_hardware_time=False, profile_memory=False,
                 device=None):
        self.fields = load_log_fields()
        self.targets = OrderedDict((k, os.environ[k]) for k in self.fields if os.environ.get(k))
        self.enabled = bool(enable and self.targets
                            and (not enable_only_benchmark or "BENCHMARK_LOG" in self.targets)
                            and (not enable_only_avglog or "AVG_LOG" in self.targets))
        self.device = device
        self.warmup = warmup_count() if self.enabled else 0
        self.profile_memory = profile_memory
        self._elapsed = _Series(self.warmup) if record_elapsed_time else None
        self._hardware = _Series(self.warmup) if record_hardware_time else None
        if self._hardware is not None and device is None:
            warnings.warn("MetricCollector: record_hardware_time needs device=...; not recording it")
            self._hardware = None
        # events polled later where the device allows it: no host wait per iteration; otherwise a
        # stopwatch (hardware time) or a synchronize before the wall clock, at every sample
        deferred = getattr(device, "deferred_laps", None)  # device views of ported trees may lack it
        self._laps = deferred() if (self.enabled and deferred is not None) else None
        self._watch = device.stopwatch() if (self.enabled and self._hardware and self._laps is None) else None
        self._hardware_supported = True
        self._t0 = None
        self._inserted = OrderedDict()
        self._warned = False

    def place(self) -> None:
        """Start of an interval."""
        if not self.enabled:
            return
        if self._laps is not None:
            self._laps.start()
        elif self._watch is not None:
            self._watch.start()
        self._t0 = time.perf_counter()

    def record(self) -> None:
        """End of an interval: take one sample per enabled timer (dropped while warming up)."""
        if not self.enabled or self._t0 is None:
            return
        if self._laps is not None:  # device events: samples are read once their work has finished
            self._laps.stop()
            self._take(self._laps.ready())
            self._t0 = None
            return
        lap = self._watch.stop() if self._watch is not None else None  # synchronises the device
        if self._elapsed is not None:
            if lap is None and self.device is not None:
                self.device.synchronize()
            self._elapsed.add(time.perf_counter() - self._t0)
        if lap is not None:
            if lap.hardware_us is None:
                self._hardware_supported = False  # CUDA/CPU events have no hardware time
            else:
                self._hardware.add(lap.hardware_us / 1e6)
        self._t0 = None

    def _take(self, laps) -> None:
        """Samples from device event intervals (ms, and MLU hardware µs)."""
        for lap in laps:
            if self._elapsed is not None:
                self._elapsed.add(lap.elapsed_ms / 1e3)
            if self._hardware is not None:
                if lap.hardware_us is None:
                    self._hardware_supported = False
                else:
                    self._hardware.add(lap.hardware_us / 1e6)

    def insert_metrics(self, **kwargs) -> None:
        """Add run facts (net, batch_size, cards, precision, DPF_mode, accuracy, ...); merged."""
        if self.enabled:
            self._inserted.update(kwargs)

    def get_metrics(self) -> "OrderedDict[str, object]":
        """Timer statistics (seconds) and our additions, with inserted metrics layered on top."""
        metrics = OrderedDict()
        if not self.enabled:
            return metrics
        if self._laps is not None:  # the one host wait of the run
            self._take(self._laps.ready(wait=True))
        timers = [(s, p) for s, p in ((self._elapsed, "batch_time"), (self._hardware,
                  "hardware_time")) if s is not None]
        for series, prefix in timers:
            metrics.update(series.stats(prefix))
        main = self._elapsed or self._hardware
        if main is not None:
            metrics["iterations"] = len(main.samples)
            metrics["warmup_iterations"] = main.dropped
        metrics["status"] = self._status(timers)
        metrics["peak_memory_mb"] = self._peak_memory_mb()
        metrics["torch_version"], metrics["torch_mlu_version"] = _versions(self.device)
        if self.device is not None:
            metrics["cards"] = self.device.world_size
        metrics.update(self._inserted)
        return metrics

    def _status(self, timers) -> str:
        empty = [p for s, p in timers if not s.samples
                 and not (p == "hardware_time" and not self._hardware_supported)]
        if not empty:
            return "ok"
        series = timers[0][0]
        total = series.dropped + len(series.samples)
        status = (f"too few iterations: {total} recorded, {series.dropped} dropped as warm-up "
                  f"({WARMUP_VARIABLE}={self.warmup}); run more than {self.warmup} iterations")
        if not self._warned:
            warnings.warn(f"MetricCollector: {status}", RuntimeWarning, stacklevel=3)
            self._warned = True
        return status

    def _peak_memory_mb(self):
        peak = self.device.peak_memory() if self.device is not None else None
        return None if peak is None else round(peak / 2 ** 20, 1)

    def _platform(self) -> str:
        if self.device is not None and self.device.kind != "cpu":
            return self.device.name
        if self.device is not None:
            return _cpu_name()
        return read_platform_name() or UNKNOWN

    def dump(self) -> None:
        """Append one JSON line to each active log: date, configured fields, device, dataset."""
        if not self.enabled:
            return
        metrics = self.get_metrics()
        if "throughput" not in metrics:
            bs, t, cards = (metrics.get(k) for k in ("batch_size", "batch_time_avg", "cards"))
            if all(isinstance(v, (int, float)) for v in (bs, t, cards)) and t > 0:
                metrics["throughput"] = round(bs / t * cards, 2)
        for variable, path in self.targets.items():
            record = OrderedDict(date=datetime.now().strftime("%Y-%m-%d %H:%M:%S"))
            for name in self.fields[variable]:
                value = metrics.get(name)
                record[name] = UNKNOWN if value is None else value
            record["device"] = self._platform()
            record["dataset"] = os.environ.get("DATASET_NAME", UNKNOWN)
            _append_line(path, variable, json.dumps(record))


def _versions(device):
    import torch
    mlu = device.runtime_version if device is not None and device.kind == "mlu" else None
    if mlu is None:
        try:
            from importlib.metadata import PackageNotFoundError, version
            mlu = version("torch_mlu")
        except (ImportError, PackageNotFoundError):
            mlu = "not installed"
    return torch.__version__, mlu


def _append_line(path: str, variable: str, line: str) -> None:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as f:
            f.write(line + "\n")
    except OSError as e:
        raise UserError(f"{variable}={path!r} cannot be written ({e.strerror}); point it at a "
                        f"writable file, or unset it to disable benchmark logging") from None
