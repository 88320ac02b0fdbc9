"""Before training in mixed precision: does the model compute the same thing under autocast?

Some device/driver stacks give wrong fp16 results for some layers; training on them would run
without an error and end with a useless model. One forward pass in fp32 and one under autocast
on a fixed input are compared; if boxes or scores disagree beyond a tolerance, training goes on
in fp32 with one warning.
"""
import logging

import torch

from utils.device.parallel import de_parallel

LOGGER = logging.getLogger("yolov5")
BOX_ATOL = 1.0  # pixels, on a CHECK_SIZE input
SCORE_ATOL = 0.05  # objectness and class probabilities
CHECK_SIZE = 64


def amp_outputs_agree(model, device, size=CHECK_SIZE):
    """fp32 vs autocast outputs of `model` on a fixed input: (agree, worst box diff, worst score diff)."""
    bare = de_parallel(model)
    was_training = bare.training
    im = torch.linspace(0, 1, 3 * size * size).reshape(1, 3, size, size)
    im = device.move(im)
    bare.eval()
    try:
        with torch.no_grad():
            ref = bare(im)[0].float()
            with device.autocast(enabled=True):
                amp = bare(im)[0].float()
    finally:
        bare.train(was_training)
    box = (ref[..., :4] - amp[..., :4]).abs().max().item()
    score = (ref[..., 4:] - amp[..., 4:]).abs().max().item()
    agree = bool(box <= BOX_ATOL and score <= SCORE_ATOL)  # NaN compares False: disagreement
    return agree, box, score


def check_amp(model, device):
    """True if mixed precision may be used; otherwise one warning and False (train in fp32)."""
    agree, box, score = amp_outputs_agree(model, device)
    if not agree:
        LOGGER.warning(f"WARNING: mixed precision check failed on {device.kind.upper()}:{device.index} "
                       f"({device.name}): autocast outputs differ from fp32 by up to {box:.3g} px (boxes) and "
                       f"{score:.3g} (scores); training in fp32 instead")
    return agree
