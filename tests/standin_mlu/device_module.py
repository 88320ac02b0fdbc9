"""`torch.mlu` for the stand-in device: the torch_mlu 2.x calls our device layer makes.

Devices, synchronisation (counted), timing events (host clock: the stand-in runs every kernel
synchronously), memory statistics (from the extension's allocator), seeding (a generator per
device) and the hooks torch itself looks up on a PrivateUse1 device module (AMP, RNG).
"""
import time
import types
from typing import NamedTuple

import torch

from .loader import DESCRIPTION

STANDIN = True  # lets tools tell this module from a real torch_mlu one
# What the device properties say: a host-memory test device, never a real card's name.
DEVICE_NAME = "standin-mlu"


class DeviceProperties(NamedTuple):
    name: str
    total_memory: int
    major: int
    minor: int
    multi_processor_count: int
    description: str


def build(ext):
    """A module object holding the stand-in's torch.mlu functions, bound to the extension `ext`."""
    m = types.ModuleType("torch.mlu")
    m.__doc__ = f"torch.mlu: {DESCRIPTION}"
    m.STANDIN = STANDIN
    m.DESCRIPTION = DESCRIPTION

    def index(device=None) -> int:
        if device is None:
            return ext.current_device()
        if isinstance(device, str):
            device = torch.device(device)
        if isinstance(device, torch.device):
            if device.type != "mlu":
                raise ValueError(f"expected an mlu device, got {device}")
            return ext.current_device() if device.index is None else device.index
        return int(device)

    m.is_available = lambda: ext.device_count() > 0
    m.is_initialized = lambda: True
    m.init = lambda: None
    m.device_count = ext.device_count
    m.current_device = ext.current_device
    m.set_device = lambda device: ext.set_device(index(device))
    m._is_in_bad_fork = lambda: False

    def synchronize(device=None):
        index(device)  # validates the index as a real runtime does
        ext.note_synchronize()
    m.synchronize = synchronize

    class device:  # noqa: N801 - torch.mlu.device(i) context, as torch.cuda.device
        def __init__(self, dev):
            self.idx, self.prev = index(dev), None

        def __enter__(self):
            self.prev = ext.current_device()
            ext.set_device(self.idx)

        def __exit__(self, *exc):
            ext.set_device(self.prev)
    m.device = device

    # --- memory ---------------------------------------------------------------------------
    m.memory_allocated = lambda device=None: ext.memory_allocated(index(device))
    m.max_memory_allocated = lambda device=None: ext.max_memory_allocated(index(device))
    m.memory_reserved = lambda device=None: ext.memory_allocated(index(device))  # no cache
    m.max_memory_reserved = m.max_memory_allocated
    m.reset_peak_memory_stats = lambda device=None: ext.reset_peak_memory_stats(index(device))
    m.reset_max_memory_allocated = m.reset_peak_memory_stats
    m.empty_cache = lambda: None

    def get_device_properties(device=None):
        index(device)
        return DeviceProperties(DEVICE_NAME, 0, 0, 0, 1, DESCRIPTION)
    m.get_device_properties = get_device_properties
    m.get_device_name = lambda device=None: get_device_properties(device).name
    m.get_device_capability = lambda device=None: (0, 0)
    m.is_bf16_supported = lambda *args, **kwargs: True

    # --- random numbers ---------------------------------------------------------------------
    m.default_generators = tuple(ext.default_generator(i) for i in range(ext.device_count()))
    m.manual_seed = lambda seed: m.default_generators[ext.current_device()].manual_seed(int(seed))

    def manual_seed_all(seed):
        for g in m.default_generators:
            g.manual_seed(int(seed))
    m.manual_seed_all = manual_seed_all
    m.seed = lambda: m.default_generators[ext.current_device()].seed()
    m.initial_seed = lambda: m.default_generators[ext.current_device()].initial_seed()
    m.get_rng_state = lambda device="mlu": m.default_generators[index(device)].get_state()
    m.set_rng_state = lambda state, device="mlu": m.default_generators[index(device)].set_state(state)
    m.get_rng_state_all = lambda: [g.get_state() for g in m.default_generators]

    # --- mixed precision: what torch.autocast asks a PrivateUse1 module -----------------------
    m.get_amp_supported_dtype = lambda: [torch.float16, torch.bfloat16]
    m.amp = types.ModuleType("torch.mlu.amp")

    def make_scaler(*args, **kwargs):  # torch_mlu 2.x keeps torch.mlu.amp.GradScaler
        return torch.amp.GradScaler("mlu", *args, **kwargs)
    m.amp.GradScaler = make_scaler

    # --- timing -------------------------------------------------------------------------------
    class Event:
        """Timing event. Kernels run synchronously, so the host clock at record() is exact."""

        def __init__(self, enable_timing=False, blocking=False, interprocess=False):
            self.enable_timing, self._t = enable_timing, None

        def record(self, stream=None):
            self._t = time.perf_counter()

        def query(self):
            return True

        def wait(self, stream=None):
            pass

        def synchronize(self):
            if self._t is None:
                raise RuntimeError("Event.synchronize() before record()")
            ext.note_synchronize()

        def elapsed_time(self, end):
            if not (self.enable_timing and end.enable_timing):
                raise RuntimeError("Events must be created with enable_timing=True to be timed")
            if self._t is None or end._t is None:
                raise RuntimeError("both events must be recorded before elapsed_time()")
            return (end._t - self._t) * 1e3
    m.Event = Event

    class Stream:
        def __init__(self, device=None, priority=0):
            self.device = torch.device("mlu", index(device))

        def synchronize(self):
            ext.note_synchronize()

        def wait_stream(self, other):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass
    m.Stream = Stream
    m.current_stream = lambda device=None: Stream(device)
    m.default_stream = m.current_stream
    m.stream = lambda s: s if s is not None else Stream()
    return m
