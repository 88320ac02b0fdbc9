"""Interval timing on a device: events on accelerators, the host clock on CPU.

`Device.stopwatch()` hands a Stopwatch the right event factory; this module itself knows no
device kind, only the two event shapes torch offers: `record()`-style Events (CUDA, torch_mlu
>= 1.13) and torch_mlu 1.x `Notifier`s that `place()`. Event times are in ms; torch_mlu's
`hardware_time()` (device-side duration) is in µs.
"""
import time
from typing import NamedTuple, Optional


class Lap(NamedTuple):
    """One stopwatch interval: wall/event time in ms, MLU hardware time in µs (None elsewhere)."""

    elapsed_ms: float
    hardware_us: Optional[float]


class Stopwatch:
    """Times device work: events on accelerators (synchronised at stop), perf_counter on CPU."""

    def __init__(self, make_event):
        self._make_event = make_event  # None on CPU
        self._start = None

    def start(self) -> None:
        if self._make_event is None:
            self._start = time.perf_counter()
        else:
            self._start = self._make_event()
            _mark(self._start)

    def stop(self) -> Lap:
        if self._start is None:
            raise RuntimeError("Stopwatch.stop() called before start()")
        start, self._start = self._start, None
        if self._make_event is None:
            return Lap((time.perf_counter() - start) * 1e3, None)
        end = self._make_event()
        _mark(end)
        end.synchronize()
        hardware = start.hardware_time(end) if hasattr(start, "hardware_time") else None
        return Lap(float(start.elapsed_time(end)), None if hardware is None else float(hardware))


def _mark(event) -> None:
    """Events record(); torch_mlu 1.x Notifiers place()."""
    (event.record if hasattr(event, "record") else event.place)()
