"""Convert a COCO instances JSON into YOLO label files and an image list (used by prepare.sh).

    python -m utils.data.coco_convert --json annotations/instances_train2017.json --out labels/train2017 \
        --list train2017.txt --images-prefix ./images/train2017/

Rules (those of the usual COCO-to-YOLO conversion behind the official YOLOv5 COCO labels):
* class = position of the category id in the sorted list of the JSON's category ids; for COCO's 80
  categories that is the inverse of the standard table `COCO80_TO_COCO91` (utils/evaluation/coco_json.py);
* crowd regions (iscrowd=1) and boxes with zero width or height are left out, exact duplicates dropped;
* one line `class x_center y_center width height` per box, normalised by the image size, written with
  '%g' (six significant digits), in the order the annotations appear in the JSON;
* every image in the JSON gets a label file, an empty one when it has no (non-crowd) boxes, so it is
  counted as an "empty" background image rather than a missing label.
"""
import argparse
import json
import logging
from pathlib import Path

import numpy as np

from utils.cli import set_logging
from utils.errors import UserError, exit_on_user_error

LOGGER = logging.getLogger("yolov5")


def _load(json_path):
    path = Path(json_path)
    if not path.is_file():
        raise UserError(f"COCO JSON not found: {path}. Pass the path of an instances_*.json file with --json.")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}). Re-download or regenerate the annotation file.") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UserError(f"{path}: key '{key}' missing or not a list; is this a COCO instances file?")
    return path, data


def _fields(path, item, kind, index, keys):
    """Read required keys of one JSON record, with a clear error naming the record."""
    try:
        return [item[k] for k in keys]
    except (KeyError, TypeError):
        missing = [k for k in keys if not isinstance(item, dict) or k not in item]
        raise UserError(f"{path}: {kind}[{index}] lacks {missing}; every {kind[:-1]} needs {list(keys)}.") from None


def class_table(path, categories):
    """Map each category id to a 0-based class: its rank among the sorted ids (COCO: the 91 -> 80 table)."""
    ids = sorted({_fields(path, c, "categories", i, ("id",))[0] for i, c in enumerate(categories)})
    return {cat_id: cls for cls, cat_id in enumerate(ids)}


def image_labels(path, data):
    """Return {image id: (file_name, rows)} with rows = list of (class, x, y, w, h) normalised."""
    images = {}
    for i, im in enumerate(data["images"]):
        image_id, file_name, width, height = _fields(path, im, "images", i, ("id", "file_name", "width", "height"))
        if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
            raise UserError(f"{path}: images[{i}] ({file_name}) has size {width}x{height}; sizes must be positive.")
        images[image_id] = (file_name, width, height, [])
    classes = class_table(path, data["categories"])
    for i, ann in enumerate(data["annotations"]):
        image_id, category_id, bbox = _fields(path, ann, "annotations", i, ("image_id", "category_id", "bbox"))
        if ann.get("iscrowd", 0):
            continue
        if image_id not in images:
            raise UserError(f"{path}: annotations[{i}] refers to image id {image_id}, which is not in 'images'.")
        if category_id not in classes:
            raise UserError(f"{path}: annotations[{i}] has category id {category_id}, not in 'categories'.")
        _, width, height, rows = images[image_id]
        try:
            box = np.array(bbox, dtype=np.float64)
        except (TypeError, ValueError):
            box = np.zeros(0)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise UserError(f"{path}: annotations[{i}] bbox {bbox} is not [x, y, width, height].")
        if box[2] <= 0 or box[3] <= 0:
            continue
        box[:2] += box[2:] / 2  # top-left corner -> centre
        box[[0, 2]] /= width
        box[[1, 3]] /= height
        row = (classes[category_id], *box.tolist())
        if row not in rows:
            rows.append(row)
    return {k: (v[0], v[3]) for k, v in images.items()}


def convert_coco_json(json_path, out_dir, list_path=None, images_prefix=None):
    """Write one YOLO label file per image into out_dir (and optionally an image list); return counts."""
    path, data = _load(json_path)
    labels = image_labels(path, data)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_boxes = n_empty = 0
    for file_name, rows in labels.values():
        txt = out_dir / Path(file_name).with_suffix(".txt")
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_text("".join(("%g " * 5).rstrip() % row + "\n" for row in rows))
        n_boxes += len(rows)
        n_empty += not rows
    if list_path is not None:
        if images_prefix is None:
            images_prefix = f"./images/{default_split_name(path)}/"
        names = sorted(file_name for file_name, _ in labels.values())
        Path(list_path).parent.mkdir(parents=True, exist_ok=True)
        Path(list_path).write_text("".join(images_prefix + name + "\n" for name in names))
    return {"images": len(labels), "boxes": n_boxes, "empty": n_empty}


def default_split_name(json_path):
    """instances_train2017.json -> train2017 (the folder name COCO uses for that split's images)."""
    stem = Path(json_path).stem
    return stem[len("instances_"):] if stem.startswith("instances_") else stem


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert a COCO instances JSON to YOLO label files.")
    parser.add_argument("--json", required=True, help="instances_*.json file")
    parser.add_argument("--out", required=True, help="folder for the label .txt files (e.g. coco/labels/train2017)")
    parser.add_argument("--list", default=None, help="also write this image list file (e.g. coco/train2017.txt)")
    parser.add_argument("--images-prefix", default=None,
                        help="prefix of each line in --list (default ./images/<split>/ from the JSON name)")
    opt = parser.parse_args(argv)
    set_logging()
    counts = convert_coco_json(opt.json, opt.out, opt.list, opt.images_prefix)
    LOGGER.info(f"{opt.json}: {counts['images']} images, {counts['boxes']} boxes, {counts['empty']} without boxes "
                f"-> {opt.out}" + (f", list {opt.list}" if opt.list else ""))


if __name__ == "__main__":
    main()
