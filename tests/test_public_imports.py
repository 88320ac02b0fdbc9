"""Scripts written for YOLOv5 v6.0 import these names by their upstream paths."""
import importlib

import pytest

PUBLIC = {
    "models.yolo": ["Model", "Detect"],
    "models.common": ["Conv", "Bottleneck", "C3", "SPPF", "Concat", "Focus", "SPP"],
    "models.experimental": ["attempt_load", "Ensemble"],
    "utils.general": ["non_max_suppression", "scale_coords", "xywh2xyxy", "xyxy2xywh", "check_img_size",
                      "increment_path", "check_file", "set_logging", "print_args"],
    "utils.augmentations": ["letterbox"],
    "utils.datasets": ["create_dataloader", "LoadImages", "LoadStreams", "LoadImagesAndLabels", "InfiniteDataLoader",
                       "img2label_paths", "seed_worker"],
    "utils.torch_utils": ["select_device", "ModelEMA", "de_parallel"],
    "utils.metrics": ["ap_per_class", "box_iou", "fitness", "ConfusionMatrix"],
    "utils.loss": ["ComputeLoss"],
    "val": ["run"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_upstream_import_paths(module):
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lacks {missing}"


def test_general_reexports_are_the_real_functions():
    from utils import boxes, general, nms
    assert general.scale_coords is boxes.scale_coords
    assert general.non_max_suppression is nms.non_max_suppression


def test_datasets_reexports_are_the_real_objects():
    from utils import datasets, detection_dataset, inference_sources, loaders, stream_sources
    assert datasets.LoadImagesAndLabels is detection_dataset.LoadImagesAndLabels
    assert datasets.create_dataloader is loaders.create_dataloader
    assert datasets.LoadImages is inference_sources.LoadImages
    assert datasets.LoadStreams is stream_sources.LoadStreams
    assert datasets.stack_shared is detection_dataset.stack_shared  # helpers stay reachable through the shim
    with pytest.raises(AttributeError, match="utils.datasets.*no_such_name"):
        datasets.no_such_name


def test_check_img_size_rounds_up_with_warning(capsys):
    from utils.cli import set_logging
    from utils.general import check_img_size
    set_logging()  # the warning goes through the yolov5 logger; its handler prints on stdout
    assert check_img_size(641, 32) == 672
    assert "must be multiple of max stride 32" in capsys.readouterr().out
    assert check_img_size(640, 32) == 640
    assert check_img_size([100, 200], 64) == [128, 256]
