"""MLU support for a YOLOv5 tree ported by apply_patch.sh (Cambricon MLU through torch_mlu).

This file is written into the tree by the porting tool and removed by `apply_patch.sh PATH --revert`.
The ported train.py, val.py, detect.py and utils/torch_utils.py call it at the few places where the
device kind matters; everything else in the tree is left as it was. It needs torch >= 1.6 and works
with both torch_mlu generations: catch-era 1.x builds (`torch_mlu.core.mlu_model`, `Notifier`,
`torch.mlu.amp`) and 2.x builds (`torch.mlu` registered as torch's PrivateUse1 device).
"""
import contextlib
import importlib
import importlib.util
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch

LOGGER = logging.getLogger(__name__)
RANK = int(os.getenv('RANK', -1))
LOCAL_RANK = int(os.getenv('LOCAL_RANK', -1))
WORLD_SIZE = int(os.getenv('WORLD_SIZE', 1))


def fail(message):
    """One clear line on stderr and exit status 2, instead of a traceback deep in torch."""
    print(f'ERROR: {message}', file=sys.stderr)
    raise SystemExit(2)


# --- device selection -----------------------------------------------------------------------
def wants_mlu(spec):
    """True for --device mlu, mlu:N (any case, spaces ignored)."""
    s = str(spec).strip().lower()
    return s == 'mlu' or s.startswith('mlu:')


def mlu_module():
    """The MLU device module (torch.mlu), importing torch_mlu first; fails with the reason."""
    if importlib.util.find_spec('torch_mlu') is None:
        fail("--device mlu: torch_mlu is not installed in this Python. It ships with Cambricon's "
             "SDK and PyTorch docker images (not pip); run inside that image, or use --device cpu.")
    try:
        torch_mlu = importlib.import_module('torch_mlu')
    except Exception as e:  # a broken install raises anything from ImportError to OSError
        fail(f'--device mlu: torch_mlu is installed but cannot be imported ({type(e).__name__}: {e}); '
             f'check NEUWARE_HOME, the driver and that torch matches torch_mlu.')
    module = getattr(torch, 'mlu', None)
    if module is None:  # catch-era builds keep the device functions here
        try:
            module = importlib.import_module('torch_mlu.core.mlu_model')
        except ImportError:
            fail(f'--device mlu: torch_mlu {getattr(torch_mlu, "__version__", "?")} registered no '
                 f'torch.mlu module; this torch_mlu build is not supported.')
    return module


def mlu_count(module):
    try:
        available = module.is_available() if hasattr(module, 'is_available') else True
        return int(module.device_count()) if available else 0
    except Exception:
        return 0


def select_mlu(spec, batch_size=0):
    """torch.device for --device mlu / mlu:N after checking that the card exists."""
    s = str(spec).strip().lower()
    index_text = s.partition(':')[2]
    if index_text and not index_text.isdigit():
        fail(f"--device {spec}: expected 'mlu' or 'mlu:N' with one card index N; for several MLUs "
             f"run one process per card: python -m torch.distributed.run --nproc_per_node N train.py "
             f"--device mlu")
    module = mlu_module()
    count = mlu_count(module)
    if count == 0:
        seen = {k: os.environ[k] for k in ('MLU_VISIBLE_DEVICES', 'CN_VISIBLE_DEVICES') if k in os.environ}
        hint = f' (visibility set: {seen})' if seen else ''
        fail(f'--device {spec}: torch_mlu sees no MLU{hint}; check `cnmon` and the container\'s device '
             f'mounts, or use --device cpu.')
    index = LOCAL_RANK if LOCAL_RANK != -1 else int(index_text or 0)
    if index >= count:
        fail(f'--device {spec}: MLU {index} requested but only {count} visible; choose 0..{count - 1}.')
    if batch_size and WORLD_SIZE > 1 and batch_size % WORLD_SIZE:
        fail(f'--batch-size {batch_size} is not a multiple of the {WORLD_SIZE} processes.')
    module.set_device(index)
    name = _mlu_name(module, index)
    _log(f'Using MLU:{index} ({name}), torch {torch.__version__}')
    return torch.device('mlu', index)


def _log(message):
    """Through the tree's 'yolov5' logger where it has one (v6.2+); v6.0/v6.1 configure the root logger."""
    tree_logger = logging.getLogger('yolov5')
    (tree_logger if tree_logger.handlers else LOGGER).info(message)


def _mlu_name(module, index):
    for get in ('get_device_name',):
        if hasattr(module, get):
            try:
                return getattr(module, get)(index)
            except Exception:
                pass
    return 'MLU'


def device_count(device):
    """Cards of the selected kind (for the DDP sanity check)."""
    if device.type == 'mlu':
        return mlu_count(mlu_module())
    return torch.cuda.device_count()


# --- distributed ----------------------------------------------------------------------------
def init_distributed(device, local_rank):
    """One process per MLU with the CNCL backend (torch_mlu registers it)."""
    import torch.distributed as dist
    module = mlu_module()
    module.set_device(local_rank)
    dist.init_process_group(backend='cncl')
    return torch.device('mlu', local_rank)


def _backend():
    import torch.distributed as dist
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def barrier_kwargs(local_rank):
    """device_ids is an NCCL-only argument of dist.barrier."""
    return {'device_ids': [local_rank]} if _backend() == 'nccl' else {}


def ddp_kwargs(local_rank):
    """DDP's device_ids/output_device on CUDA only; on MLU each process owns its one card."""
    return {'device_ids': [local_rank], 'output_device': local_rank} if _backend() == 'nccl' else {}


# --- mixed precision ------------------------------------------------------------------------
def amp_enabled(device, pyamp):
    """CUDA trains with AMP by default (upstream); MLU and CPU only with --pyamp."""
    return device.type == 'cuda' or bool(pyamp)


def amp_dtype(device):
    if device.type == 'cpu':
        return torch.bfloat16  # CPU autocast has no useful fp16 path
    return torch.float16


def autocast(device, enabled=True):
    if not enabled:
        return contextlib.nullcontext() if hasattr(contextlib, 'nullcontext') else _null()
    if device.type == 'mlu':
        own = getattr(getattr(mlu_module(), 'amp', None), 'autocast', None)
        if not hasattr(torch, 'autocast') and own is not None:  # torch 1.x: torch_mlu's own
            return own(enabled=True)
    if hasattr(torch, 'autocast'):
        return torch.autocast(device_type=device.type, dtype=amp_dtype(device))
    return torch.cuda.amp.autocast(enabled=device.type == 'cuda')


@contextlib.contextmanager
def _null():
    yield


def grad_scaler(device, enabled=True):
    """GradScaler for the device: torch.amp (torch >= 2.3), else torch.mlu.amp / torch.cuda.amp."""
    use = bool(enabled) and amp_dtype(device) == torch.float16
    if device.type == 'mlu':
        if _torch_amp_scaler():
            return torch.amp.GradScaler('mlu', enabled=use)
        own = getattr(getattr(mlu_module(), 'amp', None), 'GradScaler', None)
        if own is not None:
            return own(enabled=use)
        if use:
            fail('--pyamp on MLU needs a GradScaler (torch.amp or torch.mlu.amp); this torch_mlu has '
                 'neither. Train without --pyamp.')
    if _torch_amp_scaler():
        return torch.amp.GradScaler('cuda' if device.type == 'cuda' else 'cpu', enabled=use)
    return torch.cuda.amp.GradScaler(enabled=use and device.type == 'cuda')


def _torch_amp_scaler():
    return hasattr(torch, 'amp') and hasattr(torch.amp, 'GradScaler')


# --- postprocessing and checkpoints ---------------------------------------------------------
def postprocess_device(device):
    """NMS and the metric matching run on the CPU for MLU (data-dependent ops), elsewhere in place."""
    return torch.device('cpu') if device.type == 'mlu' else device


def to_device(x, device):
    """Tensors (also in lists/tuples) on `device`; fp16/bf16 become fp32 on the CPU, where
    torchvision's NMS has no half-precision kernel (MLU validation runs the model in fp16)."""
    if isinstance(x, torch.Tensor):
        x = x.to(device)
        return x.float() if device.type == 'cpu' and x.dtype in (torch.float16, torch.bfloat16) else x
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


def move_checkpoint(ckpt, map_location):
    """A checkpoint read with map_location='cpu', its modules and tensors moved afterwards."""
    if map_location is None or str(map_location) == 'cpu':
        return ckpt
    if isinstance(ckpt, dict):
        return {k: move_checkpoint(v, map_location) for k, v in ckpt.items()}
    if isinstance(ckpt, (torch.nn.Module, torch.Tensor)):
        return ckpt.to(map_location)
    return ckpt


# --- current-stack fixes written by --modernize ---------------------------------------------
def torch_load(*args, **kwargs):
    """torch.load with the pickled-module checkpoints of YOLOv5 allowed (torch >= 2.6 defaults to
    weights_only=True, which refuses them). Only load checkpoints you trust."""
    if 'weights_only' not in kwargs and _has_weights_only():
        kwargs['weights_only'] = False
    return torch.load(*args, **kwargs)


def _has_weights_only():
    import inspect
    try:
        return 'weights_only' in inspect.signature(torch.load).parameters
    except (TypeError, ValueError):
        return False


def _online(timeout=1.0):
    import socket
    if os.environ.get('YOLOV5_OFFLINE', '').lower() in ('1', 'true', 'yes'):
        return False
    try:
        socket.create_connection(('github.com', 443), timeout=timeout).close()  # DNS and route
        return True
    except OSError:
        return False


def skip_download(font):
    """True when a font would be downloaded but this machine is offline (or YOLOV5_OFFLINE=1)."""
    name = Path(str(font)).name
    places = [Path(str(font))] + [Path(d) / 'Ultralytics' / name for d in
                                  (os.getenv('YOLOV5_CONFIG_DIR', ''), Path.home() / '.config', '/tmp') if d]
    return not any(p.exists() for p in places) and not _online()


def default_font(size=10):
    """PIL's built-in font, at `size` where Pillow supports it (>= 10.1)."""
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def text_size(font, text):
    """(width, height) of `text`: FreeTypeFont.getsize is gone in Pillow >= 10, getbbox replaces it."""
    if hasattr(font, 'getbbox'):
        left, top, right, bottom = font.getbbox(text)
        return right, bottom
    return font.getsize(text)


# --- benchmark: --iters, --skip and the MetricCollector ---------------------------------------
class _DeviceView:
    """The few device facts utils_mlu's MetricCollector asks for."""

    def __init__(self, device):
        self.device, self.kind = device, device.type
        self.world_size = WORLD_SIZE
        self.module = mlu_module() if self.kind == 'mlu' else (torch.cuda if self.kind == 'cuda' else None)
        self.name = _mlu_name(self.module, device.index or 0) if self.kind == 'mlu' else (
            torch.cuda.get_device_name(device) if self.kind == 'cuda' else 'CPU')
        self.runtime_version = getattr(sys.modules.get('torch_mlu'), '__version__', None)

    def synchronize(self):
        if self.module is not None:
            self.module.synchronize()

    def peak_memory(self):
        if self.module is None or not hasattr(self.module, 'max_memory_allocated'):
            return None
        return int(self.module.max_memory_allocated())

    def stopwatch(self):
        return _Stopwatch(self.module)


class _Lap:
    def __init__(self, hardware_us):
        self.hardware_us = hardware_us


class _Stopwatch:
    """Device events (torch.mlu.Event on 2.x, Notifier on 1.x) around one iteration."""

    def __init__(self, module):
        if hasattr(module, 'Event'):
            self.make = lambda: module.Event(enable_timing=True)
            self.mark = 'record'
        else:
            self.make = importlib.import_module('torch_mlu.core.device.notifier').Notifier
            self.mark = 'place'
        self.begin = None

    def start(self):
        self.begin = self.make()
        getattr(self.begin, self.mark)()

    def stop(self):
        end = self.make()
        getattr(end, self.mark)()
        end.synchronize()
        hw = getattr(self.begin, 'hardware_time', None)
        return _Lap(hw(end) if hw is not None else None)


def _metric_collector(device):
    """utils_mlu/metric.py of the porting tool, copied beside utils/ in this tree."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.append(root)
    from utils_mlu.metric import MetricCollector
    return MetricCollector(enable_only_benchmark=True, record_elapsed_time=True,
                           record_hardware_time=device.type == 'mlu', device=_DeviceView(device))


class Benchmark:
    """--iters N stops after N optimizer iterations in total; --skip drops per-epoch validation and
    checkpoints; every iteration is one MetricCollector sample (written only with BENCHMARK_LOG)."""

    def __init__(self, opt, device, batches_per_epoch, start_epoch, epochs, amp=False):
        self.opt, self.device, self.amp = opt, device, bool(amp)
        self.iters = int(getattr(opt, 'iters', -1) or -1)
        self.skip = bool(getattr(opt, 'skip', False))
        self.epochs = epochs
        if self.iters > 0:  # enough epochs to hold N iterations, ending in the epoch that reaches N
            self.epochs = start_epoch + math.ceil(self.iters / max(1, batches_per_epoch))
        self.done = 0
        self.running = False
        self.collector = _metric_collector(device) if os.environ.get('BENCHMARK_LOG') else None

    def step(self):
        """Called at the top of each batch: closes the previous iteration; True means stop."""
        self._close()
        if 0 < self.iters <= self.done:
            return True
        if self.collector is not None:
            self.collector.place()
        self.running = True
        return False

    def epoch_end(self):
        self._close()

    def _close(self):
        if self.running:
            self.running = False
            self.done += 1
            if self.collector is not None:
                self.collector.record()

    def finish(self):
        self._close()
        if self.collector is None or RANK not in (-1, 0):
            return
        opt = self.opt
        net = Path(getattr(opt, 'cfg', '') or getattr(opt, 'weights', '') or 'yolov5').stem
        self.collector.insert_metrics(net=net, batch_size=opt.batch_size // max(1, WORLD_SIZE),
                                      cards=WORLD_SIZE, precision='amp' if self.amp else 'fp32',
                                      DPF_mode='ddp' if WORLD_SIZE > 1 else 'single')
        self.collector.dump()
        _log(f'benchmark: {self.done} iterations logged to {os.environ["BENCHMARK_LOG"]}')
