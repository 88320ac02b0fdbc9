"""Image grids with boxes: the boxes land where the labels say."""
import cv2
import numpy as np
import torch

from utils.plots import class_colour, output_to_target, plot_images, plot_labels


def _edge_colour(im, x, y):
    return tuple(int(v) for v in im[y, x])


def _near(colour, expected, tol=40):
    """Anti-aliased lines blend a little with the background."""
    return max(abs(a - b) for a, b in zip(colour, expected)) <= tol


def test_plot_images_draws_label_boxes_at_label_positions(tmp_path):
    images = torch.full((2, 3, 64, 96), 0, dtype=torch.uint8)
    # image 1, class 3, box centred (48, 32) size 40x20 px (normalised values)
    targets = torch.tensor([[1, 3, 48 / 96, 32 / 64, 40 / 96, 20 / 64]])
    out = plot_images(images, targets, paths=["a.jpg", "b.jpg"], fname=tmp_path / "grid.png")
    im = cv2.imread(str(out))
    assert im.shape == (2 * 64, 2 * 96, 3)  # 2 images -> 2x2 grid
    # image 1 sits in the top-right cell: x offset 96. Left edge of the box at x = 96 + 28, y = 32
    assert _near(_edge_colour(im, 96 + 28, 32), class_colour(3))
    assert _edge_colour(im, 96 + 48, 32) == (0, 0, 0)  # box interior untouched
    assert _edge_colour(im, 48, 32) == (0, 0, 0)  # image 0 has no boxes


def test_predictions_below_threshold_are_not_drawn(tmp_path):
    images = np.zeros((1, 3, 64, 64), dtype=np.float32)
    outputs = [torch.tensor([[10.0, 10.0, 30.0, 30.0, 0.9, 1.0], [40.0, 40.0, 60.0, 60.0, 0.1, 2.0]])]
    rows = output_to_target(outputs)
    assert np.allclose(rows, [[0, 1, 20, 20, 20, 20, 0.9], [0, 2, 50, 50, 20, 20, 0.1]])
    im = cv2.imread(str(plot_images(images, rows, fname=tmp_path / "pred.png")))
    assert _near(_edge_colour(im, 10, 20), class_colour(1))
    assert _edge_colour(im, 40, 50) == (0, 0, 0)


def test_plot_labels_writes_figure(tmp_path):
    labels = np.array([[0, 0.5, 0.5, 0.2, 0.3], [1, 0.2, 0.7, 0.1, 0.1], [1, 0.8, 0.1, 0.3, 0.2]])
    out = plot_labels(labels, names=["a", "b"], save_dir=tmp_path)
    im = cv2.imread(str(out))
    assert out.name == "labels.jpg" and im is not None and im.shape[0] >= 1000
