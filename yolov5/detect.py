"""Run a trained YOLOv5 model on images, videos, folders, globs, webcams and streams (MLU, CUDA or CPU).

    python detect.py --weights yolov5s.pt --source data/images --device mlu
    python detect.py --weights best.pt --source video.mp4 --save-txt --save-conf
    python detect.py --weights best.pt --source 0                 # webcam 0
    python detect.py --weights best.pt --source 'rtsp://host/stream'   # or a .txt list of streams

Options and defaults follow upstream v6.0; results go to runs/detect/exp{N}. `run` is importable as
`detect.run` for scripts written against upstream.
"""
import argparse
import sys
from pathlib import Path

YOLO_ROOT = Path(__file__).resolve().parent
if str(YOLO_ROOT) not in sys.path:
    sys.path.insert(0, str(YOLO_ROOT))

from utils.inference.detector import run  # noqa: E402,F401  (public: detect.run)
from utils.cli import print_args, set_logging  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description="Detect objects with a YOLOv5 model.")
    p.add_argument("--weights", nargs="+", type=str, default=str(YOLO_ROOT / "yolov5s.pt"),
                   help="model.pt path(s); several make an ensemble")
    p.add_argument("--source", type=str, default=str(YOLO_ROOT / "data/images"),
                   help="file, folder, glob, video, webcam index (0), stream URL or .txt list of streams")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=None,
                   help="inference size h,w (one value: square); default: the size the weights were trained "
                        "at, else 640")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    p.add_argument("--device", default="", help="'' (auto), cpu, 0 or 0,1 (CUDA), cuda:N, mlu, mlu:N")
    p.add_argument("--view-img", action="store_true", help="show results in a window")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--augment", action="store_true", help="augmented inference")
    p.add_argument("--visualize", action="store_true", help="save feature maps of every stage")
    p.add_argument("--update", action="store_true", help="strip the optimizer from the weights files")
    p.add_argument("--project", default=str(YOLO_ROOT / "runs" / "detect"), help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--line-thickness", default=None, type=int,
                   help="bounding box thickness (pixels); default: scales with the image, at least 2")
    p.add_argument("--hide-labels", default=False, action="store_true", help="hide labels")
    p.add_argument("--hide-conf", default=False, action="store_true", help="hide confidences")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (GPU/MLU only)")
    opt = p.parse_args(argv)
    if opt.imgsz is None:
        pass  # chosen once the weights are loaded
    elif len(opt.imgsz) == 1:
        opt.imgsz = opt.imgsz * 2
    elif len(opt.imgsz) != 2:
        p.error(f"--imgsz takes one value (square) or two (height width), got {len(opt.imgsz)}")
    if opt.max_det < 1:
        p.error(f"--max-det {opt.max_det}: must be at least 1 (detections kept per image)")
    if opt.line_thickness is not None and opt.line_thickness < 1:
        p.error(f"--line-thickness {opt.line_thickness}: must be at least 1 (pixels)")
    return opt


@exit_on_user_error
def main(argv=None):
    set_logging()
    opt = parse_opt(argv)
    print_args("detect", opt)
    return run(**vars(opt))


if __name__ == "__main__":
    main()
