"""COCO JSON -> YOLO labels: parity with the real coco16/coco128 labels, crowd exclusion, bad input."""
import json

import numpy as np
import pytest

from utils.data.coco_convert import convert_coco_json, main
from utils.evaluation.coco_json import COCO80_TO_COCO91
from utils.errors import UserError


def read_rows(path):
    return np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines()]).reshape(-1, 5)


def test_real_labels_reproduced(real_image_set, tmp_path):
    root, n = real_image_set.root, real_image_set.images
    counts = convert_coco_json(root / "annotations" / "instances_train2017.json", tmp_path / "labels",
                               tmp_path / "train2017.txt")
    assert counts == {"images": n, "boxes": real_image_set.boxes, "empty": len(real_image_set.empty)}
    expected_dir = root / "labels" / "train2017"
    ours = sorted(p.name for p in (tmp_path / "labels").glob("*.txt"))
    assert ours == sorted(p.name for p in expected_dir.glob("*.txt")) and len(ours) == n
    identical = 0
    for name in ours:
        mine, theirs = read_rows(tmp_path / "labels" / name), read_rows(expected_dir / name)
        assert mine.shape == theirs.shape, name
        assert np.abs(mine - theirs).max(initial=0) <= 1e-6, name  # same rows, same order
        identical += (tmp_path / "labels" / name).read_bytes() == (expected_dir / name).read_bytes()
    assert identical == n  # even the '%g' text is the same
    assert (tmp_path / "labels" / "000000000250.txt").read_text() == ""  # no annotations: empty file
    lines = (tmp_path / "train2017.txt").read_text().splitlines()
    assert len(lines) == n and lines[0] == "./images/train2017/000000000009.jpg"
    assert lines == sorted(lines)


def test_coco_categories_give_the_standard_table(real_images_dir):
    cats = json.loads((real_images_dir / "annotations" / "instances_train2017.json").read_text())["categories"]
    assert tuple(sorted(c["id"] for c in cats)) == tuple(COCO80_TO_COCO91)


def small_coco(tmp_path, annotations, images=None):
    data = {"images": images or [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100},
                                 {"id": 2, "file_name": "b.jpg", "width": 50, "height": 50}],
            "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "toothbrush"}],
            "annotations": annotations}
    path = tmp_path / "instances_mini.json"
    path.write_text(json.dumps(data))
    return path


def test_crowd_duplicates_and_degenerate_boxes_excluded(tmp_path):
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 20, 100, 50], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 200, 100], "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 90, "bbox": [50, 50, 0, 10], "iscrowd": 0},
            {"id": 4, "image_id": 1, "category_id": 3, "bbox": [10, 20, 100, 50], "iscrowd": 0},
            {"id": 5, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1},
            {"id": 6, "image_id": 1, "category_id": 90, "bbox": [150, 0, 50, 25]}]
    counts = convert_coco_json(small_coco(tmp_path, anns), tmp_path / "out", tmp_path / "list.txt",
                               images_prefix="imgs/")
    assert counts == {"images": 2, "boxes": 2, "empty": 1}
    assert (tmp_path / "out" / "a.txt").read_text() == "1 0.3 0.45 0.5 0.5\n2 0.875 0.125 0.25 0.25\n"
    assert (tmp_path / "out" / "b.txt").read_text() == ""  # only a crowd region: background image
    assert (tmp_path / "list.txt").read_text() == "imgs/a.jpg\nimgs/b.jpg\n"


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"images": [], "annotations": []}', "key 'categories' missing"),
])
def test_bad_json_is_a_user_error(tmp_path, content, message):
    path = tmp_path / "instances_bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        convert_coco_json(path, tmp_path / "out")


@pytest.mark.parametrize("ann,message", [
    ({"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1]}, "image id 7"),
    ({"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1]}, "category id 2"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}, "bbox"),
    ({"image_id": 1, "bbox": [0, 0, 1, 1]}, r"annotations\[0\] lacks \['category_id'\]"),
])
def test_bad_records_name_the_record(tmp_path, ann, message):
    with pytest.raises(UserError, match=message):
        convert_coco_json(small_coco(tmp_path, [ann]), tmp_path / "out")


def test_cli_missing_file_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--json", str(tmp_path / "nope.json"), "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and "COCO JSON not found" in capsys.readouterr().err


def test_cli_prints_its_summary_on_stdout(tmp_path, capsys):
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 20, 100, 50], "iscrowd": 0}]
    path = small_coco(tmp_path, anns)
    main(["--json", str(path), "--out", str(tmp_path / "out"), "--list", str(tmp_path / "list.txt")])
    assert capsys.readouterr().out == (f"{path}: 2 images, 1 boxes, 1 without boxes -> {tmp_path / 'out'}, "
                                       f"list {tmp_path / 'list.txt'}\n")
