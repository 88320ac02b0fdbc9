"""detect.py over folders holding files that cannot be decoded, and the box line width it draws with."""
import shutil

import numpy as np
import pytest
import torch

import detect
from train_helpers import OneThread
from utils.io.checkpoint import build_checkpoint, save_checkpoint
from utils.data.demo_data import generate_demo_dataset
from utils.inference.detector import draw_and_crop
from utils.plots import auto_line_width, class_colour, draw_box


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A yolov5n checkpoint with random weights (6 classes): enough to run detect end to end."""
    from models.yolo import Model
    torch.manual_seed(0)
    with OneThread():
        model = Model("yolov5n.yaml", nc=6)
    return save_checkpoint(build_checkpoint(model), tmp_path_factory.mktemp("w") / "random.pt")


@pytest.fixture(scope="module")
def good_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "demo"
    generate_demo_dataset(root, n_train=1, n_val=2, imgsz=64, seed=3)
    return sorted((root / "images" / "val").glob("*.jpg"))


def _detect(argv, weights, source, project):
    with OneThread():
        return detect.main(["--weights", str(weights), "--source", str(source), "--device", "cpu", "--img", "64",
                            "--project", str(project), "--name", "det", *argv])


def test_unreadable_images_are_skipped_with_a_warning_and_counted(weights, good_images, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(good_images[0], folder / "a_good.jpg")
    (folder / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "c_empty.png").write_bytes(b"")
    shutil.copy(good_images[1], folder / "d_good.jpg")
    save_dir = _detect([], weights, folder, tmp_path)
    out = capsys.readouterr().out
    assert f"WARNING: image 2/4 {folder / 'b_broken.jpg'}: cannot decode it (empty, damaged or not an image); " \
           "skipped" in out
    assert f"WARNING: image 3/4 {folder / 'c_empty.png'}: cannot decode it" in out
    assert "label cache" not in out
    processed = [line.split(": ")[0] for line in out.splitlines() if line.startswith("image ") and "Done." in line]
    assert processed == [f"image 1/4 {folder / 'a_good.jpg'}", f"image 4/4 {folder / 'd_good.jpg'}"]
    assert "WARNING: 2 of 4 files skipped, they could not be decoded: b_broken.jpg, c_empty.png" in out
    assert sorted(p.name for p in save_dir.iterdir()) == ["a_good.jpg", "d_good.jpg"]


def test_a_source_with_no_readable_image_is_a_one_line_error(weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(SystemExit) as stopped:
        _detect([], weights, folder, tmp_path)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ERROR: --source {folder}: none of its 1 files could be decoded (x.jpg); check that they are "
                   "intact images or videos"]


@pytest.mark.parametrize("shape, width", [((320, 320, 3), 2), ((640, 640, 3), 2), ((720, 1280, 3), 3),
                                          ((1080, 1920, 3), 5), ((3000, 4000, 3), 11)])
def test_auto_line_width(shape, width):
    assert auto_line_width(shape) == width


@pytest.mark.parametrize("side, width", [(320, 2), (2000, 6)])
def test_detect_boxes_scale_with_the_image_unless_a_thickness_is_given(side, width):
    """Without --line-thickness the box is drawn exactly as with the scaled width, not with v6.0's fixed 3."""
    det = np.array([[40.0, 50.0, 200.0, 180.0, 0.9, 1.0]])
    names = ["a", "b"]
    style = {"line_width": None, "hide_labels": True, "hide_conf": False}

    def drawn(line_width):
        im = np.zeros((side, side, 3), np.uint8)
        if line_width is None:
            draw_and_crop(torch.tensor(det), im, names, style)
        else:
            draw_box(im, det[0, :4], "", class_colour(1), line_width)
        return im

    auto = drawn(None)
    assert np.array_equal(auto, drawn(width)) and not np.array_equal(auto, drawn(3))
    lit = int(auto.any(axis=2).sum())  # thinner lines light fewer pixels
    assert lit < int(drawn(3).any(axis=2).sum()) if width < 3 else lit > int(drawn(3).any(axis=2).sum())
    explicit = np.zeros((side, side, 3), np.uint8)
    draw_and_crop(torch.tensor(det), explicit, names, dict(style, line_width=7))
    assert np.array_equal(explicit, drawn(7))


def test_line_thickness_below_one_is_refused(capsys):
    with pytest.raises(SystemExit) as stopped:
        detect.parse_opt(["--line-thickness", "0"])
    assert stopped.value.code == 2
    assert "--line-thickness 0: must be at least 1 (pixels)" in capsys.readouterr().err
