"""Compatibility re-exports for scripts written against upstream YOLOv5 v6.0 (`utils.general`).

Upstream kept many unrelated helpers in one module; ours live in modules with one job each.
This file only maps the v6.0 import paths that deployment and export scripts use onto them.
"""
from utils.boxes import (clip_coords, scale_coords, segment2box, segments2boxes, xywh2xyxy, xywhn2xyxy,  # noqa: F401
                         xyn2xy, xyxy2xywh, xyxy2xywhn)
from utils.cli import print_args, set_logging  # noqa: F401
from utils.data.loaders import labels_to_class_weights  # noqa: F401
from utils.image_size import check_img_size, make_divisible  # noqa: F401
from utils.io.model_files import find_file as check_file  # noqa: F401
from utils.evaluation.nms import non_max_suppression  # noqa: F401
from utils.io.checkpoint import strip_optimizer  # noqa: F401
from utils.io.run_dir import increment_path  # noqa: F401
from utils.training.optim import one_cycle  # noqa: F401
from utils.training.seeds import init_seeds  # noqa: F401
