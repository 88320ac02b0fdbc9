"""Interval timing on a device: events on accelerators, the host clock on CPU.

`Stopwatch` waits for the device at every stop; `DeferredLaps` records the same events but reads
an interval only once its end event has completed, so timing every training iteration never makes
the host wait for the device.

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


class DeferredLaps:
    """Device intervals timed with record()-style events and read later, without host waits.

    An interval is read once its end event has completed (`query()`, which does not block) or, at
    `ready(wait=True)`, after one wait for the newest end event: events of one stream complete in
    order, so that single wait completes every interval recorded before it.
    """

    def __init__(self, make_event):
        self._make_event = make_event
        self._start = None
        self._pending = []  # (start, end) event pairs, oldest first

    def start(self) -> None:
        self._start = self._make_event()
        self._start.record()

    def stop(self) -> None:
        if self._start is None:
            raise RuntimeError("DeferredLaps.stop() called before start()")
        end = self._make_event()
        end.record()
        self._pending.append((self._start, end))
        self._start = None

    def ready(self, wait=False) -> list:
        """The Laps of the intervals now complete, in order; with wait, of every interval recorded."""
        if wait and self._pending:
            self._pending[-1][1].synchronize()
        laps = []
        while self._pending and (wait or self._pending[0][1].query()):
            start, end = self._pending.pop(0)
            hardware = start.hardware_time(end) if hasattr(start, "hardware_time") else None
            laps.append(Lap(float(start.elapsed_time(end)), None if hardware is None else float(hardware)))
        return laps
