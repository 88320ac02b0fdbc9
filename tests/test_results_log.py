"""utils/results_log: results.csv in v6.0's exact fixed-width format, reading it back, results.png."""
import numpy as np
import pytest
import torch
from PIL import Image

from utils.errors import UserError
from utils.training.results_log import (COLUMNS, append_results, format_header, format_row, plot_results, read_results,
                               truncate_results)

# The v6.0 header line, as upstream writes it: every name right-aligned in 20 characters.
V6_HEADER = ("               epoch,      train/box_loss,      train/obj_loss,      train/cls_loss,"
             "   metrics/precision,      metrics/recall,     metrics/mAP_0.5,metrics/mAP_0.5:0.95,"
             "        val/box_loss,        val/obj_loss,        val/cls_loss,               x/lr0,"
             "               x/lr1,               x/lr2\n")
VALUES = [0.1, 0.051234567, 0.02, 0.5, 0.4, 0.3, 0.15, 0.09, 0.04, 0.01, 0.0703, 0.0703, 0.0703]
V6_ROW0 = ("                   0,                 0.1,            0.051235,                0.02,"
           "                 0.5,                 0.4,                 0.3,                0.15,"
           "                0.09,                0.04,                0.01,              0.0703,"
           "              0.0703,              0.0703\n")


def test_header_and_row_exact_v6_format(tmp_path):
    assert format_header() == V6_HEADER
    assert format_row(0, VALUES) == V6_ROW0
    path = tmp_path / "results.csv"
    append_results(path, 0, VALUES)
    append_results(path, 1, [1234567.0, 1e-7, 0, 0.99999949, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    lines = path.read_text().splitlines(keepends=True)
    assert lines[0] == V6_HEADER and lines[1] == V6_ROW0
    fields = lines[2].rstrip("\n").split(",")
    assert fields[:5] == ["%20s" % "1", "%20s" % "1.2346e+06", "%20s" % "1e-07", "%20s" % "0", "%20s" % "1"]
    assert all(len(f) == 20 for line in lines for f in line.rstrip("\n").split(","))
    assert len(lines) == 3  # header written once


def test_accepts_tensors_and_numpy_scalars(tmp_path):
    values = [torch.tensor(0.1), np.float32(0.051234567)] + VALUES[2:]
    assert format_row(np.int64(0), values) == V6_ROW0


def test_wrong_number_of_values_is_rejected():
    with pytest.raises(ValueError, match="needs 13 values"):
        format_row(0, VALUES[:-1])


def test_read_back_round_trip(tmp_path):
    path = tmp_path / "results.csv"
    for epoch in range(4):
        append_results(path, epoch, [v * (epoch + 1) for v in VALUES])
    columns, data = read_results(path)
    assert tuple(columns) == COLUMNS and len(columns) == 14
    assert data.shape == (4, 14)
    assert data[:, 0].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(data[2, 1:], [float("%.5g" % (v * 3)) for v in VALUES])


def test_truncate_drops_rows_a_resumed_run_will_log_again(tmp_path):
    path = tmp_path / "results.csv"
    for epoch in range(5):
        append_results(path, epoch, VALUES)
    truncate_results(path, before_epoch=3)
    _, data = read_results(path)
    assert data[:, 0].tolist() == [0, 1, 2]
    assert path.read_text().startswith(V6_HEADER)
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    truncate_results(tmp_path / "absent.csv", 2)  # nothing to do


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_results(tmp_path / "missing.csv")
    bad_header = tmp_path / "a.csv"
    bad_header.write_text("epoch,loss\n0,1\n")
    with pytest.raises(UserError, match="a.csv:1: unexpected results.csv header"):
        read_results(bad_header)
    bad_row = tmp_path / "results.csv"
    append_results(bad_row, 0, VALUES)
    with open(bad_row, "a") as f:
        f.write("1,2,3\n")
    with pytest.raises(UserError, match="results.csv:3: bad results.csv row"):
        read_results(bad_row)


def test_plot_results_writes_a_2x5_png(tmp_path):
    path = tmp_path / "results.csv"
    rng = np.random.default_rng(0)
    for epoch in range(6):
        append_results(path, epoch, rng.random(13))
    png = plot_results(path)
    assert png == tmp_path / "results.png"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (2400, 1200)  # 12 x 6 inches at 200 dpi
        # not a blank canvas: ten panels of lines
        assert len(np.unique(np.asarray(im.convert("L")))) > 10
    assert plot_results(path, tmp_path / "other.png") == tmp_path / "other.png"


def test_plot_results_single_epoch(tmp_path):
    path = tmp_path / "results.csv"
    append_results(path, 0, VALUES)
    assert plot_results(path).stat().st_size > 10000
