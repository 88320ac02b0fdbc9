"""results.csv, the per-epoch training log, in upstream v6.0's exact format, and its plot.

Format (upstream v6.0 train.py): 14 comma-separated columns, every field right-aligned in 20
characters; the header once when the file is created, then one row per epoch with each value
written as "%20.5g" (so epoch 3 is "                   3" and 0.012345678 is "            0.012346").
Tools that parse upstream's results.csv (pandas with stripped column names) read ours unchanged.

results.png: a 2 x 5 grid of the losses, precision, recall and mAPs against epoch, drawn with
matplotlib's object API on an Agg canvas (no display, no global backend switch).
"""
import os
import tempfile
from pathlib import Path

import numpy as np

from utils.io.disk_writes import append_text
from utils.errors import UserError

RESULTS_KEYS = (
    "train/box_loss", "train/obj_loss", "train/cls_loss",  # epoch means of the training loss items
    "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
    "val/box_loss", "val/obj_loss", "val/cls_loss",  # means over validation batches
    "x/lr0", "x/lr1", "x/lr2",  # LR of groups 0 (norm weights), 1 (weights), 2 (biases), last batch
)
COLUMNS = ("epoch",) + RESULTS_KEYS
# Panels of results.png, in upstream's order: train losses, P, R, val losses, mAP@0.5, mAP@0.5:0.95.
PLOT_COLUMNS = ("train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
                "val/box_loss", "val/obj_loss", "val/cls_loss", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95")


def format_header():
    return ",".join("%20s" % c for c in COLUMNS) + "\n"


def format_row(epoch, values):
    """One results.csv line for `epoch` and the 13 values in RESULTS_KEYS order."""
    values = [float(v) for v in values]
    if len(values) != len(RESULTS_KEYS):
        raise ValueError(f"results row needs {len(RESULTS_KEYS)} values ({', '.join(RESULTS_KEYS)}), "
                         f"got {len(values)}")
    return ",".join("%20.5g" % v for v in [epoch] + values) + "\n"


def append_results(path, epoch, values):
    """Append one epoch to results.csv, writing the header first if the file is new."""
    path = Path(path)
    line = format_row(epoch, values)
    header = "" if path.exists() else format_header()
    append_text(path, header + line)  # a failed write leaves no partial row


def read_results(path):
    """(column names, float array of shape (epochs, 14)) from a results.csv."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    lines = path.read_text().splitlines()
    if not lines:
        raise UserError(f"{path} is empty; expected the results.csv header line")
    columns = [c.strip() for c in lines[0].split(",")]
    if tuple(columns) != COLUMNS:
        raise UserError(f"{path}:1: unexpected results.csv header {columns}; expected {list(COLUMNS)}")
    return list(columns), parse_csv_rows(path, lines[1:], len(COLUMNS), "results.csv")


def parse_csv_rows(path, lines, n_columns, what):
    """Float rows of a comma-separated file (blank lines skipped); UserError naming file and line."""
    rows = []
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            if len(fields) != n_columns:
                raise ValueError(f"{len(fields)} fields for {n_columns} columns")
            rows.append([float(x) for x in fields])
        except ValueError as e:
            raise UserError(f"{path}:{number}: bad {what} row ({e}); delete or repair that line") from None
    return np.array(rows, dtype=np.float64).reshape(-1, n_columns)


def truncate_results(path, before_epoch):
    """Drop rows with epoch >= `before_epoch` (a resumed run re-logs them); atomic rewrite.

    A run killed after logging an epoch but before saving its last.pt resumes at that epoch: without
    this its row would appear twice. A last line without its newline (killed mid-append) goes too."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [ln for ln in lines[1:]
                        if ln.endswith("\n") and ln.strip() and float(ln.split(",")[0]) < before_epoch]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _smooth(y, sigma=3):
    from scipy.ndimage import gaussian_filter1d
    return gaussian_filter1d(y, sigma=sigma)


def plot_results(csv_path, save_path=None):
    """Draw results.png (beside the csv unless `save_path` is given); returns the png path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    csv_path = Path(csv_path)
    save_path = Path(save_path) if save_path else csv_path.with_name("results.png")
    columns, data = read_results(csv_path)
    epochs = data[:, 0]
    fig = Figure(figsize=(12, 6), tight_layout=True)
    FigureCanvasAgg(fig)
    for ax, name in zip(fig.subplots(2, 5).ravel(), PLOT_COLUMNS):
        y = data[:, columns.index(name)]
        ax.plot(epochs, y, marker=".", linewidth=2, markersize=8, label="results")
        if len(y) >= 3:
            ax.plot(epochs, _smooth(y), ":", label="smooth", linewidth=2)
        ax.set_title(name, fontsize=12)
    fig.axes[0].legend()
    fig.savefig(save_path, dpi=200)
    return save_path
