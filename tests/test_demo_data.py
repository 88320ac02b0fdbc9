"""Demo dataset generator: deterministic files, valid YOLO labels, boxes that bound the drawn pixels."""
import os

import cv2
import numpy as np
import pytest
import yaml

from utils.data.demo_data import (DEFAULT_DIR, HUES, NAMES, YAML_NAME, ensure_demo_dataset, generate_demo_dataset,
                             label_text, main, render_image)
from utils.errors import UserError


def files_of(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "a"
    generate_demo_dataset(root, n_train=12, n_val=4, imgsz=160, seed=7)
    return root


def test_same_seed_gives_identical_files(small_dataset, tmp_path):
    generate_demo_dataset(tmp_path / "b", n_train=12, n_val=4, imgsz=160, seed=7)
    a, b = files_of(small_dataset), files_of(tmp_path / "b")
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.endswith(".jpg")]) == 16 and len([k for k in a if k.endswith(".txt")]) == 16
    for name in a:
        if name != YAML_NAME:  # the yaml differs only in its absolute `path`
            assert a[name] == b[name], name
    ya, yb = yaml.safe_load(a[YAML_NAME]), yaml.safe_load(b[YAML_NAME])
    assert ya.pop("path") == str(small_dataset.resolve()) and yb.pop("path") == str((tmp_path / "b").resolve())
    assert ya == yb


def test_other_seed_gives_other_images(small_dataset, tmp_path):
    generate_demo_dataset(tmp_path / "c", n_train=2, n_val=1, imgsz=160, seed=8)
    name = "images/train/demo_train_000000.jpg"
    assert (tmp_path / "c" / name).read_bytes() != (small_dataset / name).read_bytes()


def test_yaml_and_labels_are_valid_yolo(small_dataset):
    data = yaml.safe_load((small_dataset / YAML_NAME).read_text())
    assert data["nc"] == len(data["names"]) == 6 and data["names"] == list(NAMES)
    assert (small_dataset / data["train"]).is_dir() and (small_dataset / data["val"]).is_dir()
    n_boxes = 0
    for txt in sorted((small_dataset / "labels").rglob("*.txt")):
        image = small_dataset / "images" / txt.parent.name / (txt.stem + ".jpg")
        assert cv2.imread(str(image)).shape == (160, 160, 3)
        for line in txt.read_text().splitlines():
            fields = line.split()
            assert len(fields) == 5 and all(len(f.split(".")[1]) == 6 for f in fields[1:]), line
            cls, x, y, w, h = int(fields[0]), *map(float, fields[1:])
            assert 0 <= cls < 6 and 0 < w <= 1 and 0 < h <= 1
            assert 0 <= x - w / 2 + 1e-6 and x + w / 2 <= 1 + 1e-6 and 0 <= y - h / 2 + 1e-6 and y + h / 2 <= 1 + 1e-6
            n_boxes += 1
    assert n_boxes >= 16  # 0-8 objects per image, a few per image on average


def test_label_files_equal_the_rendered_objects(small_dataset):
    for i in (0, 5, 11):
        _, classes, boxes, _ = render_image(np.random.default_rng([7, 0, i]), 160)
        assert (small_dataset / f"labels/train/demo_train_{i:06d}.txt").read_text() == label_text(classes, boxes, 160)


def _hue_distance(h, centre):
    d = np.abs(h.astype(int) - centre) % 180
    return np.minimum(d, 180 - d)


def test_boxes_bound_the_drawn_pixels():
    """Recover each object from its colour family in the rendered image and compare with its label."""
    checked = 0
    for i in range(24):
        img, classes, boxes, _ = render_image(np.random.default_rng([123, 0, i]), 256)
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        saturated = hsv[..., 1] >= 120  # objects are S >= 190, backgrounds stay far below
        # 1) nothing strongly coloured is left unlabelled
        covered = np.zeros(saturated.shape, bool)
        for x1, y1, x2, y2 in boxes.astype(int):
            covered[max(y1 - 2, 0):y2 + 2, max(x1 - 2, 0):x2 + 2] = True
        assert not (saturated & ~covered).any(), f"image {i}: coloured pixels outside every box"
        # 2) each box is tight around its object's pixels (objects not touching a same-class object)
        for k, (cls, box) in enumerate(zip(classes, boxes)):
            grown = box + [-3, -3, 3, 3]
            same_class = [b for j, (c, b) in enumerate(zip(classes, boxes)) if c == cls and j != k]
            if any(b[0] < grown[2] and b[2] > grown[0] and b[1] < grown[3] and b[3] > grown[1] for b in same_class):
                continue
            x1, y1, x2, y2 = np.clip(grown, 0, 256).astype(int)
            mask = saturated[y1:y2, x1:x2] & (_hue_distance(hsv[y1:y2, x1:x2, 0], HUES[cls]) <= 14)
            ys, xs = np.nonzero(mask)
            found = np.array([x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1])
            assert np.abs(found - box).max() <= 2, (i, k, NAMES[cls], found, box)
            checked += 1
    assert checked >= 50


def test_objects_respect_size_and_visibility_rule():
    sides = []
    for i in range(40):
        _, classes, boxes, id_map = render_image(np.random.default_rng([5, 1, i]), 320)
        assert len(classes) <= 8 and set(np.unique(id_map)) <= set(range(len(classes) + 1))
        for k, box in enumerate(boxes, start=1):
            sides.append(max(box[2] - box[0], box[3] - box[1]))
            assert (id_map == k).sum() > 0
    sides = np.array(sides) / 320
    assert sides.max() <= 0.40 * 1.45 + 0.01  # rotation and aspect can grow the extent of a 40% object
    assert np.median(sides) > 0.05


def test_ensure_is_idempotent_and_atomic(tmp_path):
    target = tmp_path / "demo"
    assert ensure_demo_dataset(target, n_train=3, n_val=2, imgsz=64, seed=1) == target.resolve()
    stamp = (target / YAML_NAME).stat().st_mtime_ns
    first = files_of(target)
    assert ensure_demo_dataset(target, n_train=3, n_val=2, imgsz=64, seed=1) == target.resolve()
    assert (target / YAML_NAME).stat().st_mtime_ns == stamp and files_of(target) == first
    assert sorted(os.listdir(tmp_path)) == ["demo"]  # no temporary folder left behind
    assert yaml.safe_load((target / YAML_NAME).read_text())["path"] == str(target.resolve())


def test_ensure_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a complete demo dataset"):
        ensure_demo_dataset(tmp_path / "demo", n_train=1, n_val=1, imgsz=64)
    assert sorted(os.listdir(tmp_path)) == ["demo"]


def test_cli_generates_and_rejects_bad_size(tmp_path, capsys):
    main(["--out", str(tmp_path / "d"), "--n-train", "2", "--n-val", "1", "--imgsz", "64", "--seed", "3"])
    assert "demo dataset ready" in capsys.readouterr().out
    assert len(list((tmp_path / "d" / "images" / "train").glob("*.jpg"))) == 2
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "e"), "--imgsz", "8"])
    assert e.value.code == 2 and "imgsz >= 32" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_shipped_demo_yaml_matches_generator(repo_root):
    data = yaml.safe_load((repo_root / "yolov5" / "data" / "demo.yaml").read_text())
    assert data["path"] == "../../datasets/demo" and data["train"] == "images/train" and data["val"] == "images/val"
    assert data["nc"] == len(NAMES) and list(data["names"]) == list(NAMES)
    assert (repo_root / "yolov5" / "data" / data["path"]).resolve() == DEFAULT_DIR  # yaml-relative, where ensure writes
