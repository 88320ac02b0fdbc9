"""Validate a trained YOLOv5 model on a dataset split (MLU, CUDA or CPU).

    python val.py --data coco128.yaml --weights runs/train/exp/weights/best.pt --img 640 --device mlu

Options and defaults follow upstream v6.0 (prefixes of long options work, e.g. --iou 0.65);
`run` is importable as `val.run` for scripts written against upstream. --task speed and
--task study work as in v6.0, except that study writes its files into the run directory.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

YOLO_ROOT = Path(__file__).resolve().parent
if str(YOLO_ROOT) not in sys.path:
    sys.path.insert(0, str(YOLO_ROOT))

from utils.cli import LOGGER, print_args, set_logging  # noqa: E402
from utils.errors import UserError, exit_on_user_error  # noqa: E402
from utils.evaluation.validator import run  # noqa: E402,F401  (public: val.run)


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description="Validate a YOLOv5 model.")
    p.add_argument("--data", type=str, default="data/coco128.yaml", help="dataset.yaml path or name")
    p.add_argument("--weights", nargs="+", type=str, default="yolov5s.pt", help="model.pt path(s)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=None,
                   help="inference size (pixels); default: the size the weights were trained at, else 640")
    p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--task", default="val", help="train, val, test, speed or study")
    p.add_argument("--device", default="", help="'' (auto), cpu, 0 or 0,1 (CUDA), cuda:N, mlu, mlu:N")
    p.add_argument("--workers", type=int, default=8, help="maximum number of dataloader workers")
    p.add_argument("--single-cls", action="store_true", help="treat as single-class dataset")
    p.add_argument("--augment", action="store_true", help="augmented inference")
    p.add_argument("--verbose", action="store_true", help="report mAP by class")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-hybrid", action="store_true", help="save label+prediction hybrid results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-json", action="store_true", help="save a COCO-JSON results file")
    p.add_argument("--project", default=str(YOLO_ROOT / "runs" / "val"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference")
    opt = p.parse_args(argv)
    opt.save_json |= str(opt.data).endswith("coco.yaml")
    opt.save_txt |= opt.save_hybrid
    if opt.task not in ("train", "val", "test", "speed", "study"):
        raise UserError(f"--task {opt.task}: use train, val, test, speed or study")
    if opt.batch_size < 1:
        raise UserError(f"--batch-size {opt.batch_size}: must be at least 1")
    for flag, value in (("--conf-thres", opt.conf_thres), ("--iou-thres", opt.iou_thres)):
        if not 0 <= value <= 1:
            raise UserError(f"{flag} {value}: must be between 0 and 1")
    return opt


def _as_list(weights):
    return weights if isinstance(weights, list) else [weights]


STUDY_SIZES = tuple(range(256, 1536 + 128, 128))  # v6.0 --task study: 256, 384, ..., 1536


def study(opt, sizes=STUDY_SIZES):
    """v6.0 --task study: mAP and speed over image sizes, one txt file per weight, and study.png.

    Rows of study_<data>_<weights>.txt: P, R, mAP@.5, mAP@.5:.95, 3 val losses, 3 times (ms/img).
    Unlike v6.0 (which wrote them to the working directory and zipped them), the files go to the
    run directory project/name; returns {weights: rows}.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from utils.printable import printable
    from utils.io.run_dir import increment_path

    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, 1, figsize=(8, 5), tight_layout=True)
    results = {}
    for w in _as_list(opt.weights):
        out = save_dir / f"study_{Path(opt.data).stem}_{Path(w).stem}.txt"
        rows = []
        for size in sizes:
            LOGGER.info(f"\nRunning {printable(out.name)} --imgsz {size}...")
            r, _, t = run(opt.data, weights=w, batch_size=opt.batch_size, imgsz=size, conf_thres=opt.conf_thres,
                          iou_thres=opt.iou_thres, device=opt.device, workers=opt.workers, single_cls=opt.single_cls,
                          half=opt.half or None, plots=False, project=save_dir, name="study", exist_ok=True)
            rows.append(list(r) + list(t))
        rows = np.array(rows, dtype=np.float64).reshape(-1, 10)
        np.savetxt(out, rows, fmt="%10.4g")
        results[w] = rows
        ax.plot(rows[:, 8], rows[:, 3] * 100, ".-", label=printable(Path(w).stem))
        LOGGER.info(f"Study results saved to {printable(out)}")
    ax.set_xlabel("inference time (ms/img)")
    ax.set_ylabel("mAP@.5:.95 (%)")
    ax.legend(loc="lower right")
    fig.savefig(save_dir / "study.png", dpi=300)
    plt.close(fig)
    return results


def speed(opt):
    """v6.0 --task speed: each weight at conf 0.25, IoU 0.45, no plots or json; returns the results."""
    return [run(opt.data, weights=w, batch_size=opt.batch_size, imgsz=opt.imgsz, conf_thres=0.25, iou_thres=0.45,
                device=opt.device, workers=opt.workers, single_cls=opt.single_cls, save_json=False, plots=False,
                half=opt.half or None, project=opt.project, name=opt.name, exist_ok=opt.exist_ok)
            for w in _as_list(opt.weights)]


@exit_on_user_error
def main(argv=None):
    set_logging(int(os.environ.get("RANK", -1)))  # under torchrun: rank 0's messages, every rank's warnings
    opt = parse_opt(argv)
    print_args("val", opt)
    if opt.task in ("train", "val", "test"):
        return run(opt.data, weights=opt.weights, batch_size=opt.batch_size, imgsz=opt.imgsz,
                   conf_thres=opt.conf_thres, iou_thres=opt.iou_thres, task=opt.task, device=opt.device,
                   workers=opt.workers, single_cls=opt.single_cls, augment=opt.augment, verbose=opt.verbose,
                   save_txt=opt.save_txt, save_hybrid=opt.save_hybrid, save_conf=opt.save_conf,
                   save_json=opt.save_json, project=opt.project, name=opt.name, exist_ok=opt.exist_ok,
                   half=opt.half)
    if opt.task == "speed":
        return speed(opt)
    return study(opt)


if __name__ == "__main__":
    main()
