"""COCO results export: category and image ids, record format, and evaluation errors."""
import json

import numpy as np
import pytest
import torch

from utils.evaluation.coco_json import COCO80_TO_COCO91, CocoPredictionWriter, coco80_to_coco91_class, evaluate_coco_json, \
    image_ids_from_annotations
from utils.errors import UserError


def test_coco80_to_coco91_matches_the_instances_file(real_images_dir):
    """The 80 YOLO classes are COCO's categories in ascending id order (coco128 README)."""
    table = coco80_to_coco91_class()
    data = json.loads((real_images_dir / "annotations" / "instances_train2017.json").read_text())
    assert table == sorted(c["id"] for c in data["categories"])
    assert len(table) == 80 and table[0] == 1 and table[11] == 13 and table[79] == 90
    missing = sorted(set(range(1, 91)) - set(table))
    assert missing == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
    assert table is not coco80_to_coco91_class() and tuple(table) == COCO80_TO_COCO91


def test_record_format_and_numeric_ids(tmp_path):
    writer = CocoPredictionWriter(class_map=coco80_to_coco91_class())
    predn = torch.tensor([[10.12345, 20.5, 30.0, 60.25, 0.8765432, 11.0],
                          [0.0, 0.0, 5.0, 5.0, 0.1, 0.0]])
    writer.add("images/val2017/000000000139.jpg", predn)
    writer.add("a/000000000042.png", np.zeros((0, 6)))
    assert writer.records == [
        {"image_id": 139, "category_id": 13, "bbox": [10.123, 20.5, 19.877, 39.75], "score": 0.87654},
        {"image_id": 139, "category_id": 1, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.1}]
    out = writer.save(tmp_path / "runs" / "best_predictions.json")
    assert json.loads(out.read_text()) == writer.records
    assert not (tmp_path / "runs" / "best_predictions_image_ids.json").exists()


def test_default_class_map_is_identity():
    writer = CocoPredictionWriter()
    writer.add("x/7.jpg", torch.tensor([[0.0, 0, 1, 1, 0.5, 3]]))
    assert writer.records[0]["category_id"] == 3 and writer.records[0]["image_id"] == 7


def test_non_numeric_names_get_an_id_map_written_beside(tmp_path):
    writer = CocoPredictionWriter()
    det = torch.tensor([[0.0, 0, 1, 1, 0.5, 0]])
    for name in ["cat.jpg", "dog.jpg", "dir/cat.jpg", "12.jpg"]:
        writer.add(name, det)
    assert [r["image_id"] for r in writer.records] == [1, 2, 1, 12]
    writer.save(tmp_path / "p.json")
    assert json.loads((tmp_path / "p_image_ids.json").read_text()) == {"cat": 1, "dog": 2}
    with pytest.raises(UserError, match="image id clash"):
        writer.add("2.jpg", det)  # 2 already stands for dog.jpg


def test_ids_from_annotations_are_used(tmp_path):
    anno = tmp_path / "a.json"
    anno.write_text(json.dumps({"images": [{"id": 5, "file_name": "sub/frame_a.jpg"}], "annotations": [],
                                "categories": []}))
    writer = CocoPredictionWriter(image_ids=image_ids_from_annotations(anno))
    assert writer.image_id("x/frame_a.png") == 5
    assert writer.image_id("frame_b.png") == 6  # unknown to the annotations: a fresh id
    anno.write_text(json.dumps({"images": [{"file_name": "x.jpg"}]}))
    with pytest.raises(UserError, match="need 'file_name' and an integer 'id'"):
        image_ids_from_annotations(anno)


def _tiny_coco(tmp_path):
    anno = tmp_path / "instances.json"
    anno.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600,
                         "iscrowd": 0}],
        "categories": [{"id": 1, "name": "a"}]}))
    return anno


def test_evaluate_prints_summary_and_returns_map(tmp_path, capsys):
    from utils.cli import set_logging
    set_logging()  # the summary goes through the "yolov5" logger, which the commands set up
    anno = _tiny_coco(tmp_path)
    writer = CocoPredictionWriter(class_map=[1])
    writer.add("1.jpg", torch.tensor([[10.0, 10, 50, 50, 0.9, 0], [60.0, 60, 90, 90, 0.8, 0]]))
    result = evaluate_coco_json(anno, writer.save(tmp_path / "p.json"), backend="pycocotools")
    assert result == pytest.approx((1.0, 1.0), abs=1e-12)  # the false positive scores below the true one
    printed = capsys.readouterr().out
    assert printed.count("Average Precision") == 6 and printed.count("Average Recall") == 6
    assert len(printed.splitlines()) == 12 and printed.endswith("] = -1.000\n")  # pycocotools' lines, as printed
    assert "Loading" not in printed  # loading chatter is hidden


def test_evaluate_errors(tmp_path, capsys):
    from utils.cli import set_logging
    set_logging()
    anno = _tiny_coco(tmp_path)
    with pytest.raises(UserError, match="annotation file not found"):
        evaluate_coco_json(tmp_path / "missing.json", anno)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        evaluate_coco_json(broken, anno)
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps([{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    with pytest.raises(UserError, match="1 image id\\(s\\) not in"):
        evaluate_coco_json(anno, stray, backend="pycocotools")
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert evaluate_coco_json(anno, empty, backend="pycocotools") == (0.0, 0.0)
    assert "holds no detections" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown COCO evaluation backend"):
        evaluate_coco_json(anno, stray, backend="nope")
