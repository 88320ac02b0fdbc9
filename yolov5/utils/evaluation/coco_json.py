"""COCO-format detection export (--save-json) and its evaluation with pycocotools.

Detections are written as COCO "results": one {image_id, category_id, bbox [x, y, w, h], score}
record per box, in original-image pixels. COCO's official metric then comes from pycocotools
(or faster-coco-eval, a drop-in C++ port, when it is installed).

Image ids: COCO file names are numeric ("000000000139.jpg" -> 139), so a numeric stem is the id.
Other datasets get ids from a {stem: id} map: taken from the annotation file's `file_name`s when
one is given, otherwise assigned 1, 2, ... and written beside the predictions so the ids can be
traced back to files.
"""
import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch

from utils.errors import UserError
from utils.printable import escaped, printable

LOGGER = logging.getLogger("yolov5")

# COCO category id of each of the 80 YOLO classes (COCO's ids run 1..90 with gaps).
COCO80_TO_COCO91 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90)


def coco80_to_coco91_class():
    """List mapping a YOLO class index (0..79) to its COCO category id (1..90)."""
    return list(COCO80_TO_COCO91)


def image_ids_from_annotations(anno_json):
    """{file stem: image id} from a COCO annotation file, to give non-numeric file names their ids."""
    return annotation_tables(anno_json)[1]


def annotation_tables(anno_json):
    """({category name: id}, {file stem: image id}) of a COCO annotation file, read once."""
    data = _load_json(anno_json, 'annotation')
    try:
        categories = {c['name']: int(c['id']) for c in data.get('categories', [])}
        return categories, {Path(im['file_name']).stem: int(im['id']) for im in data['images']}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{anno_json}: not a COCO annotation file ({type(e).__name__}: {e}); 'images' entries "
                        "need 'file_name' and an integer 'id', 'categories' entries 'name' and 'id'") from None


def _load_json(path, what):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"COCO {what} file not found: {path}; check the path (for COCO it is "
                        "<dataset>/annotations/instances_val2017.json)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"COCO {what} file {path} is not valid JSON ({e}); re-create it") from None


class CocoPredictionWriter:
    """Collects detections of many images and writes them as one COCO results JSON.

    class_map maps a class index to a category id: COCO80_TO_COCO91 for COCO, identity
    (category id = class index, as upstream) by default. image_ids optionally presets {stem: id}.
    """

    def __init__(self, class_map=None, image_ids=None):
        self.class_map = class_map
        self.image_ids = dict(image_ids or {})
        self.assigned = {}  # stems that got a new id here
        self.records = []

    def image_id(self, path):
        """COCO image id of an image file: preset map first, then a numeric stem, then a new id."""
        stem = Path(path).stem
        if stem in self.image_ids:
            return self.image_ids[stem]
        if stem.isdecimal():
            image_id = int(stem)
            if image_id in self.assigned.values():
                raise UserError(f"image id clash: file {path} has numeric name {image_id}, an id already "
                                "given to a file with a non-numeric name; rename the files consistently")
        else:
            image_id = max(self.image_ids.values(), default=0) + 1
            self.assigned[stem] = image_id
        self.image_ids[stem] = image_id
        return image_id

    def add(self, path, predn):
        """Add one image's detections: (n, 6) [x1, y1, x2, y2, conf, class] in original pixels."""
        image_id = self.image_id(path)
        predn = predn.detach().cpu().double().numpy() if isinstance(predn, torch.Tensor) else np.asarray(predn, float)
        for x1, y1, x2, y2, conf, cls in predn.tolist():
            cls = int(cls)
            self.records.append({
                'image_id': image_id,
                'category_id': self.class_map[cls] if self.class_map is not None else cls,
                'bbox': [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                'score': round(conf, 5)})

    def save(self, json_file):
        """Write the results JSON (and `<name>_image_ids.json` if ids were assigned); returns its path."""
        json_file = Path(json_file)
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(self.records))
        if self.assigned:
            id_file = json_file.with_name(json_file.stem + '_image_ids.json')
            # stems of names that are not valid UTF-8 are shown with U+FFFD: JSON tools reject lone surrogates
            id_file.write_text(json.dumps({escaped(k): v for k, v in self.assigned.items()}, indent=1))
        return json_file


def _coco_backend(backend):
    """(COCO class, COCOeval class) of the chosen evaluator."""
    if backend in ('auto', 'faster-coco-eval'):
        try:
            from faster_coco_eval import COCO, COCOeval_faster
            return COCO, COCOeval_faster
        except ImportError:
            if backend != 'auto':
                raise UserError("faster-coco-eval is not installed: pip install faster-coco-eval") from None
    if backend in ('auto', 'pycocotools'):
        try:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
            return COCO, COCOeval
        except ImportError:
            raise UserError("--save-json evaluation needs pycocotools: pip install pycocotools") from None
    raise ValueError(f"unknown COCO evaluation backend {backend!r}")


def evaluate_coco_json(anno_json, pred_json, img_ids=None, backend='auto', verbose=True):
    """COCO bbox evaluation of a results file; prints the 12-line summary, returns (mAP50-95, mAP50).

    img_ids restricts the evaluation to those images (validation passes its own image ids when the
    annotation file covers a larger set). backend: 'auto' (faster-coco-eval if installed, else
    pycocotools), 'pycocotools' or 'faster-coco-eval'.
    """
    COCO, COCOeval = _coco_backend(backend)
    annotations = _load_json(anno_json, 'annotation')  # clear error for a missing or broken file
    predictions = _load_json(pred_json, 'predictions')
    if not predictions:
        LOGGER.warning(f"WARNING: {printable(pred_json)} holds no detections; COCO mAP is 0")
        return 0.0, 0.0

    with contextlib.redirect_stdout(io.StringIO()):  # loading chatter, not results
        gt = COCO()  # built from the parsed dict: the file is read once
        gt.dataset = annotations
        gt.createIndex()
    known = set(gt.getImgIds())
    unknown = {p['image_id'] for p in predictions} - known
    if unknown:
        raise UserError(f"{pred_json}: {len(unknown)} image id(s) not in {anno_json} (e.g. "
                        f"{sorted(unknown, key=str)[:3]}); the predictions and annotations describe "
                        "different images")
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(str(pred_json))
        evaluator = COCOeval(gt, dt, 'bbox')
        if img_ids is not None:
            evaluator.params.imgIds = list(img_ids)
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    if verbose:
        LOGGER.info(summary.getvalue().rstrip('\n'))  # the handler ends the line
    return float(evaluator.stats[0]), float(evaluator.stats[1])


def is_coco_val(data):
    """True when the data yaml's val split is COCO's val2017 list (v6.0's test for its COCO rules)."""
    val = data.get("val")
    return isinstance(val, str) and val.replace("\\", "/").endswith("coco/val2017.txt")


class CocoExport:
    """--save-json: the annotation file, the class -> category id map, the writer, the evaluation.

    Category ids: COCO 80 -> 91 for COCO (v6.0's rule, see is_coco_val); otherwise, when every class
    name of the data yaml is a category name of the annotation file, that file's ids; otherwise the
    class index itself (v6.0's identity map). Image ids come from the annotation file's file names
    when it exists, so non-numeric file names score too.
    """

    def __init__(self, data, anno_json, is_coco):
        explicit = anno_json or data.get("anno_json")
        root = Path(data.get("path") or "../coco")
        self.anno = Path(explicit) if explicit else root / "annotations" / "instances_val2017.json"
        if explicit and not self.anno.is_absolute() and not self.anno.is_file():
            self.anno = root / self.anno
        if explicit and not self.anno.is_file():
            raise UserError(f"COCO annotation file {explicit} not found (looked at {self.anno}); fix "
                            "anno_json or drop --save-json")
        class_map, image_ids, self.known_ids = None, None, None
        if self.anno.is_file():
            categories, image_ids = annotation_tables(self.anno)  # pycocotools reads it again to score
            names = list(data.get("names") or [])
            if not is_coco and names and all(n in categories for n in names):
                class_map = [categories[n] for n in names]
            self.known_ids = set(image_ids.values())
        if is_coco:
            class_map = coco80_to_coco91_class()
        self.writer = CocoPredictionWriter(class_map=class_map, image_ids=image_ids)

    def evaluate(self, pred_json, split_files):
        """Write the predictions; score them on this split's images; (map, map50) or None."""
        pred_json = self.writer.save(pred_json)
        if not self.writer.records:
            LOGGER.warning(f"COCO evaluation skipped: no detections (wrote {printable(pred_json)})")
            return None
        if self.known_ids is None:
            LOGGER.warning(printable(f"COCO evaluation skipped: {self.anno} not found (predictions saved to "
                                     f"{pred_json})"))
            return None
        LOGGER.info(f"\nEvaluating pycocotools mAP... saving {pred_json}...")
        img_ids = sorted({i for i in map(self.writer.image_id, split_files) if i in self.known_ids}) or None
        try:
            return evaluate_coco_json(self.anno, pred_json, img_ids=img_ids)
        except UserError:
            raise
        except Exception as e:  # a broken annotation file must not lose the computed metrics
            LOGGER.warning(f"COCO evaluation failed: {e}")
            return None
