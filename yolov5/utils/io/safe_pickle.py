"""A restricted unpickler for YOLOv5 checkpoints: only allow-listed globals may load.

A `.pt` checkpoint is a pickle, and a pickle can name any importable function (`os.system`,
`builtins.exec`, ...) and have it called while loading. Upstream YOLOv5 checkpoints pickle whole
model objects, so `torch.load(weights_only=True)` refuses them. Instead we hand `torch.load` our
own `pickle_module` (SAFE_PICKLE_MODULE) whose Unpickler resolves a global only when it is on an
explicit allow-list: the model classes of this project under their upstream paths, the torch.nn
layers YOLOv5 uses, torch's tensor-rebuild helpers, storages, dtypes and a few plain Python and
numpy reconstructors. Anything else raises ForbiddenGlobalError before it can be called.
"""
import _compat_pickle
import importlib
import pickle
import types

import torch.nn as nn

# Packages of this project whose nn.Module subclasses may appear in a checkpoint. They are the
# upstream module paths, which are ours too because yolov5/ is the import root.
MODEL_MODULES = ("models.yolo", "models.common", "models.experimental")

# Names later upstream releases use for classes we define under another name.
MODEL_ALIASES = {("models.yolo", "DetectionModel"): ("models.yolo", "Model")}

# torch.nn layers used by YOLOv5 models (v6.0 yamls, hub variants, older releases).
_TORCH_NN = {
    "torch.nn.modules.container": ("Sequential", "ModuleList", "ModuleDict"),
    "torch.nn.modules.conv": ("Conv2d", "ConvTranspose2d"),
    "torch.nn.modules.batchnorm": ("BatchNorm2d", "SyncBatchNorm"),
    "torch.nn.modules.activation": (
        "SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Sigmoid", "Tanh", "Softmax",
        "MultiheadAttention",
    ),
    "torch.nn.modules.pooling": ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"),
    "torch.nn.modules.upsampling": ("Upsample",),
    "torch.nn.modules.linear": ("Linear", "Identity", "NonDynamicallyQuantizableLinear"),
    "torch.nn.modules.dropout": ("Dropout",),
    "torch.nn.modules.flatten": ("Flatten",),
    "torch.nn.parameter": ("Parameter",),
}

_TORCH_DTYPES = (
    "float16", "float32", "float64", "bfloat16", "half", "float", "double",
    "uint8", "int8", "int16", "int32", "int64", "long", "int", "bool",
)
_TORCH_STORAGES = (
    "HalfStorage", "FloatStorage", "DoubleStorage", "BFloat16Storage", "ByteStorage",
    "CharStorage", "ShortStorage", "IntStorage", "LongStorage", "BoolStorage", "UntypedStorage",
)

_NUMPY_RECONSTRUCT = ("_reconstruct", "scalar")  # in numpy.core.multiarray / numpy._core.multiarray

_PLAIN = {
    "torch._utils": (
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
        "_rebuild_parameter", "_rebuild_parameter_with_state",
    ),
    "torch._tensor": ("_rebuild_from_type_v2",),
    "torch": ("Size", "Tensor", "device") + _TORCH_DTYPES + _TORCH_STORAGES,
    "torch.storage": ("UntypedStorage", "TypedStorage"),
    "collections": ("OrderedDict",),
    "builtins": ("set", "frozenset", "slice", "bytes", "bytearray", "complex"),
    "copyreg": ("_reconstructor",),  # protocol 0/1 objects; only combines other allowed globals
    "_codecs": ("encode",),  # protocol 2 writes bytes as _codecs.encode(str, 'latin1')
    "numpy": ("ndarray", "dtype"),
    "numpy.core.multiarray": _NUMPY_RECONSTRUCT,
    "numpy._core.multiarray": _NUMPY_RECONSTRUCT,
    "pathlib": ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"),
}

ALLOWED = {(mod, name) for mod, names in {**_TORCH_NN, **_PLAIN}.items() for name in names}


def _python3_name(module, name):
    """Protocols < 3 write Python 2 names (`__builtin__.set`, `commands.Popen`); the stock
    unpickler renames them, so we must too, before checking, to judge what would really load."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class ForbiddenGlobalError(pickle.UnpicklingError):
    """The pickle names a global that is not on the allow-list (possibly malicious)."""

    def __init__(self, module, name, reason="not on the allow-list", missing=False):
        self.global_name = f"{module}.{name}"
        self.reason = reason
        self.missing = missing  # a model class we lack (other version/fork), not a code call
        super().__init__(f"refused global {self.global_name} ({reason})")


def _import_attr(module, name):
    if module.startswith("numpy.core") or module.startswith("numpy._core"):
        # numpy >= 2 moved numpy.core to numpy._core (the old path warns); either file may come.
        tail = module.split(".", 2)[2]
        for prefix in ("numpy._core.", "numpy.core."):
            try:
                return getattr(importlib.import_module(prefix + tail), name)
            except (ImportError, AttributeError):
                continue
        raise ForbiddenGlobalError(module, name, "not available in this numpy", True)
    return getattr(importlib.import_module(module), name)


def resolve_global(module, name):
    """Return the object a pickle GLOBAL refers to, or raise ForbiddenGlobalError."""
    module, name = _python3_name(module, name)
    if (module, name) in ALLOWED:
        return _import_attr(module, name)
    if module in MODEL_MODULES and name.isidentifier() and not name.startswith("_"):
        module, name = MODEL_ALIASES.get((module, name), (module, name))
        try:
            obj = getattr(importlib.import_module(module), name, None)
        except ImportError as e:
            raise ForbiddenGlobalError(module, name, f"cannot import {module}: {e}", True) from None
        if obj is None:
            raise ForbiddenGlobalError(module, name, "this project does not define that class", True)
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            return obj
        raise ForbiddenGlobalError(module, name, "not a model layer class")
    raise ForbiddenGlobalError(module, name)


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves globals through the allow-list only."""

    def find_class(self, module, name):
        return resolve_global(module, name)


def load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


def loads(data, **kwargs):
    import io

    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


# torch.load(pickle_module=...) uses .Unpickler (subclassed to add persistent_load and storage
# lookups, whose find_class defers to ours), .load (legacy-format headers) and .__name__.
SAFE_PICKLE_MODULE = types.ModuleType("yolov5_safe_pickle", "Allow-list unpickler for torch.load")
SAFE_PICKLE_MODULE.Unpickler = RestrictedUnpickler
SAFE_PICKLE_MODULE.load = load
SAFE_PICKLE_MODULE.loads = loads
SAFE_PICKLE_MODULE.UnpicklingError = pickle.UnpicklingError
# torch.save is never called with this module, but keep the module complete for dump calls.
SAFE_PICKLE_MODULE.Pickler = pickle.Pickler
SAFE_PICKLE_MODULE.dump = pickle.dump
SAFE_PICKLE_MODULE.dumps = pickle.dumps
