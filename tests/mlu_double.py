"""A test double for Cambricon's torch_mlu, in the API shapes of its two generations.

`MluDouble(api='2.x')` (torch_mlu 1.22 on torch 2.x) or `MluDouble(api='1.x')` (catch-era builds:
`torch_mlu.core.mlu_model`, `Notifier`, `torch.is_mlu_available`) installs an import hook so that
`import torch_mlu` works and, as the real package does, registers `torch.mlu` *when imported*.
Every call our code makes into it is appended to `double.calls`, so tests assert what the device
layer asked of torch_mlu (which events, which unit conversions, which seeds, which index).

Honesty rules: the double never makes tensors live on an MLU. By default it does not register
'mlu' with torch at all (PrivateUse1 renaming is global and irreversible), so
`torch.device('mlu')` stays invalid in-process and `Device.torch_device` raises. With
`register_backend=True` it renames PrivateUse1 to 'mlu' and registers the device module, as
torch_mlu 2.x does; use that only in a subprocess. Even then no kernel exists, so any attempt to
create a tensor on 'mlu' fails loudly.
"""
import importlib.abc
import importlib.machinery
import sys
import time
import types
import warnings
from collections import deque

import torch


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `torch_mlu` and its submodules from the double."""

    def __init__(self, double):
        self.double = double

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.double.module_names():
            is_pkg = fullname in self.double.package_names()
            return importlib.machinery.ModuleSpec(fullname, self, is_package=is_pkg)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        self.double.populate(module)


class _TimingEvent:
    """torch.mlu.Event (2.x, `record`) or Notifier (1.x, `place`): both time in ms / µs."""

    def __init__(self, double, kind, enable_timing=True):
        self.double, self.kind, self.enable_timing = double, kind, enable_timing
        self.t = None
        self.synced = False
        self.pair = None

    def _mark(self, how):
        self.double.log(f"{self.kind}.{how}")
        self.t = time.perf_counter()

    def synchronize(self):
        self.double.log(f"{self.kind}.synchronize")
        self.synced = True

    def query(self):  # work is done as soon as it is recorded here: a completed event
        self.double.log(f"{self.kind}.query")
        self.synced = self.t is not None
        return self.synced

    def _durations(self, end):
        if not (self.enable_timing and end.enable_timing):
            raise RuntimeError("Events must be created with enable_timing=True to be timed")
        if self.t is None or end.t is None:
            raise RuntimeError("both events must be recorded before timing them")
        if not end.synced:
            raise RuntimeError("end event not synchronized: the device may not have finished")
        if self.pair is None:
            if self.double.scripted_times:
                self.pair = self.double.scripted_times.popleft()
            else:  # host interval, hardware time a fixed share of it
                ms = (end.t - self.t) * 1e3
                self.pair = (ms, ms * 1e3 * 0.8)
        return self.pair

    def elapsed_time(self, end):
        self.double.log(f"{self.kind}.elapsed_time")
        return self._durations(end)[0]  # ms

    def hardware_time(self, end):
        self.double.log(f"{self.kind}.hardware_time")
        return self._durations(end)[1]  # µs


class MluDouble:
    """Installs a stand-in torch_mlu; see the module docstring."""

    def __init__(self, api="2.x", device_count=1, major=3, name="MLU370-X8",
                 total_memory=48 * 2 ** 30, import_error=None, patched_torch=None,
                 register_backend=False, version=None, package=True):
        assert api in ("1.x", "2.x")
        self.api, self.count, self.major, self.name = api, device_count, major, name
        self.total_memory, self.import_error = total_memory, import_error
        # torch.is_mlu_available comes from Cambricon's patched torch: 1.x always, 2.1/2.3 too.
        self.patched_torch = (api == "1.x") if patched_torch is None else patched_torch
        self.register_backend = register_backend
        self.package = package  # False: Cambricon's torch without torch_mlu installed
        self.version = version or ("1.17.0" if api == "1.x" else "1.22.0+torch2.4.0")
        self.calls = []
        self.scripted_times = deque()  # (elapsed_ms, hardware_us) pairs handed out in order
        self.memory_reserved_bytes, self.peak_bytes = 3 * 2 ** 30, 2 * 2 ** 30
        self.current = 0
        self._finder = _Finder(self)
        self.device_module = None

    # --- bookkeeping ----------------------------------------------------------------------
    def log(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))

    def called(self, name):
        """Arguments of every call named `name`, in order."""
        return [(a, k) for n, a, k in self.calls if n == name]

    def names(self):
        return [n for n, _, _ in self.calls]

    def module_names(self):
        if self.api == "1.x":
            return {"torch_mlu", "torch_mlu.core", "torch_mlu.core.mlu_model",
                    "torch_mlu.core.device", "torch_mlu.core.device.notifier"}
        return {"torch_mlu"}

    def package_names(self):
        return {"torch_mlu", "torch_mlu.core", "torch_mlu.core.device"}

    # --- install / uninstall --------------------------------------------------------------
    def install(self):
        if getattr(getattr(torch, "mlu", None), "STANDIN", False):
            raise RuntimeError("the stand-in mlu device is loaded in this process; the torch_mlu double "
                               "cannot be installed beside it (stand-in tests run last for this reason)")
        if self.package:
            sys.meta_path.insert(0, self._finder)
        if self.patched_torch:
            def is_mlu_available():  # Cambricon's patch: "can torch_mlu be imported?"
                self.log("torch.is_mlu_available")
                try:
                    __import__("torch_mlu")
                    return True
                except ImportError:
                    return False
            torch.is_mlu_available = is_mlu_available
        return self

    def uninstall(self):
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        for mod in [m for m in sys.modules if m == "torch_mlu" or m.startswith("torch_mlu.")]:
            del sys.modules[mod]
        ours = self.device_module is not None and getattr(torch, "mlu", None) is self.device_module
        if ours and not self.register_backend:
            del torch.mlu
            sys.modules.pop("torch.mlu", None)
        if self.patched_torch and hasattr(torch, "is_mlu_available"):
            del torch.is_mlu_available

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()

    # --- module contents ------------------------------------------------------------------
    def populate(self, module):
        """Run when `import torch_mlu[...]` executes one of the double's modules."""
        name = module.__name__
        if name == "torch_mlu":
            self.log("import torch_mlu")
            if self.import_error:
                raise ImportError(self.import_error)
            module.__version__ = self.version
            if self.api == "1.x":  # catch: torch.mlu is the whole mlu_model module
                mlu_model = __import__("torch_mlu.core.mlu_model", fromlist=["x"])
                self._register(mlu_model)
            else:
                self._register(self._device_module(types.ModuleType("torch.mlu")))
        elif name == "torch_mlu.core.mlu_model":
            self._device_module(module)
        elif name == "torch_mlu.core.device.notifier":
            module.Notifier = self._notifier

    def _register(self, module):
        self.device_module = module
        if self.register_backend:
            if torch._C._get_privateuse1_backend_name() != "mlu":
                torch.utils.rename_privateuse1_backend("mlu")
            torch._register_device_module("mlu", module)
        else:
            torch.mlu = module
            sys.modules["torch.mlu"] = module

    def _fn(self, module, name, body):
        def call(*args, **kwargs):
            self.log(name, *args, **kwargs)
            return body(*args, **kwargs)
        call.__name__ = name
        setattr(module, name, call)

    def _check_index(self, device):
        index = self.current if device is None else int(device)
        if not 0 <= index < self.count:
            raise RuntimeError(f"Invalid device id {index} (device count {self.count})")
        return index

    def _device_module(self, m):
        """The functions both generations share, plus the 2.x extras (Event, properties, AMP)."""
        fn = self._fn
        fn(m, "is_available", lambda: self.count > 0)
        fn(m, "device_count", lambda: self.count)
        fn(m, "current_device", lambda: self.current)
        fn(m, "set_device", lambda i: setattr(self, "current", self._check_index(i)))
        fn(m, "synchronize", lambda device=None: self._check_index(device) and None)
        fn(m, "manual_seed", lambda seed: None)
        fn(m, "manual_seed_all", lambda seed: None)
        fn(m, "memory_allocated", lambda device=None: (self._check_index(device),
                                                        self.peak_bytes // 2)[1])
        fn(m, "max_memory_allocated", lambda device=None: (self._check_index(device),
                                                            self.peak_bytes)[1])
        fn(m, "memory_reserved", lambda device=None: (self._check_index(device),
                                                       self.memory_reserved_bytes)[1])
        fn(m, "empty_cache", lambda: None)
        m.amp = types.ModuleType(m.__name__ + ".amp")
        double = self

        class GradScaler:  # torch.mlu.amp.GradScaler (deprecated on the 2.4 line)
            def __init__(self, *args, enabled=True, **kwargs):
                double.log("amp.GradScaler", *args, enabled=enabled, **kwargs)
                if double.api == "2.x":
                    warnings.warn("torch.mlu.amp.GradScaler is deprecated", FutureWarning)
                self._enabled = enabled

            def is_enabled(self):
                return self._enabled
        m.amp.GradScaler = GradScaler
        if self.api == "1.x":
            fn(m, "mlu_device", lambda: "mlu")
            return m
        props = types.SimpleNamespace(name=self.name, major=self.major, minor=0,
                                      total_memory=self.total_memory, cluster_count=8)
        fn(m, "get_device_properties", lambda d=None: (self._check_index(d), props)[1])
        fn(m, "get_device_name", lambda d=None: (self._check_index(d), self.name)[1])
        fn(m, "is_bf16_supported", lambda: self.major >= 5)
        fn(m, "reset_peak_memory_stats", lambda device=None: None)
        m.Event = lambda enable_timing=False, blocking=False, interprocess=False: \
            self._event(enable_timing)
        # Hooks torch looks up on a registered PrivateUse1 device module (AMP, RNG).
        m.get_amp_supported_dtype = lambda: [torch.float16, torch.bfloat16]
        m.is_autocast_enabled = lambda: False
        m.set_autocast_enabled = lambda enabled: None
        m.get_autocast_dtype = lambda: torch.float16
        m.set_autocast_dtype = lambda dtype: None
        m._is_in_bad_fork = lambda: False
        m.get_rng_state = lambda device="mlu": torch.zeros(16, dtype=torch.uint8)
        m.set_rng_state = lambda state, device="mlu": None
        return m

    def _notifier(self):
        self.log("Notifier")
        notifier = _TimingEvent(self, "Notifier")
        notifier.place = lambda queue=None: notifier._mark("place")
        return notifier

    def _event(self, enable_timing):
        self.log("Event", enable_timing=enable_timing)
        ev = _TimingEvent(self, "Event", enable_timing)
        ev.record = lambda stream=None: ev._mark("record")
        return ev
