"""--batch-size -1: the largest training batch that fits a fraction of the device's memory.

Peak memory of one forward and backward pass is measured at a few trial batch sizes on the
device, a straight line is fitted to (batch, bytes), and the batch where the line reaches
`fraction` of the device's total memory is taken. Needs the device layer's memory figures
(CUDA and MLU); on CPU there is nothing to measure, so the v6.0 default of 16 is used.
"""
import logging

import numpy as np
import torch

from utils.device.parallel import de_parallel

LOGGER = logging.getLogger("yolov5")
TRIAL_BATCHES = (1, 2, 4, 8)
DEFAULT_BATCH = 16
FRACTION = 0.9


def measure_peaks(model, device, imgsz, batches=TRIAL_BATCHES):
    """Peak bytes of a training forward + backward at each trial batch size (on a copy of the model,
    so BatchNorm statistics and gradients of the real one are untouched)."""
    import copy
    bare = copy.deepcopy(de_parallel(model)).train()
    peaks = []
    for b in batches:
        bare.zero_grad(set_to_none=True)
        device.reset_peak_memory()
        im = device.move(torch.zeros(b, 3, imgsz, imgsz))
        out = bare(im)
        sum(x.float().sum() for x in out).backward()
        del im, out
        peaks.append(device.peak_memory())
    del bare
    return peaks


def autobatch(model, device, imgsz, fraction=FRACTION, batches=TRIAL_BATCHES):
    """The batch size for --batch-size -1 (logged with how it was found)."""
    total = device.props[0].total_memory if device.props else 0
    if not device.is_accelerator or not total:
        why = "it needs an accelerator (CUDA or MLU)" if not device.is_accelerator else \
            f"{device.kind.upper()}:{device.index} does not report its total memory"
        LOGGER.warning(f"WARNING: --batch-size -1 (AutoBatch): {why}; using batch size {DEFAULT_BATCH}")
        return DEFAULT_BATCH
    peaks = measure_peaks(model, device, imgsz, batches)
    slope, intercept = np.polyfit(batches, peaks, 1)
    b = int((fraction * total - intercept) / slope) if slope > 0 else DEFAULT_BATCH
    if b < 1:
        raise_msg = (f"--batch-size -1 (AutoBatch): even batch size 1 needs more than {fraction:.0%} of "
                     f"{total / 2**30:.3g} GiB on {device.kind.upper()}:{device.index}; lower --img")
        from utils.errors import UserError
        raise UserError(raise_msg)
    LOGGER.info(f"AutoBatch: batch size {b} uses about {(intercept + slope * b) / 2**30:.3g} GiB of "
                f"{total / 2**30:.3g} GiB ({fraction:.0%} target) at image size {imgsz}, from peaks at batch "
                f"sizes {list(batches)}")
    return b
