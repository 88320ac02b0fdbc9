"""Export a YOLOv5 checkpoint (ours or an official v6.0 one) to TorchScript and ONNX.

    python export.py --weights yolov5s.pt --include torchscript onnx --imgsz 640
    python export.py --weights best.pt --include onnx --dynamic --simplify

Writes <weights stem>.torchscript.pt and <weights stem>.onnx next to the weights. ONNX (input
`images`, output `output` of shape (batch, anchors, 5 + classes)) is what Cambricon MagicMind and
TensorRT take. Options follow upstream v6.0; the TensorFlow/CoreML formats are not offered here.
"""
import argparse
import sys
from pathlib import Path

YOLO_ROOT = Path(__file__).resolve().parent
if str(YOLO_ROOT) not in sys.path:
    sys.path.insert(0, str(YOLO_ROOT))

from utils.cli import print_args, set_logging  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402
from utils.inference.exporter import TF_ONLY_OPTIONS, run, warn_tf_only  # noqa: E402,F401  (public: export.run)


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description="Export a YOLOv5 model to TorchScript and ONNX.")
    p.add_argument("--weights", type=str, default=str(YOLO_ROOT / "yolov5s.pt"), help="weights path")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640, 640], help="image (h, w)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size")
    p.add_argument("--device", default="cpu", help="cpu, 0 (CUDA), mlu")
    p.add_argument("--half", action="store_true", help="FP16 half-precision export (GPU/MLU only)")
    p.add_argument("--inplace", action="store_true", help="set Detect() inplace=True")
    p.add_argument("--train", action="store_true", help="export in train mode (raw level outputs, no decoding)")
    p.add_argument("--optimize", action="store_true", help="TorchScript: optimize for mobile")
    p.add_argument("--dynamic", action="store_true", help="ONNX: dynamic batch size and image size")
    p.add_argument("--simplify", action="store_true", help="ONNX: simplify with onnxslim or onnxsim if installed")
    p.add_argument("--opset", type=int, default=13, help="ONNX: opset version")
    p.add_argument("--include", nargs="+", default=["torchscript", "onnx"], help="torchscript, onnx")
    # Accepted so v6.0 command lines keep working; they only concern the TensorFlow/CoreML exports.
    p.add_argument("--data", type=str, default=None, help=argparse.SUPPRESS)
    p.add_argument("--int8", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--topk-per-class", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--topk-all", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--iou-thres", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--conf-thres", type=float, default=None, help=argparse.SUPPRESS)
    opt = p.parse_args(argv)
    if len(opt.imgsz) not in (1, 2):
        p.error(f"--imgsz takes one value (square) or two (height width), got {len(opt.imgsz)}")
    warn_tf_only(vars(opt))
    for k in TF_ONLY_OPTIONS:  # run() would warn again
        delattr(opt, k)
    return opt


@exit_on_user_error
def main(argv=None):
    set_logging()
    opt = parse_opt(argv)
    print_args("export", opt)
    return run(**vars(opt))


if __name__ == "__main__":
    main()
