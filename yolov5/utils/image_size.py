"""Image sizes the network accepts: multiples of its largest stride."""
import logging
import math

from utils.errors import UserError

LOGGER = logging.getLogger("yolov5")


def make_divisible(x, divisor):
    """Smallest multiple of `divisor` that is >= x."""
    return math.ceil(x / divisor) * divisor


def check_img_size(imgsz, s=32, floor=0):
    """Round an image size (int or list of ints) up to a multiple of stride s, warning when it changes."""
    if isinstance(imgsz, int):
        if imgsz <= 0:
            raise UserError(f"--imgsz {imgsz}: image size must be positive")
        new_size = max(make_divisible(imgsz, int(s)), floor)
    else:
        if any(int(x) <= 0 for x in imgsz):
            raise UserError(f"--imgsz {imgsz}: image sizes must be positive")
        new_size = [max(make_divisible(int(x), int(s)), floor) for x in imgsz]
    if new_size != imgsz:
        LOGGER.warning(f"WARNING: --img-size {imgsz} must be multiple of max stride {s}, updating to {new_size}")
    return new_size
