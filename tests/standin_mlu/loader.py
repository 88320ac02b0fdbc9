"""Build (once, cached) and load the stand-in extension, then register it as torch's 'mlu'.

The build goes to $YOLOV5_STANDIN_MLU_BUILD, else <venv>/var/standin_mlu when the interpreter's
prefix is writable, else ~/.cache/yolov5_standin_mlu. torch.utils.cpp_extension keys the build
on the source text, flags and torch version, so an edited csrc/standin_mlu.cpp is rebuilt on
the next load and an unchanged one is reused in seconds. Concurrent loads (test workers,
torchrun ranks) wait on the extension's lock file instead of compiling twice.
"""
import os
import sys
import threading
from pathlib import Path

import torch

NAME = "mlu"
# Printed in the device banner and collect_env: what this device really is.
DESCRIPTION = "stand-in on host memory (test device, not a Cambricon card)"
SOURCE = Path(__file__).resolve().parent / "csrc" / "standin_mlu.cpp"
DEFAULT_DEVICE_COUNT = 2

_lock = threading.Lock()
_ext = None


def build_dir() -> Path:
    chosen = os.environ.get("YOLOV5_STANDIN_MLU_BUILD")
    if chosen:
        return Path(chosen)
    venv = Path(sys.prefix) / "var" / "standin_mlu"
    try:
        venv.mkdir(parents=True, exist_ok=True)
        if os.access(venv, os.W_OK):
            return venv
    except OSError:
        pass
    return Path.home() / ".cache" / "yolov5_standin_mlu"


def _compile(verbose=False):
    from torch.utils.cpp_extension import load as load_extension
    # ninja from requirements-dev.txt sits beside the interpreter, on PATH or not
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    where = build_dir()
    where.mkdir(parents=True, exist_ok=True)
    return load_extension(name="yolov5_standin_mlu", sources=[str(SOURCE)], build_directory=str(where),
                          extra_cflags=["-O2"], verbose=verbose)


def _decomposed_cpu_ops():
    """aten operators a backend without its own kernel would run decomposed, unlike the CPU."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    return sorted(name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("aten::") and has(name, "CPU") and has(name, "CompositeImplicitAutograd")
                  and not has(name, "PrivateUse1"))


def is_loaded() -> bool:
    return _ext is not None


def extension():
    """The loaded C++ module (load() first)."""
    if _ext is None:
        raise RuntimeError("the stand-in mlu device is not loaded: call standin_mlu.load() first")
    return _ext


_library = None


def load_library(verbose=False):
    """Build if needed and load the C++ library only: kernels and device guard, no 'mlu' name yet.

    Autograd sizes its per-device queues at the first backward pass of a process, from the
    devices registered then; a process that runs backward passes before load() must call this
    first (the pytest plugin does, at collection time).
    """
    global _library
    with _lock:
        if _library is None:
            _library = _compile(verbose)
            _library.run_cpu_kernels_for(_decomposed_cpu_ops())
        return _library


def load(device_count=None, verbose=False):
    """Build if needed, load, and register 'mlu' with torch; returns the torch.mlu module. Idempotent."""
    global _ext
    ext = load_library(verbose)
    with _lock:
        if _ext is not None:
            return torch.mlu
        current = torch._C._get_privateuse1_backend_name()
        if current not in ("privateuseone", NAME):
            raise RuntimeError(f"PrivateUse1 is already registered as {current!r} in this process; "
                               f"the stand-in mlu device cannot be loaded beside it")
        if getattr(torch, "mlu", None) is not None:
            raise RuntimeError("torch.mlu already exists in this process (torch_mlu or a test double is "
                               "loaded); the stand-in cannot replace it")
        count = device_count or int(os.environ.get("YOLOV5_STANDIN_MLU_COUNT", DEFAULT_DEVICE_COUNT))
        ext.set_device_count(count)
        from . import device_module
        module = device_module.build(ext)
        if current != NAME:
            torch.utils.rename_privateuse1_backend(NAME)
        torch._register_device_module(NAME, module)
        torch.utils.generate_methods_for_privateuse1_backend(for_tensor=True, for_module=True,
                                                             for_storage=True)
        ext.set_active(True)
        _ext = ext
        from . import cncl
        cncl.register()
        return torch.mlu


def counters() -> dict:
    """Copies between host and device (count and bytes), scalar reads, synchronize calls so far."""
    return dict(extension().counters())


def reset_counters() -> None:
    extension().reset_counters()
