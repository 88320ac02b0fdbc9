"""What the command-line scripts (train, val, detect, export) share: console logging and the
one-line summary of their options that v6.0 prints first (`train: weights=..., cfg=...`)."""
import logging
import sys

from utils.printable import printable

LOGGER = logging.getLogger("yolov5")


class _CurrentStdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time (tests and notebooks replace it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


class _PrintableFormatter(logging.Formatter):
    """Plain messages; undecodable file-name bytes shown as U+FFFD (they cannot be encoded)."""

    def format(self, record):
        return printable(super().format(record))


def set_logging(rank=-1):
    """Plain messages of the "yolov5" logger on stdout: all on the main process, warnings only on
    the other ranks. Every module of ours logs through that one logger."""
    if not LOGGER.handlers:
        handler = _CurrentStdoutHandler()
        handler.setFormatter(_PrintableFormatter("%(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False
    LOGGER.setLevel(logging.INFO if rank in (-1, 0) else logging.WARNING)


def print_args(name, options):
    """`name: key=value, key=value` for an argparse namespace or a dict."""
    items = options.items() if isinstance(options, dict) else vars(options).items()
    LOGGER.info(f"{name}: " + ", ".join(f"{k}={v}" for k, v in items))
