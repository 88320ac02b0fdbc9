"""Export a YOLOv5 checkpoint to TorchScript and ONNX (the formats used for deployment here).

ONNX is what Cambricon MagicMind's ONNX parser and NVIDIA TensorRT take, so it is the deployment
route for MLU and GPU inference servers. Behaviour follows upstream v6.0 export.py:
the model is loaded fused, SiLU becomes an explicit x * sigmoid(x) module, Detect gets the
export flags, and two dry runs build the grids before tracing. In inference mode the exported
graph returns only the decoded predictions, as upstream does from v6.1 on (v6.0's ONNX also
carried the three raw level tensors as unnamed extra outputs): a 1-tuple, so `model(x)[0]` works
for TorchScript as before, and an ONNX model with one output named `output`.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from utils.cli import set_logging
from utils.errors import UserError
from utils.image_size import check_img_size
from utils.io.model_files import find_weights
from utils.printable import printable
from utils.upstream_call import upstream_positions

LOGGER = logging.getLogger("yolov5")
SUPPORTED_FORMATS = ("torchscript", "onnx")
UPSTREAM_ONLY_FORMATS = ("coreml", "saved_model", "pb", "tflite", "tfjs")


def check_formats(include):
    """Lower-cased --include list; formats we do not export are a UserError that says what to use."""
    formats = [str(x).lower() for x in include]
    for f in formats:
        if f in UPSTREAM_ONLY_FORMATS:
            raise UserError(f"--include {f}: not supported by this exporter (only torchscript and onnx). "
                            "Export ONNX (--include onnx): Cambricon MagicMind and TensorRT consume it; "
                            "for other runtimes convert the ONNX model with their own tools")
        if f not in SUPPORTED_FORMATS:
            raise UserError(f"--include {f}: unknown format; choose from {', '.join(SUPPORTED_FORMATS)}")
    if not formats:
        raise UserError("--include: name at least one format (torchscript, onnx)")
    return formats


def file_size_mb(path):
    return Path(path).stat().st_size / 1e6


class ExportSiLU(nn.Module):
    """SiLU written as x * sigmoid(x): two basic ops every exporter and runtime understands."""

    @staticmethod
    def forward(x):
        return x * torch.sigmoid(x)


class ExportWrapper(nn.Module):
    """What gets traced: inference mode returns (predictions,), train mode the raw level tensors."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        y = self.model(x)
        return tuple(y) if self.model.training else (y[0],)


def prepare_for_export(model, inplace=False, dynamic=False, train=False):
    """Swap nn.SiLU for ExportSiLU everywhere, set Detect's flags and the mode; returns the wrapper."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.SiLU):
                setattr(module, name, ExportSiLU())
        if type(module).__name__ == "Detect":
            module.inplace = inplace
            module.onnx_dynamic = dynamic  # instance attribute: rebuild grids from traced shapes
    model.train(train)
    return ExportWrapper(model).train(train)


def metadata(model, im):
    """stride and class names travel with the exported file (where the format has room for them)."""
    names = getattr(model, "names", None)
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names or [])
    return {"shape": list(im.shape), "stride": int(max(model.stride)), "names": names}


@contextlib.contextmanager
def quiet_tracing():
    """Hide tracer chatter that is expected here: shape checks frozen as constants, jit deprecation."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        yield


def export_torchscript(wrapper, im, file, meta, optimize=False, prefix="TorchScript:"):
    """torch.jit.trace -> <stem>.torchscript.pt with config.txt (shape, stride, names) embedded."""
    LOGGER.info(f"\n{prefix} starting export with torch {torch.__version__}...")
    f = Path(file).with_suffix(".torchscript.pt")
    with quiet_tracing():
        ts = torch.jit.trace(wrapper, im, strict=False)
    extra = {"config.txt": json.dumps(meta)}
    # serialised in memory and written by Python: TorchScript's own file writer takes only names that
    # are valid UTF-8 (Linux names are bytes; GBK or latin-1 folders are common)
    if optimize:
        from torch.utils.mobile_optimizer import optimize_for_mobile
        data = optimize_for_mobile(ts)._save_to_buffer_for_lite_interpreter(_extra_files=extra)
    else:
        buffer = io.BytesIO()
        torch.jit.save(ts, buffer, _extra_files=extra)
        data = buffer.getvalue()
    f.write_bytes(data)
    LOGGER.info(f"{prefix} export success, saved as {printable(f)} ({file_size_mb(f):.1f} MB)")
    return f


def simplify_onnx(model_onnx, prefix="ONNX:"):
    """onnxslim (preferred) or onnxsim when installed; otherwise warn and return the model unchanged."""
    try:
        import onnxslim
        LOGGER.info(f"{prefix} simplifying with onnxslim {getattr(onnxslim, '__version__', '')}...")
        return onnxslim.slim(model_onnx)
    except ImportError:
        pass
    try:
        import onnxsim
    except ImportError:
        LOGGER.warning(f"WARNING: {prefix} --simplify: neither onnxslim nor onnxsim is installed "
              "(pip install onnxslim); the ONNX model is saved unsimplified")
        return model_onnx
    LOGGER.info(f"{prefix} simplifying with onnxsim {getattr(onnxsim, '__version__', '')}...")
    simplified, ok = onnxsim.simplify(model_onnx)
    if not ok:
        LOGGER.warning(f"WARNING: {prefix} onnxsim could not validate the simplified model; keeping the original")
        return model_onnx
    return simplified


def export_onnx(wrapper, im, file, meta, *, opset=13, train=False, dynamic=False, simplify=False, prefix="ONNX:"):
    """torch.onnx.export (TorchScript-based exporter) -> <stem>.onnx, checked with onnx.checker."""
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install -r requirements-export.txt") from None
    LOGGER.info(f"\n{prefix} starting export with onnx {onnx.__version__} (opset {opset})...")
    f = Path(file).with_suffix(".onnx")
    n_out = wrapper.model.model[-1].nl if train else 1
    output_names = ["output"] + [f"output{i}" for i in range(1, n_out)]
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # torch >= 2.9 defaults to the dynamo exporter (needs onnxscript)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {"images": {0: "batch", 2: "height", 3: "width"}}
        dynamic_axes.update({name: {0: "batch", 1: "anchors"} for name in output_names} if not train else
                            {name: {0: "batch", 2: "y", 3: "x"} for name in output_names})
    with quiet_tracing():
        torch.onnx.export(wrapper, im, str(f), verbose=False, opset_version=opset,
                          training=torch.onnx.TrainingMode.TRAINING if train else torch.onnx.TrainingMode.EVAL,
                          do_constant_folding=not train, input_names=["images"], output_names=output_names,
                          dynamic_axes=dynamic_axes, **kwargs)
    model_onnx = onnx.load(str(f))
    onnx.checker.check_model(model_onnx)
    if simplify:
        model_onnx = simplify_onnx(model_onnx, prefix)
        onnx.checker.check_model(model_onnx)
    for key in ("stride", "names"):
        prop = model_onnx.metadata_props.add()
        prop.key, prop.value = key, str(meta[key])
    onnx.save(model_onnx, str(f))
    LOGGER.info(f"{prefix} export success, saved as {printable(f)} ({file_size_mb(f):.1f} MB)")
    return f


# export.run's parameters in v6.0's positional order. data, int8 and the topk/threshold options
# only concern the TensorFlow/CoreML exports, which are not offered here: accepted and ignored.
UPSTREAM_ORDER = ("data", "weights", "imgsz", "batch_size", "device", "include", "half", "inplace", "train",
                  "optimize", "int8", "dynamic", "simplify", "opset", "topk_per_class", "topk_all", "iou_thres",
                  "conf_thres")
TF_ONLY_OPTIONS = ("data", "int8", "topk_per_class", "topk_all", "iou_thres", "conf_thres")


def warn_tf_only(options):
    """Warn about the TensorFlow/CoreML-only options given (not None or False) in dict `options`."""
    ignored = [k for k in TF_ONLY_OPTIONS if options.get(k) not in (None, False)]
    if ignored:
        LOGGER.warning(f"WARNING: {', '.join('--' + k.replace('_', '-') for k in ignored)} only apply to "
                       "TensorFlow/CoreML exports, which are not offered here; ignored")


@torch.no_grad()
@upstream_positions(*UPSTREAM_ORDER)
def run(*, weights="yolov5s.pt", imgsz=(640, 640), batch_size=1, device="cpu", include=("torchscript", "onnx"),
        half=False, inplace=False, train=False, optimize=False, dynamic=False, simplify=False, opset=13,
        data=None, int8=False, topk_per_class=None, topk_all=None, iou_thres=None, conf_thres=None):
    """Export `weights` to the formats in `include`; returns the list of written files."""
    t = time.time()
    if not LOGGER.hasHandlers():  # unless the caller configured logging, show what export.py shows
        set_logging()
    warn_tf_only(dict(data=data, int8=int8, topk_per_class=topk_per_class, topk_all=topk_all,
                      iou_thres=iou_thres, conf_thres=conf_thres))
    formats = check_formats(include)
    file = Path(find_weights(weights))
    dev = check_export_options(batch_size, device, half=half, optimize=optimize, dynamic=dynamic)
    wrapper, im, meta = load_for_export(file, dev, imgsz, batch_size=batch_size, half=half, inplace=inplace,
                                        dynamic=dynamic, train=train)
    outputs = []
    if "torchscript" in formats:
        outputs.append(export_torchscript(wrapper, im, file, meta, optimize=optimize))
    if "onnx" in formats:
        outputs.append(export_onnx(wrapper, im, file, meta, opset=opset, train=train, dynamic=dynamic,
                                   simplify=simplify))
    LOGGER.info(f"\nExport complete ({time.time() - t:.2f}s)\nResults saved to {printable(file.parent.resolve())}")
    if "onnx" in formats:
        LOGGER.info("ONNX models deploy with Cambricon MagicMind (its ONNX parser) and NVIDIA TensorRT")
    return outputs


def check_export_options(batch_size, device, *, half, optimize, dynamic):
    """The selected device, once the option combinations that cannot export are refused (UserError)."""
    from utils.device.devices import select_device

    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    dev = select_device(device)
    if half and dev.kind == "cpu":
        raise UserError("--half exports FP16 and needs a GPU or MLU: add --device 0 (or mlu)")
    if optimize and dev.kind != "cpu":
        raise UserError("--optimize (TorchScript for mobile) runs on CPU: use --device cpu")
    if half and dynamic:
        raise UserError("--half and --dynamic cannot be combined (ONNX FP16 dynamic shapes are not supported)")
    return dev


def load_for_export(file, dev, imgsz, *, batch_size, half, inplace, dynamic, train):
    """The fused model prepared for tracing, a zero input of the export shape and the metadata;
    two dry runs build the grids and catch shape errors before tracing."""
    from models.experimental import attempt_load

    model = attempt_load(str(file), map_location=dev.torch_device, inplace=True, fuse=True)
    imgsz = list(imgsz) * 2 if len(imgsz) == 1 else list(imgsz)
    gs = int(max(model.stride))
    imgsz = [check_img_size(int(x), gs) for x in imgsz]
    im = torch.zeros(batch_size, 3, *imgsz, device=dev.torch_device)
    if half:
        im, model = im.half(), model.half()
    wrapper = prepare_for_export(model, inplace=inplace, dynamic=dynamic, train=train)
    for _ in range(2):
        y = wrapper(im)
    meta = metadata(model, im)
    shape = tuple(y[0].shape)
    LOGGER.info(f"\nPyTorch: starting from {printable(file)} ({file_size_mb(file):.1f} MB), output shape {shape}")
    return wrapper, im, meta
