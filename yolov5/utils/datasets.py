"""Upstream v6.0 import path `utils.datasets`: re-exports only, nothing is defined here.

Scripts written for YOLOv5 import the dataset, the loaders and the inference sources from here.
Project code imports them from where they live: utils/detection_dataset.py (LoadImagesAndLabels),
utils/loaders.py, utils/inference_sources.py and utils/stream_sources.py.
"""
from utils import detection_dataset as _dataset
from utils.detection_dataset import LoadImagesAndLabels, img2label_paths, rect_batch_shapes  # noqa: F401
from utils.inference_sources import LoadImages  # noqa: F401
from utils.loaders import InfiniteDataLoader, create_dataloader, seed_worker  # noqa: F401
from utils.stream_sources import LoadStreams  # noqa: F401
from utils.upstream_call import forward_other_names

__getattr__ = forward_other_names(__name__, _dataset)
