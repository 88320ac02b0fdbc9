"""Scripts written for YOLOv5 v6.0 import these names by their upstream paths."""
import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
YOLOV5 = REPO / "yolov5"

PUBLIC = {
    "models.yolo": ["Model", "Detect"],
    "models.common": ["Conv", "Bottleneck", "C3", "SPPF", "Concat", "Focus", "SPP"],
    "models.experimental": ["attempt_load", "Ensemble"],
    "utils.general": ["non_max_suppression", "scale_coords", "xywh2xyxy", "xyxy2xywh", "check_img_size",
                      "increment_path", "check_file", "set_logging", "print_args", "clip_coords", "xywhn2xyxy",
                      "xyn2xy", "segments2boxes", "init_seeds", "make_divisible", "one_cycle",
                      "labels_to_class_weights", "strip_optimizer"],
    "utils.augmentations": ["letterbox", "random_perspective", "augment_hsv", "Albumentations", "mixup",
                            "box_candidates", "hist_equalize", "cutout"],
    "utils.datasets": ["create_dataloader", "LoadImages", "LoadStreams", "LoadImagesAndLabels", "InfiniteDataLoader",
                       "img2label_paths", "seed_worker", "IMG_FORMATS", "VID_FORMATS"],
    "utils.torch_utils": ["select_device", "ModelEMA", "de_parallel", "is_parallel", "EarlyStopping",
                          "fuse_conv_and_bn"],
    "utils.metrics": ["ap_per_class", "box_iou", "fitness", "ConfusionMatrix", "compute_ap"],
    "utils.loss": ["ComputeLoss", "smooth_BCE", "FocalLoss"],
    "utils.callbacks": ["Callbacks"],
    "utils.autoanchor": ["check_anchors", "kmean_anchors", "check_anchor_order"],
    "utils.autobatch": ["autobatch"],
    "utils.plots": ["plot_images", "output_to_target", "plot_labels"],
    "val": ["run"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_upstream_import_paths(module):
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lacks {missing}"


def test_general_reexports_are_the_real_functions():
    from utils import boxes, general
    from utils.evaluation import nms
    assert general.scale_coords is boxes.scale_coords
    assert general.non_max_suppression is nms.non_max_suppression


def test_datasets_reexports_are_the_real_objects():
    from utils import datasets
    from utils.data import detection_dataset, loaders
    from utils.inference import inference_sources, stream_sources
    assert datasets.LoadImagesAndLabels is detection_dataset.LoadImagesAndLabels
    assert datasets.create_dataloader is loaders.create_dataloader
    assert datasets.LoadImages is inference_sources.LoadImages
    assert datasets.LoadStreams is stream_sources.LoadStreams
    assert datasets.stack_shared is detection_dataset.stack_shared  # helpers stay reachable through the shim
    with pytest.raises(AttributeError, match="utils.datasets.*no_such_name"):
        datasets.no_such_name


def test_moved_modules_are_reexported_whole():
    """A v6.0 path whose code moved into a stage package gives the very same objects, helpers included."""
    from utils import augmentations, loss, metrics
    from utils.data import augmentations as real_augmentations
    from utils.evaluation import metrics as real_metrics
    from utils.training import loss as real_loss
    assert augmentations.letterbox is real_augmentations.letterbox
    assert metrics.ConfusionMatrix is real_metrics.ConfusionMatrix
    assert loss.ComputeLoss is real_loss.ComputeLoss
    assert loss.LOSS_HYP_KEYS is real_loss.LOSS_HYP_KEYS
    assert metrics.smooth is real_metrics.smooth
    with pytest.raises(AttributeError, match="'utils.loss' has no attribute 'nope'"):
        loss.nope


# v6.0 import paths kept only for users' scripts; the project imports from where the code lives.
SHIMS = ("utils.general", "utils.torch_utils", "utils.datasets", "utils.augmentations", "utils.metrics",
         "utils.loss", "utils.callbacks", "utils.autoanchor", "utils.autobatch")


def test_shims_are_thin():
    """Re-exports only: imports, the docstring and the forwarding __getattr__ (torch_utils keeps
    select_device's v6.0 return type, a plain torch.device)."""
    for name in SHIMS:
        path = YOLOV5 / (name.replace(".", "/") + ".py")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue
            if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__getattr__"]:
                continue
            if name == "utils.torch_utils" and getattr(node, "name", "") == "select_device":
                continue
            raise AssertionError(f"{path.name}:{node.lineno} defines code; a v6.0 path only re-exports")


def test_project_code_does_not_import_through_shims():
    offenders = []
    for path in sorted(YOLOV5.rglob("*.py")) + sorted((REPO / "utils_mlu").glob("*.py")):
        module = ".".join(path.relative_to(YOLOV5).with_suffix("").parts) if YOLOV5 in path.parents else ""
        if module in SHIMS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n in SHIMS]
    assert not offenders, "import from where the code lives, not through a v6.0 path:\n" + "\n".join(offenders)


def test_check_img_size_rounds_up_with_warning(capsys):
    from utils.cli import set_logging
    from utils.general import check_img_size
    set_logging()  # the warning goes through the yolov5 logger; its handler prints on stdout
    assert check_img_size(641, 32) == 672
    assert "must be multiple of max stride 32" in capsys.readouterr().out
    assert check_img_size(640, 32) == 640
    assert check_img_size([100, 200], 64) == [128, 256]
