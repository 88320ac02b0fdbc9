"""The one place that knows device kinds (CPU, CUDA, Cambricon MLU).

`select_device('mlu')` returns a `Device`; the trainer, validator and benchmark helpers ask it
for everything device-specific (autocast, GradScaler, synchronisation, timing, memory, seeding,
distributed backend, where NMS runs) so that no other module writes `torch.cuda` or `torch.mlu`.

torch_mlu differs between generations (1.x: patched PyTorch 1.6-1.13; 2.x: torch >= 2.1): 1.x builds alias
`torch.mlu` to `torch_mlu.core.mlu_model` and time with `Notifier`; 2.x registers a CUDA-like
`torch.mlu` module with `Event`. We probe by feature (`hasattr`), never by version number.
`torch.device('mlu')` exists only once torch_mlu has registered the name, so `Device` builds its
`torch.device` lazily (a test double that does not register 'mlu' never creates one).
"""
import contextlib
import importlib
import importlib.util
import logging
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist

from utils.device.device_spec import launch_env, parse_device, visible_devices
from utils.device.device_timing import DeferredLaps, Stopwatch
from utils.errors import UserError
from utils.device.standin_device import is_standin, load_standin_if_requested

LOGGER = logging.getLogger("yolov5")
NO_PIP = "torch_mlu ships with Cambricon's SDK / PyTorch docker image and cannot be installed with pip"
_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


class MluRuntime(NamedTuple):
    """Outcome of probing torch_mlu. status: 'ok' | 'missing' | 'broken' | 'no-device'."""

    status: str
    module: Any = None  # torch.mlu (2.x), or torch_mlu.core.mlu_model on 1.x builds
    version: Optional[str] = None
    count: int = 0
    detail: str = ""


def probe_mlu() -> MluRuntime:
    """find_spec('torch_mlu') -> import torch_mlu (registers torch.mlu) -> ask the device module.

    With YOLOV5_STANDIN_MLU=1 the test suite's stand-in device (host memory) is the MLU instead.
    """
    standin = load_standin_if_requested()
    if standin is not None:
        count = int(standin.device_count())
        return MluRuntime("ok" if count else "no-device", standin, None, count, standin.DESCRIPTION)
    if importlib.util.find_spec("torch_mlu") is None:
        # Cambricon's patched torch defines torch.is_mlu_available even without torch_mlu.
        hint = "this torch is Cambricon's build, " if hasattr(torch, "is_mlu_available") else ""
        return MluRuntime("missing", detail=f"{hint}no module 'torch_mlu' in this Python")
    try:
        torch_mlu = importlib.import_module("torch_mlu")
    except Exception as e:  # a broken SDK install surfaces as any error type at import
        return MluRuntime("broken", detail=f"import torch_mlu failed: {type(e).__name__}: {e}")
    version = getattr(torch_mlu, "__version__", None)
    module = getattr(torch, "mlu", None)
    if module is None or not hasattr(module, "device_count"):
        try:
            module = importlib.import_module("torch_mlu.core.mlu_model")
        except ImportError:
            return MluRuntime("broken", version=version,
                              detail="torch_mlu imported but registered no torch.mlu module")
    available = module.is_available() if hasattr(module, "is_available") else True
    count = int(module.device_count()) if available else 0
    return MluRuntime("ok" if count > 0 else "no-device", module, version, count)


class DeviceProps(NamedTuple):
    index: int
    name: str
    total_memory: int  # bytes; 0 when the runtime does not say


@dataclass(frozen=True)
class Device:
    """A selected device and every device-specific decision the trainer needs.

    In each process call `set_current()` (or `init_distributed()`) before creating events or
    moving the model, so that events, streams and allocations land on `index`.
    """

    kind: str  # 'cpu' | 'cuda' | 'mlu'
    index: Optional[int] = None  # this process's device index (None on CPU)
    indices: Tuple[int, ...] = ()  # all indices this process drives ('0,1' without torchrun)
    local_rank: int = -1
    world_size: int = 1
    props: Tuple[DeviceProps, ...] = ()
    runtime_version: Optional[str] = None  # torch_mlu version on MLU, CUDA version on CUDA
    module: Any = field(default=None, repr=False, compare=False)  # torch.cuda / torch.mlu

    # --- identity -------------------------------------------------------------------------
    @property
    def torch_device(self) -> torch.device:
        if self.kind == "cpu":
            return torch.device("cpu")
        try:
            return torch.device(self.kind, self.index)
        except RuntimeError as e:
            raise RuntimeError(f"torch {torch.__version__} does not know the device type "
                               f"'{self.kind}': torch_mlu must register it when imported "
                               f"(torch_mlu {self.runtime_version} did not)") from e

    @property
    def name(self) -> str:
        return self.props[0].name if self.props else "CPU"

    @property
    def is_accelerator(self) -> bool:
        """True for CUDA and MLU: gates DDP and SyncBatchNorm as Cambricon's MLU port does."""
        return self.kind != "cpu"

    def move(self, obj, non_blocking: bool = False):
        """Move a module or tensor (or a dict/list/tuple of them) to this device."""
        if isinstance(obj, dict):
            return type(obj)((k, self.move(v, non_blocking)) for k, v in obj.items())
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.move(v, non_blocking) for v in obj)
        if isinstance(obj, torch.Tensor):
            return obj.to(self.torch_device, non_blocking=non_blocking)
        if isinstance(obj, torch.nn.Module):
            return obj.to(self.torch_device)
        return obj

    # Checkpoints are always loaded with this map_location and then moved with move(): catch's
    # torch.load override only moved top-level tensors, and CUDA loads leaked memory on GPU 0.
    checkpoint_map_location = "cpu"

    # --- mixed precision ------------------------------------------------------------------
    def amp_default(self, pyamp: bool = False) -> bool:
        """AMP is on by default on CUDA (upstream); elsewhere only with --pyamp (Cambricon's MLU port)."""
        return self.kind == "cuda" or bool(pyamp)

    def amp_dtype(self, dtype=None) -> torch.dtype:
        """Autocast dtype: fp16 on CUDA and MLU, bf16 on CPU; bf16 elsewhere only if supported."""
        default = torch.bfloat16 if self.kind == "cpu" else torch.float16
        want = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else (dtype or default)
        if want not in (torch.float16, torch.bfloat16):
            raise UserError(f"autocast dtype {dtype!r} is not supported: use 'fp16' or 'bf16'")
        if want == torch.float16 and self.kind == "cpu":
            raise UserError("fp16 autocast is not offered on CPU: use bf16 (the CPU default)")
        if want == torch.bfloat16 and self.kind != "cpu" and not self._bf16_supported():
            raise UserError(f"{self.kind.upper()}:{self.index} ({self.name}) does not support "
                            f"bf16 autocast: use fp16 (the default)")
        return want

    def _bf16_supported(self) -> bool:
        check = getattr(self.module, "is_bf16_supported", None)
        return bool(check()) if check is not None else False

    def autocast(self, enabled: bool = True, dtype=None):
        """Autocast context for this device; a no-op context when disabled."""
        if not enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.kind, dtype=self.amp_dtype(dtype))

    def make_grad_scaler(self, enabled: bool = True, dtype=None):
        """GradScaler for this device; disabled (a pass-through) unless fp16 autocast is used."""
        use = bool(enabled) and self.amp_dtype(dtype) == torch.float16
        generic = getattr(torch.amp, "GradScaler", None)  # torch >= 2.3
        if generic is not None:
            return generic(self.kind, enabled=use)
        if self.kind != "mlu":
            return torch.cuda.amp.GradScaler(enabled=use and self.kind == "cuda")
        own = getattr(getattr(self.module, "amp", None), "GradScaler", None)
        if own is None and use:  # fp16 without loss scaling would underflow silently
            raise UserError(f"fp16 AMP on MLU needs a GradScaler, but torch {torch.__version__} "
                            f"has no torch.amp.GradScaler and torch_mlu {self.runtime_version} no "
                            f"torch.mlu.amp.GradScaler; train without --pyamp")
        return own(enabled=use) if own is not None else torch.cuda.amp.GradScaler(enabled=False)

    # --- synchronisation, timing, memory ----------------------------------------------------
    def synchronize(self) -> None:
        if self.kind == "cuda":
            torch.cuda.synchronize(self.index)
        elif self.kind == "mlu":
            self.module.synchronize()

    def stopwatch(self) -> Stopwatch:
        if self.kind == "cpu":
            return Stopwatch(None)
        event_cls = getattr(self.module, "Event", None)
        if event_cls is not None:
            return Stopwatch(lambda: event_cls(enable_timing=True))
        notifier = importlib.import_module("torch_mlu.core.device.notifier")  # 1.x builds
        return Stopwatch(notifier.Notifier)

    def deferred_laps(self) -> Optional[DeferredLaps]:
        """Intervals timed without host waits, where the device has record()-style events that can
        be polled (CUDA, torch_mlu >= 1.13); None on CPU and on torch_mlu 1.x Notifiers."""
        if self.kind == "cpu":
            return None
        event_cls = getattr(self.module, "Event", None)
        if event_cls is None or not all(hasattr(event_cls(enable_timing=True), a) for a in ("record", "query")):
            return None
        return DeferredLaps(lambda: event_cls(enable_timing=True))

    def memory_reserved(self) -> Optional[int]:
        """Bytes held by the caching allocator (None on CPU)."""
        return None if self.kind == "cpu" else int(self.module.memory_reserved(self.index))

    def peak_memory(self) -> Optional[int]:
        """Peak bytes allocated since the last reset_peak_memory() (None on CPU)."""
        return None if self.kind == "cpu" else int(self.module.max_memory_allocated(self.index))

    def reset_peak_memory(self) -> None:
        if self.kind == "cpu":
            return
        for name in ("reset_peak_memory_stats", "reset_max_memory_allocated"):  # 1.x: 2nd only
            if hasattr(self.module, name):
                getattr(self.module, name)(self.index)
                return

    def seed(self, seed: int) -> None:
        """Seed this device's generators; host generators and cuDNN flags are utils/training/seeds.py's.

        torch.manual_seed reaches CUDA and a registered PrivateUse1 backend, but torch_mlu 1.x
        builds are not registered, so the device module is seeded explicitly here.
        """
        if self.kind == "cuda":
            torch.cuda.manual_seed_all(seed)
        elif self.kind == "mlu":
            (getattr(self.module, "manual_seed_all", None) or self.module.manual_seed)(seed)

    # --- distributed ------------------------------------------------------------------------
    @property
    def dist_backend(self) -> str:
        if self.kind == "mlu":
            return "cncl"
        if self.kind == "cuda" and dist.is_nccl_available():
            return "nccl"
        return "gloo"

    def set_current(self) -> None:
        """Make this the current device of the process (before creating events or DDP)."""
        if self.kind != "cpu":
            self.module.set_device(self.index)

    def init_distributed(self, timeout_s: Optional[float] = None) -> None:
        """set_current() then init the process group from torchrun's env:// variables."""
        self.set_current()
        kwargs = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
        dist.init_process_group(backend=self.dist_backend, **kwargs)

    def ddp_kwargs(self) -> dict:
        """DistributedDataParallel arguments: device_ids is a CUDA/NCCL notion (none on MLU)."""
        if self.kind == "cuda":
            return {"device_ids": [self.index], "output_device": self.index}
        return {}

    def barrier(self) -> None:
        """Barrier across ranks; no-op without a process group."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        if self.kind == "cuda" and dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self.index])
        else:
            dist.barrier()

    @contextlib.contextmanager
    def local_zero_first(self):
        """Local rank 0 runs the body first (dataset caching, downloads), the others wait."""
        if self.local_rank > 0:
            self.barrier()
        yield
        if self.local_rank == 0:
            self.barrier()

    # --- data placement advice ---------------------------------------------------------------
    @property
    def nms_on_cpu(self) -> bool:
        """Decode/NMS run on CPU for MLU (as Cambricon's MLU port does), on the device otherwise."""
        return self.kind == "mlu"

    @property
    def postprocess_device(self) -> torch.device:
        return torch.device("cpu") if self.nms_on_cpu else self.torch_device

    @property
    def pin_memory(self) -> bool:
        """Pinned host memory only helps copies to an accelerator."""
        return self.kind != "cpu"

    def banner(self, version: Optional[str] = None) -> str:
        """'YOLOv5 🚀 <version> torch <ver> CUDA:0 (<name>, <MB>MB)', one line per device."""
        head = f"YOLOv5 🚀 {version or project_version()} torch {torch.__version__} "
        if self.kind == "cpu":
            return head + "CPU\n"
        extra = f" torch_mlu {self.runtime_version}" if self.kind == "mlu" else ""
        if self.kind == "mlu" and is_standin(self.module):
            extra = f" {self.module.DESCRIPTION}"
        lines = [f"{self.kind.upper()}:{p.index} ({p.name}"
                 + (f", {p.total_memory / 2 ** 20:.0f}MB)" if p.total_memory else ")") + extra
                 for p in self.props]
        return head + ("\n" + " " * len(head)).join(lines) + "\n"


def project_version() -> str:
    """`git describe` of the checkout, else this file's date (as upstream's banner shows)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--tags", "--long", "--always"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    t = datetime.fromtimestamp(Path(__file__).stat().st_mtime)
    return f"{t.year}-{t.month}-{t.day}"


# --- selection ------------------------------------------------------------------------------
def _fallback_hint() -> str:
    if torch.cuda.is_available():
        return "use --device 0 (CUDA) or --device cpu"
    return "use --device cpu"


def _open_cuda(text: str):
    if not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        seen = visible_devices("cuda")
        hidden = f", {seen.describe()}" if seen.variable else ""
        raise UserError(f"--device {text!r}: CUDA is not available (torch {torch.__version__} "
                        f"{built}, no usable NVIDIA GPU{hidden}); use --device cpu or --device mlu")
    count = torch.cuda.device_count()

    def props(i):
        p = torch.cuda.get_device_properties(i)
        return DeviceProps(i, p.name, int(p.total_memory))
    return torch.cuda, count, torch.version.cuda, props


def _open_mlu(text: str):
    rt = probe_mlu()
    if rt.status == "missing":
        raise UserError(f"--device {text!r}: torch_mlu is not installed ({rt.detail}); {NO_PIP}; "
                        f"run inside Cambricon's image, or {_fallback_hint()}")
    if rt.status == "broken":
        raise UserError(f"--device {text!r}: torch_mlu is installed but unusable ({rt.detail}); "
                        f"check that NEUWARE_HOME and the driver match this torch_mlu, "
                        f"or {_fallback_hint()}")
    if rt.status == "no-device":
        raise UserError(f"--device {text!r}: torch_mlu {rt.version} is installed but no MLU is "
                        f"visible (device count 0, {visible_devices('mlu').describe()}); check the "
                        f"driver with `cnmon`, or {_fallback_hint()}")
    module = rt.module

    def props(i):
        get = getattr(module, "get_device_properties", None)
        if get is not None:
            p = get(i)
            return DeviceProps(i, str(p.name), int(getattr(p, "total_memory", 0)))
        name = module.get_device_name(i) if hasattr(module, "get_device_name") else "MLU"
        return DeviceProps(i, str(name), 0)
    return module, rt.count, rt.version, props


def _auto_kind() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "mlu" if probe_mlu().status == "ok" else "cpu"


def select_device(device: Optional[str] = "", batch_size: Optional[int] = None,
                  newline: bool = True, log: bool = True) -> Device:
    """Resolve `--device` (plus torchrun's LOCAL_RANK) to a Device, or raise UserError.

    Without torchrun, listed indices are all driven by this process ('0,1': DataParallel in
    upstream) and '' on CUDA takes every visible GPU. Under torchrun each rank takes entry
    LOCAL_RANK of the listed indices, or index LOCAL_RANK when none are listed. With more than
    one device, `batch_size` must be a multiple of the device count (upstream check).
    """
    req = parse_device(device)
    launch = launch_env()
    kind = _auto_kind() if req.kind == "auto" else req.kind
    if kind == "cpu":
        dev = Device("cpu", local_rank=launch.local_rank, world_size=launch.world_size)
    else:
        module, count, version, props = (_open_cuda if kind == "cuda" else _open_mlu)(req.text)
        every_gpu = req.kind == "auto" and kind == "cuda" and not launch.distributed
        pool = req.indices or (tuple(range(count)) if every_gpu else ())
        for i in pool:
            if i >= count:
                raise UserError(f"--device {req.text!r}: {kind.upper()} device {i} does not exist; "
                                f"{count} visible (indices 0-{count - 1}, "
                                f"{visible_devices(kind).describe()}); {_fallback_hint()}")
        if launch.distributed:
            if pool and len(pool) < launch.local_world_size:
                raise UserError(f"--device {req.text!r} lists {len(pool)} device(s) but torchrun "
                                f"starts {launch.local_world_size} processes on this node; list "
                                f"one device per process or use --device {kind}")
            index = pool[launch.local_rank] if pool else launch.local_rank
            if index >= count:
                raise UserError(f"LOCAL_RANK {launch.local_rank} needs {kind.upper()} device "
                                f"{index} but only {count} are visible "
                                f"({visible_devices(kind).describe()}); start fewer processes")
            indices = (index,)
        elif kind == "mlu" and len(pool) > 1:
            raise UserError(f"--device {req.text!r}: one process drives one MLU (torch_mlu has no "
                            f"DataParallel); launch one process per card: python -m "
                            f"torch.distributed.run --nproc_per_node {len(pool)} train.py "
                            f"--device {req.text}")
        else:
            indices = pool or (0,)
        n = len(pool) or 1
        if n > 1 and batch_size and batch_size % n:
            raise UserError(f"--batch-size {batch_size} is not a multiple of the {n} devices in "
                            f"--device {req.text!r}; use a multiple of {n}")
        dev = Device(kind, indices[0], indices, launch.local_rank, launch.world_size,
                     tuple(props(i) for i in indices), version, module)
    if log:
        text = dev.banner()
        LOGGER.info(text if newline else text.rstrip())
    return dev


def inventory() -> dict:
    """Every device kind this machine offers, without raising (for collect_env)."""
    cuda = {"available": torch.cuda.is_available(), "built_with": torch.version.cuda,
            "visible": visible_devices("cuda").describe(), "devices": []}
    if cuda["available"]:
        _, count, _, props = _open_cuda("")
        cuda["devices"] = [props(i)._asdict() for i in range(count)]
    rt = probe_mlu()
    mlu = {"status": rt.status, "version": rt.version, "detail": rt.detail,
           "visible": visible_devices("mlu").describe(), "devices": [], "standin": is_standin(rt.module)}
    if rt.status == "ok":
        _, count, _, props = _open_mlu("mlu")
        mlu["devices"] = [props(i)._asdict() for i in range(count)]
    return {"cuda": cuda, "mlu": mlu}
