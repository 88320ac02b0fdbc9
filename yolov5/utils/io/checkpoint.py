"""Checkpoints in the upstream YOLOv5 format: atomic save, safe load, strip, model extraction.

Format (upstream v6.0 train.py plus v6.1's `date`): a dict with `epoch`, `best_fitness`, `model`,
`ema`, `updates`, `optimizer`, `wandb_id`, `date`, where `model`/`ema` are whole pickled fp16
`models.yolo.Model` objects. Our package root is yolov5/, so our classes pickle under the same
paths as upstream's and files load both ways. Our trainer adds `opt` (as v6.2), `train_imgsz` (the
training image size, utils/io/train_imgsz.py) and, in last.pt, `resume_state` (utils/training/train_state.py);
upstream's loaders ignore extra keys.

Loading never runs code from the file: torch.load gets the allow-list unpickler from
utils.io.safe_pickle. Everything is mapped to CPU first; callers move the model to their device.
Saving writes a temporary file in the target directory and renames it over the target only when
complete, so an interrupted save leaves the previous checkpoint intact; a save refused by the file
system (disk full, quota, `ulimit -f`, read-only) is a UserError naming the folder and the space needed.
"""
import copy
import errno
import inspect
import logging
import os
import pickle
import secrets
import tarfile
import zipfile
from datetime import datetime
from pathlib import Path

import torch
import torch.nn as nn

from utils.io.disk_writes import free_space, write_failure
from utils.errors import UserError
from utils.printable import printable
from utils.io.safe_pickle import SAFE_PICKLE_MODULE, ForbiddenGlobalError
from utils.io.train_imgsz import TRAIN_IMGSZ_KEY

LOGGER = logging.getLogger("yolov5")

CHECKPOINT_KEYS = ("epoch", "best_fitness", "model", "ema", "updates", "optimizer", "wandb_id", "date")
# Keys upstream releases put in checkpoints (v6.0 strip: training_results; v6.2: opt; v7.0: git).
UPSTREAM_KEYS = CHECKPOINT_KEYS + ("training_results", "opt", "git")
# strip_optimizer keeps these and our training image size (an int upstream tools ignore); anything
# else (e.g. our trainer's resume state) is dropped.
KEPT_BY_STRIP = UPSTREAM_KEYS + (TRAIN_IMGSZ_KEY,)

_TORCH_LOAD_HAS_WEIGHTS_ONLY = "weights_only" in inspect.signature(torch.load).parameters

# What torch.load raises for files that are not (intact) checkpoints.
_READ_ERRORS = (EOFError, OSError, RuntimeError, ValueError, KeyError, IndexError, TypeError,
                AttributeError, ImportError, UnicodeDecodeError, zipfile.BadZipFile,
                tarfile.TarError, pickle.UnpicklingError)


# ----------------------------------------------------------------------------------- saving
def _unwrap(model):
    """The bare model inside DataParallel / DistributedDataParallel (pickles must not hold those)."""
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, parallel) else model


def _to_cpu(obj):
    """A snapshot with tensors copied to CPU, containers rebuilt (optimizer state, attributes)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = obj.copy()  # keeps the mapping type (OrderedDict, defaultdict)
        out.update((k, _to_cpu(v)) for k, v in obj.items())
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _portable_half_copy(model):
    """Deep copy in fp16 on CPU, so the file loads on machines without the training device.

    .half() and .cpu() convert parameters and buffers only; plain tensor attributes (Detect grids,
    Model.stride, class_weights) are moved to CPU here without changing their dtype.
    """
    if model is None:
        return None
    m = copy.deepcopy(_unwrap(model)).half().cpu()
    for module in m.modules():
        for key, value in list(vars(module).items()):
            if not key.startswith("_") and isinstance(value, (torch.Tensor, list, tuple, dict)):
                setattr(module, key, _to_cpu(value))
    return m


def build_checkpoint(model, ema=None, optimizer=None, epoch=-1, best_fitness=None, updates=None,
                     wandb_id=None, date=None):
    """The checkpoint dict as upstream train.py writes it.

    `ema` may be the EMA model or an EMA holder with `.ema` and `.updates` attributes.
    `optimizer` may be an optimizer or an already taken state_dict.
    """
    if ema is not None and not isinstance(ema, nn.Module) and hasattr(ema, "ema"):
        updates = ema.updates if updates is None else updates
        ema = ema.ema
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.state_dict()
    return {
        "epoch": epoch,
        "best_fitness": best_fitness,
        "model": _portable_half_copy(model),
        "ema": _portable_half_copy(ema),
        "updates": updates,
        "optimizer": _to_cpu(optimizer),
        "wandb_id": wandb_id,
        "date": date or datetime.now().isoformat(),
    }


def save_checkpoint(obj, path):
    """torch.save `obj` to `path` atomically: temp file in the same directory, fsync, rename.

    If anything interrupts the write, the previous file at `path` is untouched and the temp file
    is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and not ending in .pt, so `last*.pt` globs (resume) never pick a partial file. Not
    # tempfile.mkstemp: its 0600 mode would survive the rename; open() honours the umask.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        failure = write_failure(e)
        if failure is None:
            raise
        raise UserError(_save_failed_message(obj, path, failure)) from None
    _fsync_dir(path.parent)
    return path


class _CountingSink:
    """A write-only file that only counts bytes: the size a checkpoint needs, without disk."""

    def __init__(self):
        self.size = 0

    def write(self, data):
        self.size += len(data)
        return len(data)

    def flush(self):
        pass


def _save_failed_message(obj, path, failure):
    sink = _CountingSink()
    try:
        torch.save(obj, sink)
        need = f"{sink.size / 1e6:.1f} MB"
    except Exception:  # the message matters more than the figure
        need = "the checkpoint's size"
    folder = printable(path.parent)
    kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
    if failure.errno == errno.EFBIG:
        where = f"writing it in {folder} exceeds this process's file size limit (ulimit -f)"
    elif failure.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f"{folder} needs {need} free, {free_space(path.parent)} are free"
    else:
        where = f"{folder}: {failure.strerror or failure}"
    return (f"cannot save {printable(path)}: {where}; {kept}. Free some space (or choose another --project) "
            "and run again (--resume continues from a saved last.pt)")


def remove_stale_temp_files(directory):
    """Delete temp files that save_checkpoint left in `directory` when its process was killed (kill -9,
    power loss) mid-write; call only when no other process is saving there. Returns their names."""
    removed = []
    for tmp in Path(directory).glob(".*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp.name)
    return removed


def _fsync_dir(directory):
    """Make the rename itself durable (POSIX); not possible/needed on Windows."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------- loading
def _refuse_unsupported_container(path):
    """Reject containers torch.load would not unpickle through our module."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise UserError(f"cannot read checkpoint {path}: damaged zip container ({e}); "
                            "the file is truncated or corrupt, use another copy") from None
        if any(n.endswith("constants.pkl") for n in names):
            # torch.load would hand this to torch.jit.load, which runs the archive's code.
            raise UserError(f"{path} is a TorchScript archive (an export), not a training "
                            "checkpoint; pass the .pt checkpoint it was exported from")
    elif tarfile.is_tarfile(path):
        raise UserError(f"{path} uses the pre-2018 PyTorch tar format, which is not supported; "
                        "re-save it with a current PyTorch")


def _forbidden_in(exc):
    """The ForbiddenGlobalError behind `exc`, if torch wrapped ours in another exception."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ForbiddenGlobalError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint (or plain state_dict) without executing code from it.

    Tensors are always mapped to CPU first; a `map_location` other than CPU/None then moves
    tensors and modules of the top-level object there. Raises UserError for a missing, truncated,
    corrupt or unsafe file.
    """
    if map_location is not None and not isinstance(map_location, (str, torch.device)):
        raise TypeError("load_checkpoint: map_location must be a device (str or torch.device)")
    target = torch.device("cpu" if map_location is None else map_location)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (check the path; it must be a .pt file)")
    _refuse_unsupported_container(path)
    kwargs = {"weights_only": False} if _TORCH_LOAD_HAS_WEIGHTS_ONLY else {}
    try:
        obj = torch.load(path, map_location="cpu", pickle_module=SAFE_PICKLE_MODULE, **kwargs)
    except _READ_ERRORS as e:
        forbidden = _forbidden_in(e)
        if forbidden is not None and forbidden.missing:
            raise UserError(
                f"cannot load {path}: it needs {forbidden.global_name} ({forbidden.reason}); it was "
                "probably written by another YOLOv5 version or fork with extra layer types") from None
        if forbidden is not None:
            raise UserError(
                f"refused to load {path}: it references {forbidden.global_name}, which is not on "
                "the allow-list of what a YOLOv5 checkpoint may contain; unpickling it could run "
                "code from the file. Do not load files from untrusted sources.") from None
        if "explicit pickle_module" in str(e):  # TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 in the env
            raise UserError(f"cannot load {path}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which "
                            "forbids our safe loader; unset it") from None
        raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}. The file is "
                        "truncated, corrupt or not a PyTorch checkpoint; use another copy") from None
    if target.type != "cpu":
        obj = _move(obj, target)
    return obj


def _move(obj, device):
    if isinstance(obj, (nn.Module, torch.Tensor)):
        return obj.to(device)
    if isinstance(obj, dict):
        out = obj.copy()
        out.update((k, _move(v, device)) for k, v in obj.items())
        return out
    return obj


def is_state_dict(obj):
    """True for a plain {name: tensor} mapping (as opposed to a checkpoint dict)."""
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


# ----------------------------------------------------------------------------------- models
def _infer_nc(state_dict):
    """Number of classes from the Detect layer: its conv outputs na * (nc + 5) channels."""
    for key, anchors in state_dict.items():
        if key.endswith(".anchors") and anchors.dim() == 3:
            weight = state_dict.get(key[: -len("anchors")] + "m.0.weight")
            if weight is not None:
                return weight.shape[0] // anchors.shape[1] - 5
    return None


def model_from_state_dict(state_dict, cfg, nc=None, source="state_dict"):
    """Build Model(cfg) and load `state_dict` into it (shapes must match exactly)."""
    if cfg is None:
        raise UserError(f"{source} holds only weights (a state_dict), not a model; "
                        "also give the model yaml (--cfg) it was trained with")
    from models.yolo import Model

    model = Model(cfg, nc=nc or _infer_nc(state_dict))
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in state_dict.items()})
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise UserError(f"weights in {source} do not fit model {cfg}: "
                        f"{first[1].strip() if len(first) > 1 else first[0]}. "
                        "Give the yaml the weights were trained with") from None
    return model


def upgrade_legacy_model(model):
    """Fix model objects pickled by older upstream releases / older PyTorch versions in place."""
    for m in model.modules():
        if "_non_persistent_buffers_set" not in vars(m):  # pickled by torch < 1.6
            m._non_persistent_buffers_set = set()
        if isinstance(m, nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None  # pickled by torch < 1.11
        if type(m).__name__ == "Detect" and hasattr(m, "nl"):
            if not hasattr(m, "inplace"):
                m.inplace = True
            if not isinstance(getattr(m, "anchor_grid", None), list):  # v5.0: it was a buffer
                if hasattr(m, "anchor_grid"):
                    delattr(m, "anchor_grid")
                m.anchor_grid = [torch.zeros(1)] * m.nl
            if not isinstance(getattr(m, "grid", None), list):
                m.grid = [torch.zeros(1)] * m.nl
    return model


def model_from_checkpoint(ckpt, cfg=None, prefer_ema=True, source="checkpoint"):
    """A float32 nn.Module from a loaded checkpoint.

    Takes ckpt['ema'] when present and `prefer_ema` (as upstream's inference loading does), else
    ckpt['model']. A bare model object or a plain state_dict is accepted too; a state_dict
    needs `cfg` (model yaml path or dict) to build the Model.
    """
    if isinstance(ckpt, nn.Module):
        obj = ckpt
    elif is_state_dict(ckpt):
        obj = ckpt
    elif isinstance(ckpt, dict) and ("model" in ckpt or "ema" in ckpt):
        obj = ckpt.get("ema") if prefer_ema and ckpt.get("ema") is not None else ckpt.get("model")
        if obj is None:
            raise UserError(f"{source} has neither 'model' nor 'ema' weights")
    else:
        raise UserError(f"{source} is not a YOLOv5 checkpoint: expected a dict with 'model' "
                        f"(got {type(ckpt).__name__})")
    if is_state_dict(obj):
        return model_from_state_dict(obj, cfg, source=source)
    if not isinstance(obj, nn.Module):
        raise UserError(f"{source}: 'model' is a {type(obj).__name__}, not a model")
    return upgrade_legacy_model(obj).float()


def strip_optimizer(path, out=None):
    """Reduce a training checkpoint to inference weights (upstream strip_optimizer, v6.1 keys).

    The EMA replaces the model when present; optimizer, best_fitness, wandb_id, ema and updates
    become None; epoch -1; fp16 weights with requires_grad off; keys that are neither upstream's nor
    the training image size are dropped. Written atomically to `out` (or in place). Returns the
    written file's size in MB.
    """
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{path} is not a training checkpoint (no 'model' key); nothing to strip")
    if ckpt.get("ema") is not None:
        ckpt["model"] = ckpt["ema"]
    ckpt = {k: v for k, v in ckpt.items() if k in KEPT_BY_STRIP}
    for key in ("optimizer", "best_fitness", "wandb_id", "ema", "updates"):
        ckpt[key] = None
    ckpt["epoch"] = -1
    model = ckpt["model"]
    if isinstance(model, nn.Module):
        model.half()
        for p in model.parameters():
            p.requires_grad = False
    target = save_checkpoint(ckpt, out or path)
    mb = os.path.getsize(target) / 1e6
    LOGGER.info(f"Optimizer stripped from {path},{f' saved as {out},' if out else ''} {mb:.1f}MB")
    return mb
