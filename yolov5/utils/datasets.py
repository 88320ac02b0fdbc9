"""Upstream v6.0 import path `utils.datasets`: re-exports only, nothing is defined here.

Scripts written for YOLOv5 import the dataset, the loaders and the inference sources from here.
Project code imports them from where they live: utils/data/detection_dataset.py (LoadImagesAndLabels),
utils/data/loaders.py, utils/inference/inference_sources.py and utils/inference/stream_sources.py.
"""
from utils.data import detection_dataset as _dataset
from utils.data.detection_dataset import LoadImagesAndLabels, img2label_paths, rect_batch_shapes  # noqa: F401
from utils.data.image_files import IMG_FORMATS, VID_FORMATS  # noqa: F401
from utils.inference.inference_sources import LoadImages  # noqa: F401
from utils.data.loaders import InfiniteDataLoader, create_dataloader, seed_worker  # noqa: F401
from utils.inference.stream_sources import LoadStreams  # noqa: F401
from utils.upstream_call import forward_other_names

__getattr__ = forward_other_names(__name__, _dataset)
