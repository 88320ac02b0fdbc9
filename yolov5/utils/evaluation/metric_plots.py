"""Metric figures written by validation: PR / F1 / P / R curves and the confusion matrix.

Uses matplotlib's object API with the Agg canvas directly, so importing or calling these never
changes the global pyplot backend and works on machines without a display.
"""
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_LEGEND_CLASSES = 20  # more classes than this: thin grey lines, no per-class legend entries


def _class_name(names, c):
    """names may be a list or a {index: name} dict (as data yamls and checkpoints give them)."""
    if isinstance(names, dict):
        return str(names.get(int(c), c))
    return str(names[int(c)]) if 0 <= int(c) < len(names) else str(int(c))


def _new_axes(figsize):
    fig = Figure(figsize=figsize, tight_layout=True)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, save_path):
    save_path = Path(save_path)
    save_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(save_path, dpi=250)
    return save_path


def _class_curves(px, py, classes, label):
    """New axes with one thin curve per class row of py, labelled `label(row, class)` when there are
    few enough classes for a legend, plain grey otherwise -> (fig, ax, py as (nc, len(px)))."""
    py = np.asarray(py).reshape(-1, len(px))
    classes = range(len(py)) if classes is None else classes
    fig, ax = _new_axes((9, 6))
    per_class = 0 < len(py) <= MAX_LEGEND_CLASSES
    for row, c in enumerate(classes):
        if per_class:
            ax.plot(px, py[row], linewidth=1, label=label(row, c))
        else:
            ax.plot(px, py[row], linewidth=1, color='grey')
    return fig, ax, py


def plot_pr_curve(px, py, ap, save_dir='pr_curve.png', names=(), classes=None):
    """Precision-recall curve per class and their mean.

    px: (1000,) recall grid; py: (nc, 1000) precision at px per class; ap: (nc, n_iou) AP table
    (column 0 is AP@0.5); classes: the class id of each row (defaults to 0..nc-1).
    """
    fig, ax, py = _class_curves(px, py, classes, lambda row, c: f'{_class_name(names, c)} {ap[row, 0]:.3f}')
    if len(py):
        ax.plot(px, py.mean(0), linewidth=3, color='blue', label=f'all classes {ap[:, 0].mean():.3f} mAP@0.5')
    ax.set_xlabel('Recall')
    ax.set_ylabel('Precision')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.04, 1), loc='upper left')
    return _save(fig, save_dir)


def plot_mc_curve(px, py, save_dir='mc_curve.png', names=(), xlabel='Confidence', ylabel='Metric',
                  classes=None):
    """A metric (F1, precision or recall) against confidence, per class and mean.

    px: (1000,) confidence grid; py: (nc, 1000) metric values per class.
    """
    fig, ax, py = _class_curves(px, py, classes, lambda row, c: _class_name(names, c))
    if len(py):
        mean = py.mean(0)
        ax.plot(px, mean, linewidth=3, color='blue',
                label=f'all classes {mean.max():.2f} at {px[mean.argmax()]:.3f}')
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.04, 1), loc='upper left')
    return _save(fig, save_dir)


def plot_confusion_matrix(matrix, save_path, names=(), normalize=True):
    """Heat map of an (nc + 1, nc + 1) matrix: rows predicted, columns true, last = background.

    Columns are normalised to sum 1 (the share of each true class), cells below 0.005 left blank,
    values written in the cells when there are fewer than 30 classes.
    """
    nc = matrix.shape[0] - 1
    array = matrix / ((matrix.sum(0).reshape(1, -1) + 1e-6) if normalize else 1)
    array = np.where(array < 0.005, np.nan, array)

    fig, ax = _new_axes((12, 9))
    # masked (blank) cells are drawn transparent, i.e. in the white figure background
    image = ax.imshow(np.ma.masked_invalid(array), cmap='Blues', vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax)
    if nc < 30:
        for (i, j), value in np.ndenumerate(array):
            if not np.isnan(value):
                ax.text(j, i, f'{value:.2f}', ha='center', va='center', fontsize=8,
                        color='white' if value > 0.5 else 'black')
    names = [_class_name(names, c) for c in range(nc)] if len(names) == nc and 0 < nc < 99 else None
    if names:
        ticks = np.arange(nc + 1)
        ax.set_xticks(ticks)
        ax.set_xticklabels(names + ['background FP'], rotation=90)
        ax.set_yticks(ticks)
        ax.set_yticklabels(names + ['background FN'])
    ax.set_xlabel('True')
    ax.set_ylabel('Predicted')
    return _save(fig, save_path)
