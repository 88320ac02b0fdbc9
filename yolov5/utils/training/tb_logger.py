"""TensorBoard logging of the per-epoch results, attached to the training callbacks.

As upstream v6.0: the 13 scalars of each results.csv row go to TensorBoard
under the same tags (train/box_loss, metrics/mAP_0.5, x/lr0, ...) with step = epoch, and the
event file lives in the run directory. TensorBoard is optional: without it, training goes on and
says so once; results.csv holds the same numbers.
"""
import logging
from pathlib import Path

from utils.printable import is_printable, printable
from utils.training.results_log import RESULTS_KEYS

LOGGER = logging.getLogger("yolov5")


def _summary_writer_class():
    """torch's SummaryWriter, or None when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard imports the tensorboard package
        return None
    return SummaryWriter


class TensorBoardLogger:
    """Writes each epoch's results to TensorBoard in `save_dir` (lazily, at the first epoch end)."""

    def __init__(self, save_dir, writer_class):
        self.save_dir = str(save_dir)
        self.writer_class = writer_class
        self.writer = None

    def on_fit_epoch_end(self, values, epoch, best_fitness=None, fi=None):
        if self.writer is None:
            self.writer = self.writer_class(self.save_dir)
        for tag, value in zip(RESULTS_KEYS, values):
            self.writer.add_scalar(tag, float(value), epoch)
        self.writer.flush()

    def on_train_end(self, *args, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def attach_tensorboard(callbacks, save_dir, prefix="TensorBoard: "):
    """Register a TensorBoardLogger on `callbacks`; returns it, or None (one warning) without tensorboard."""
    if not is_printable(save_dir):  # TensorBoard encodes its file names as UTF-8 and would crash
        LOGGER.warning(f"{prefix}the run folder {printable(save_dir)} has a name that is not valid UTF-8, which "
                       "TensorBoard cannot write to, so no event files are written; the same numbers are in "
                       "results.csv (use --project/--name with a UTF-8 name for TensorBoard)")
        return None
    writer_class = _summary_writer_class()
    if writer_class is None:
        LOGGER.warning(f"{prefix}not installed, so no event files are written (pip install tensorboard); "
                       "the same numbers are in results.csv")
        return None
    logger = TensorBoardLogger(save_dir, writer_class)
    callbacks.register_action("on_fit_epoch_end", "tensorboard", logger.on_fit_epoch_end)
    callbacks.register_action("on_train_end", "tensorboard", logger.on_train_end)
    LOGGER.info(f"{prefix}Start with 'tensorboard --logdir {Path(save_dir).parent}', view at http://localhost:6006/")
    return logger
