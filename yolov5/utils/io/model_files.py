"""Find project files named on the command line (`--cfg yolov5m.yaml`, `--hyp hyp.scratch.yaml`, ...).

Rules (compatible with upstream YOLOv5 v6.0 `check_file`):
1. `''` or an existing path (relative to the working directory, or absolute) is used as is.
2. Otherwise the bare file name is searched recursively under the project folders `yolov5/models`,
   `yolov5/data`, `yolov5/utils` and the repository's `yolov5_model/` (the walkthrough folder).
   Exactly one match is required: none -> UserError listing the folders searched; several ->
   UserError asking for the exact path. Copies with byte-identical content count as one match (the
   walkthrough keeps a copy of `yolov5m.yaml`), the first folder in the list above wins.
URLs are not downloaded: this trainer never fetches files behind the user's back.

`find_weights` resolves --weights: an existing path as is; a missing bare name such as `yolov5s.pt`
(the v6.0 default, which v6.0 downloaded) is looked up where `prepare.sh --only weights` puts the
released checkpoints: $MODEL_ROOT if set, then `<repo>/yolov5_model/`.

`load_model_yaml` and `check_model_dict` read a model yaml and check its structure, so that a broken
file fails with one message naming the file, layer and key instead of a traceback from deep in the parser.
"""
import os
from pathlib import Path

import yaml

from utils.errors import UserError

YOLOV5_ROOT = Path(__file__).resolve().parents[2]  # the import root: .../yolov5
REPO_ROOT = YOLOV5_ROOT.parent


def search_dirs():
    """Folders searched for a bare file name, in order of preference."""
    return [YOLOV5_ROOT / "models", YOLOV5_ROOT / "data", YOLOV5_ROOT / "utils", REPO_ROOT / "yolov5_model"]


def _distinct_by_content(paths):
    kept, seen = [], set()
    for p in paths:
        content = p.read_bytes()
        if content not in seen:
            seen.add(content)
            kept.append(p)
    return kept


def find_file(name, what="file"):
    """Return the path (str) for `name` following the rules above; `what` names the option in errors."""
    name = str(name)
    if name == "" or Path(name).is_file():
        return name
    if name.startswith(("http:/", "https:/")):
        raise UserError(f"{what} {name!r}: downloading files is not supported; download it yourself and pass "
                        f"the local path")
    bare = Path(name).name
    dirs = search_dirs()
    matches = [p for d in dirs if d.is_dir() for p in sorted(d.rglob(bare)) if p.is_file()]
    matches = _distinct_by_content(matches)
    if not matches:
        where = ", ".join(str(d / "**") for d in dirs)
        raise UserError(f"{what} {name!r} not found: it is not an existing path and no file named {bare!r} is "
                        f"in {where}. Pass the path of an existing file.")
    if len(matches) > 1:
        listed = ", ".join(str(p) for p in matches)
        raise UserError(f"{what} {name!r} is ambiguous: several different files match ({listed}). "
                        f"Pass the exact path of the one you mean.")
    return str(matches[0])


def weights_dirs():
    """Where prepare.sh puts released weights: $MODEL_ROOT when set, and <repo>/yolov5_model."""
    root = os.environ.get("MODEL_ROOT")
    return ([Path(root)] if root else []) + [REPO_ROOT / "yolov5_model"]


def find_weights(name, what="--weights", alternative="train one with train.py"):
    """Path (str) of a checkpoint named on the command line; '' stays ''. UserError if there is none,
    ending with `alternative` (what else the user can do)."""
    name = str(name)
    if name == "" or Path(name).is_file():
        return name
    if Path(name).parent in (Path("."), YOLOV5_ROOT):  # a bare name, or the scripts' default location
        for folder in weights_dirs():
            if (folder / Path(name).name).is_file():
                return str(folder / Path(name).name)
    searched = " and ".join(str(d) for d in weights_dirs())
    raise UserError(f"{what} {name}: file not found (also looked in {searched}). Fetch the released weights "
                    f"with `bash prepare.sh --only weights`, give the path of a checkpoint, or {alternative}")


def check_suffix(name, suffixes, what="file"):
    """Raise UserError unless `name` is '' or ends with one of `suffixes` (e.g. ('.yaml', '.yml'))."""
    name = str(name)
    if name and Path(name).suffix.lower() not in suffixes:
        raise UserError(f"{what} {name!r} must end with {' or '.join(suffixes)}")


def find_yaml(name, what="yaml file"):
    """`find_file` for yaml files (`--cfg`, `--hyp`, `--data`) with the .yaml/.yml suffix check."""
    check_suffix(name, (".yaml", ".yml"), what)
    return find_file(name, what)


def load_model_yaml(path):
    """Read a model yaml into a dict; UserError (file, line) if it is not valid yaml or not a mapping."""
    try:
        with open(path, encoding="utf-8", errors="ignore") as f:
            d = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: invalid yaml ({getattr(e, 'problem', None) or e}); fix the syntax") from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: a model yaml must be a mapping with keys nc, depth_multiple, width_multiple, "
                        f"anchors, backbone, head")
    return d


REQUIRED_MODEL_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")


def check_model_dict(d, source="model yaml"):
    """Raise UserError (naming `source`, the layer and the key) unless `d` is a well-formed model dict."""
    missing = [k for k in REQUIRED_MODEL_KEYS if k not in d]
    if missing:
        raise UserError(f"{source}: missing key(s) {', '.join(missing)}; a model yaml needs "
                        f"{', '.join(REQUIRED_MODEL_KEYS)}")
    for key in ("nc", "depth_multiple", "width_multiple"):
        value = d[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or \
                (key == "nc" and not isinstance(value, int)):
            raise UserError(f"{source}: '{key}' must be a positive {'int' if key == 'nc' else 'number'}, "
                            f"got {value!r}")
    anchors = d["anchors"]
    ok = (isinstance(anchors, int) and anchors > 0) or (isinstance(anchors, list) and anchors and all(
        isinstance(a, list) and a and len(a) % 2 == 0 and len(a) == len(anchors[0]) for a in anchors))
    if not ok:
        raise UserError(f"{source}: 'anchors' must be an int (anchors per level) or a list of per-level lists "
                        f"of w,h pixel pairs of equal length, got {anchors!r}")
    for key in ("backbone", "head"):
        if not isinstance(d[key], list):
            raise UserError(f"{source}: '{key}' must be a list of [from, number, module, args] rows")
    for i, row in enumerate(d["backbone"] + d["head"]):
        _check_row(row, i, source)


def _check_row(row, i, source):
    where = f"{source}: layer {i}"
    if not (isinstance(row, list) and len(row) == 4):
        raise UserError(f"{where}: each row must be [from, number, module, args], got {row!r}")
    f, n, _, args = row
    from_list = [f] if isinstance(f, int) else f
    if not (isinstance(from_list, list) and from_list and all(isinstance(j, int) for j in from_list)):
        raise UserError(f"{where}: 'from' must be an int or a list of ints, got {f!r}")
    bad = [j for j in from_list if not (j == -1 or -i <= j < i)]  # -1 = previous layer (or the input)
    if bad:
        raise UserError(f"{where}: 'from' refers to {bad}, which is not an earlier layer")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"{where}: 'number' must be a positive int, got {n!r}")
    if not isinstance(args, list):
        raise UserError(f"{where}: 'args' must be a list, got {args!r}")
