"""Compatibility front for scripts written against upstream YOLOv5 v6.0 (`utils.torch_utils`).

Our own code uses `utils.device.devices.select_device`, which returns a `Device` with every
device-specific decision. This module keeps the upstream signature, which returns a plain
`torch.device`, for deployment and export scripts that import it by its v6.0 path.
"""
import torch

from models.common import fuse_conv_and_bn  # noqa: F401
from utils.device import devices
from utils.training.early_stop import EarlyStopping  # noqa: F401
from utils.training.ema import ModelEMA  # noqa: F401  (upstream path utils.torch_utils.ModelEMA)
from utils.device.parallel import de_parallel, is_parallel  # noqa: F401


def select_device(device="", batch_size=None, newline=True) -> torch.device:
    """Upstream v6.0 `select_device`: parse `--device`, log the banner, return a torch.device."""
    return devices.select_device(device, batch_size=batch_size, newline=newline).torch_device
