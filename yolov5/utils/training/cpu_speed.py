"""CPU training speed-up that changes no computed number: keep freed memory mapped.

By default glibc hands blocks above its mmap threshold (128 KiB, rising dynamically to at most
32 MiB) back to the kernel on free(), so every training step page-faults much of its activation
memory in again; every block above 32 MiB always. Telling malloc to serve big blocks from the
heap and never to trim it lets each step reuse the pages of the previous one. Measured with
this speed-up and without it, alternating in one run (bench/train_step.py --baseline; batch 16,
fp32, 2 cores; step time with / without, page faults per step without):
    yolov5n 320 px: 0.96-1.0x (0-60k faults)     yolov5n 640 px: 0.54x (730k faults)
    yolov5s 320 px: 0.72-0.92x (130-250k faults) yolov5s 640 px: 0.52x (2.0M faults)
The process keeps its peak memory instead of shrinking between steps (the peak itself stays the
same: yolov5n 320 px 1599 vs 1598 MiB); processes forked afterwards (dataloader workers) inherit the setting.

Measured in one-off experiments (no bench script keeps them) and NOT adopted:
* channels-last weights: another 12-25% off a step, but torch's CPU BatchNorm computes channels-last
  batch statistics far less accurately than NCHW ones (batch mean off by ~1e-3 std and BN weight
  gradients by up to ~10% on real images, against ~1e-7 for NCHW; the error grows to ~1e-2 at the
  head), so training would no longer compute what upstream computes.
* torch.compile: another ~17% off a yolov5n 320 px step (numerics fine, 1e-7), after 50-80 s of
  compilation on 2 cores, repeated for every new input shape (multi-scale, last partial batch);
  opt-in material at best, not wired in.
* in-place SiLU activations: ~4% slower per step.

Only the CPU gets this: CUDA and MLU tensors come from their own caching allocators.

Second setting, also without any change to the numbers: `limit_openmp_spinning` (see its docstring),
which must run before torch is imported.
"""
import ctypes
import ctypes.util
import logging
import os
import platform
import sys

LOGGER = logging.getLogger("yolov5")

# glibc mallopt() parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
_TRIM_NEVER = 2 ** 31 - 1  # the largest value the int parameter takes: never give heap tops back

_memory_kept = False


def glibc_mallopt():
    """glibc's mallopt(param, value) -> 1 on success, or None where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def keep_freed_memory():
    """Ask glibc to serve big blocks from the heap and never trim it (see module docstring).

    Returns True when the setting is in effect (now or from an earlier call); False where the C
    library is not glibc or refuses, in which case nothing changed.
    """
    global _memory_kept
    if _memory_kept:
        return True
    mallopt = glibc_mallopt()
    # trim threshold first: if it is refused, nothing has changed yet
    if mallopt is None or mallopt(M_TRIM_THRESHOLD, _TRIM_NEVER) != 1 or mallopt(M_MMAP_MAX, 0) != 1:
        return False
    _memory_kept = True
    return True


def _device_kind(device):
    """'cpu' / 'cuda' / 'mlu' from a utils.device.devices.Device, a torch.device or a device string."""
    kind = getattr(device, "kind", None)  # utils.device.devices.Device
    if isinstance(kind, str):
        return kind
    import torch  # not at module level: limit_openmp_spinning must be importable before torch
    if isinstance(device, torch.device):
        return device.type
    return str(device).strip().lower().split(":")[0]  # '' (auto) is not assumed to be the CPU


def optimise_for_training(model, device):
    """Apply the CPU training speed-ups when `device` is the CPU; returns `model`, unchanged.

    Call once before the training loop (before the dataloader workers start, so they share the
    setting). On other devices it does nothing. `device` may be a utils.device.devices.Device, a
    torch.device or a string ('cpu', 'cuda:0', 'mlu', ...). The model is taken and returned so
    that call sites stay the same if a model-level speed-up is adopted later.
    """
    if _device_kind(device) != "cpu":
        return model
    kept = keep_freed_memory()
    LOGGER.info(f"CPU training: freed memory {'kept mapped for reuse' if kept else 'returned to the OS (not glibc)'}")
    return model


# Polls before an idle OpenMP thread sleeps (libgomp's own default, with nothing set: 300000).
OPENMP_SPIN_COUNT = 10000
# Variables by which a user has already chosen how OpenMP threads wait; then nothing is set.
OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def openmp_loaded():
    """Whether an OpenMP runtime is already mapped into this process (its environment is then read)."""
    try:
        with open("/proc/self/maps") as f:
            return any(name in line for line in f for name in ("libgomp", "libiomp", "libomp"))
    except OSError:  # no /proc: assume torch brought one
        return "torch" in sys.modules


def limit_openmp_spinning(environ=None):
    """Let torch's idle OpenMP threads go to sleep after 10000 polls instead of libgomp's 300000.

    Between two parallel operators (thousands per training step) a torch thread polls for its next
    piece of work before sleeping. When another process holds a core (a dataloader worker, any
    other job), the polling thread takes that core's time from the thread everyone waits for, and
    every operator's barrier then waits for a scheduler time slice. Measured on 2 cores, yolov5n
    batch 16, each setting in its own process, taking turns step by step (median step time / default's):
        one busy process beside the step, 320 px: 10000 polls 0.44x, 30000 0.57x (default 3.0 s);
        nothing beside it: 10000 polls 0.99x at 320 px, 1.01x at 640 px (default 0.54 s, 2.3 s);
        OMP_WAIT_POLICY=PASSIVE: 0.24x with the busy process but 1.16x alone, hence not that.
    Thread count and work split stay the same, so every number is bit-identical.

    libgomp reads its environment once, when torch loads it: call this before the first
    `import torch` of the process. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept.
    Returns True when the setting (ours or the user's) will be in effect, False when OpenMP was
    already loaded (nothing is changed then).
    """
    environ = os.environ if environ is None else environ
    if openmp_loaded():
        return False
    if not any(k in environ for k in OPENMP_WAIT_VARIABLES):
        environ["GOMP_SPINCOUNT"] = str(OPENMP_SPIN_COUNT)
    return True
