"""Hyperparameter evolution (`train.py --evolve`): pick a parent, mutate, clip, record.

train.py runs the generations (train with the new hyp, then `record_generation`); this module holds
the pieces, following upstream v6.0 train.py `--evolve`:

* parent: the best `min(5, rows)` rows of evolve.csv by fitness (0.1 mAP@0.5 + 0.9 mAP@0.5:0.95);
  "single" picks one by weighted random choice (weights = fitness - min + 1e-6), "weighted" takes
  their weighted mean;
* mutation: factor per key = clip(gain * [U < 0.8] * N(0, 1) * u * 0.2 + 1, 0.3, 3.0), with u one
  U(0, 1) draw per generation, redrawn until some factor differs from 1; then every key is clamped
  to its [lower, upper] limits and rounded to 5 decimals;
* evolve.csv: 7 result columns then the hyp keys, fields right-aligned in 20 characters, values
  "%20.5g"; hyp_evolve.yaml: a comment header with the best generation, then its hyperparameters.

Post-v6.0 fixes followed: hyp_evolve.yaml holds the BEST generation's values (v6.1 #6604; v6.0
wrote the current one); with --noautoanchor the `anchors` key is not evolved (v6.2 #8891).
Our own choice: evolve.csv columns are matched to hyp keys by header name, not by position, and
the random generator is passed in (train.py seeds it; upstream reseeded numpy from the clock).
"""
import math
from pathlib import Path

import numpy as np
import yaml

from utils.io.disk_writes import append_text, write_text
from utils.errors import UserError
from utils.training.results_log import parse_csv_rows

# key: (mutation gain, lower limit, upper limit); gain 0 = never mutated.
META = {
    "lr0": (1, 1e-5, 1e-1),
    "lrf": (1, 0.01, 1.0),
    "momentum": (0.3, 0.6, 0.98),
    "weight_decay": (1, 0.0, 0.001),
    "warmup_epochs": (1, 0.0, 5.0),
    "warmup_momentum": (1, 0.0, 0.95),
    "warmup_bias_lr": (1, 0.0, 0.2),
    "box": (1, 0.02, 0.2),
    "cls": (1, 0.2, 4.0),
    "cls_pw": (1, 0.5, 2.0),
    "obj": (1, 0.2, 4.0),
    "obj_pw": (1, 0.5, 2.0),
    "iou_t": (0, 0.1, 0.7),
    "anchor_t": (1, 2.0, 8.0),
    "anchors": (2, 2.0, 10.0),  # anchors per level; the model rounds it
    "fl_gamma": (0, 0.0, 2.0),
    "hsv_h": (1, 0.0, 0.1),
    "hsv_s": (1, 0.0, 0.9),
    "hsv_v": (1, 0.0, 0.9),
    "degrees": (1, 0.0, 45.0),
    "translate": (1, 0.0, 0.9),
    "scale": (1, 0.0, 0.9),
    "shear": (1, 0.0, 10.0),
    "perspective": (0, 0.0, 0.001),
    "flipud": (1, 0.0, 1.0),
    "fliplr": (0, 0.0, 1.0),
    "mosaic": (1, 0.0, 1.0),
    "mixup": (1, 0.0, 1.0),
    "copy_paste": (1, 0.0, 1.0),
}
RESULT_COLUMNS = ("metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
                  "val/box_loss", "val/obj_loss", "val/cls_loss")
FITNESS_WEIGHTS = np.array([0.0, 0.0, 0.1, 0.9])  # P, R, mAP@0.5, mAP@0.5:0.95
MUTATION_PROBABILITY, SIGMA = 0.8, 0.2


def evolve_meta(noautoanchor=False):
    """The limits table for this run (without `anchors` when AutoAnchor is off)."""
    meta = dict(META)
    if noautoanchor:
        meta.pop("anchors")
    return meta


def prepare_hyp(hyp, noautoanchor=False):
    """Copy of `hyp` ready for evolution: `anchors: 3` added (or removed with --noautoanchor)."""
    hyp = dict(hyp)
    if noautoanchor:
        hyp.pop("anchors", None)
    else:
        hyp.setdefault("anchors", 3)
    return hyp


def _fitness(rows):
    return np.asarray(rows, dtype=np.float64)[:, :4] @ FITNESS_WEIGHTS


def read_evolve_csv(path):
    """(column names, (rows, columns) float array) of an evolve.csv."""
    path = Path(path)
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise UserError(f"{path} is empty; delete it to start evolution afresh")
    columns = [c.strip() for c in lines[0].split(",")]
    if tuple(columns[:len(RESULT_COLUMNS)]) != RESULT_COLUMNS:
        raise UserError(f"{path}:1: header does not start with {', '.join(RESULT_COLUMNS)}; not an evolve.csv")
    return columns, parse_csv_rows(path, lines[1:], len(columns), "evolve.csv")


def select_parent(evolve_csv, hyp_keys, rng, parent="single", top=5):
    """{key: value} of the parent drawn from the best `top` rows of evolve.csv."""
    columns, rows = read_evolve_csv(evolve_csv)
    missing = [k for k in hyp_keys if k not in columns]
    if missing:
        raise UserError(f"{evolve_csv}: no column for hyperparameter(s) {', '.join(missing)}; "
                        f"it was written for other hyperparameters; use a new --name or delete it")
    if len(rows) == 0:
        raise UserError(f"{evolve_csv} has a header but no rows; delete it to start evolution afresh")
    rows = rows[np.argsort(-_fitness(rows), kind="stable")][:min(top, len(rows))]
    w = _fitness(rows) - _fitness(rows).min() + 1e-6
    if parent == "single" or len(rows) == 1:
        chosen = rows[rng.choice(len(rows), p=w / w.sum())]
    elif parent == "weighted":
        chosen = (rows * w[:, None]).sum(0) / w.sum()
    else:
        raise ValueError(f"parent must be 'single' or 'weighted', not {parent!r}")
    return {k: float(chosen[columns.index(k)]) for k in hyp_keys}


def mutate(values, meta, rng):
    """Multiply each value by a random factor (module docstring); keys not in `meta` are kept."""
    keys = list(values)
    gains = np.array([meta[k][0] if k in meta else 0.0 for k in keys], dtype=np.float64)
    if not gains.any():
        return dict(values)
    factors = np.ones(len(keys))
    while (factors == 1).all():
        factors = (gains * (rng.random(len(keys)) < MUTATION_PROBABILITY) * rng.standard_normal(len(keys))
                   * rng.random() * SIGMA + 1).clip(0.3, 3.0)
    return {k: float(values[k] * f) for k, f in zip(keys, factors)}


def clip_to_limits(hyp, meta):
    """Clamp every `meta` key of `hyp` into [lower, upper] and round to 5 decimals."""
    missing = [k for k in meta if k not in hyp]
    if missing:
        raise UserError(f"hyperparameters lack {', '.join(missing)}, which --evolve mutates; "
                        f"add them to the --hyp yaml (see data/hyps/hyp.scratch.yaml)")
    hyp = dict(hyp)
    for k, (_, lower, upper) in meta.items():
        hyp[k] = round(min(max(float(hyp[k]), lower), upper), 5)
    return hyp


def evolve_generation(hyp, evolve_csv, rng, parent="single", meta=None):
    """The hyperparameters to train next: mutated from a parent of evolve.csv, clipped to limits.

    Without an evolve.csv (first generation) `hyp` itself is trained, only clipped.
    """
    meta = META if meta is None else meta
    if Path(evolve_csv).exists():
        chosen = select_parent(evolve_csv, list(hyp), rng, parent)
        hyp = mutate(chosen, meta, rng)
    return clip_to_limits(hyp, meta)


def record_generation(results, hyp, save_dir):
    """Append (7 results + hyp) to save_dir/evolve.csv and rewrite hyp_evolve.yaml with the best row.

    Returns the index of the best generation so far.
    """
    save_dir = Path(save_dir)
    evolve_csv, evolve_yaml = save_dir / "evolve.csv", save_dir / "hyp_evolve.yaml"
    results = [float(x) for x in results]
    if len(results) != len(RESULT_COLUMNS):
        raise ValueError(f"need {len(RESULT_COLUMNS)} results ({', '.join(RESULT_COLUMNS)}), got {len(results)}")
    keys = list(RESULT_COLUMNS) + list(hyp)
    header = ",".join("%20s" % k for k in keys) + "\n"
    if evolve_csv.exists():  # append in the file's column order, which must hold the same keys
        keys, _ = read_evolve_csv(evolve_csv)
        if sorted(keys[len(RESULT_COLUMNS):]) != sorted(hyp):
            raise UserError(f"{evolve_csv} has columns for other hyperparameters; use a new --name or delete it")
        header = ""
    values = results + [hyp[k] for k in keys[len(RESULT_COLUMNS):]]
    append_text(evolve_csv, header + ",".join("%20.5g" % float(v) for v in values) + "\n")

    columns, rows = read_evolve_csv(evolve_csv)
    best = int(np.argmax(_fitness(rows)))
    n_results = len(RESULT_COLUMNS)
    best_hyp = {k: float(v) for k, v in zip(columns[n_results:], rows[best, n_results:])}
    write_text(evolve_yaml, "# YOLOv5 hyperparameter evolution results\n"
               f"# Best generation: {best}\n"
               f"# Last generation: {len(rows) - 1}\n"
               "# " + ", ".join("%20s" % k for k in RESULT_COLUMNS) + "\n"
               "# " + ", ".join("%20.5g" % v for v in rows[best, :n_results]) + "\n\n"
               + yaml.safe_dump(best_hyp, sort_keys=False))  # atomic: the best so far is never lost
    return best


def plot_evolve(evolve_csv, save_path=None):
    """evolve.png: one scatter of value vs fitness per hyperparameter, best generation marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    evolve_csv = Path(evolve_csv)
    save_path = Path(save_path) if save_path else evolve_csv.with_suffix(".png")
    columns, rows = read_evolve_csv(evolve_csv)
    keys = columns[len(RESULT_COLUMNS):]
    f = _fitness(rows)
    best = int(np.argmax(f))
    ncols = 5
    nrows = max(1, math.ceil(len(keys) / ncols))
    fig = Figure(figsize=(2.4 * ncols, 2.2 * nrows), tight_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        v = rows[:, columns.index(key)]
        ax.scatter(v, f, c=f, cmap="viridis", alpha=0.8, edgecolors="none", s=12)
        ax.plot(v[best], f[best], "k+", markersize=15)
        ax.set_title(f"{key} = {v[best]:.3g}", fontsize=9)
        ax.tick_params(labelsize=6)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.savefig(save_path, dpi=200)
    return save_path
