"""Dataset yaml: find it, load it, check it, and resolve its split paths.

A data yaml names a dataset root (`path`), the splits (`train`, `val`, `test`: each a folder,
a .txt list of image paths, or a list of those, relative to `path`), the class count `nc` and
the class `names`. Every mistake is reported as a `UserError` naming the file and the key, so
a user never has to read a traceback to fix their yaml.

Resolution of a relative `path` (v6.0 used the working directory only, v6.1 the repo root;
we try the places a user would expect, in order): the yaml's own folder, the working
directory, then the project root (the folder holding `yolov5/`). The first existing
candidate wins; if none exists, the yaml-relative one is kept so the error names it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml

from utils.errors import UserError

LOGGER = logging.getLogger("yolov5")

YOLO_ROOT = Path(__file__).resolve().parents[2]  # .../yolov5
PROJECT_ROOT = YOLO_ROOT.parent
DATA_DIR = YOLO_ROOT / "data"
SPLITS = ("train", "val", "test")


def resolve_data_file(data: str | os.PathLike) -> Path:
    """Find a data yaml: an existing path as given, else a unique match under yolov5/data/."""
    data = str(data)
    if not data:
        raise UserError("--data is empty: give a dataset yaml such as coco128.yaml")
    p = Path(data)
    if p.is_file():
        return p
    if p.suffix not in (".yaml", ".yml"):
        raise UserError(f"--data {data}: expected a .yaml/.yml dataset file")
    if len(p.parts) == 1:  # bare name: search the shipped data folder
        matches = sorted(DATA_DIR.rglob(p.name))
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            listed = ", ".join(str(m) for m in matches)
            raise UserError(f"--data {data}: several files match ({listed}); give the exact path")
    raise UserError(f"--data {data}: file not found (looked in the working directory and {DATA_DIR})")


def _resolve_root(root: str, yaml_dir: Path) -> Path:
    p = Path(root).expanduser()
    if p.is_absolute():
        return p
    for base in (yaml_dir, Path.cwd(), PROJECT_ROOT):
        if (base / p).exists():
            return (base / p).resolve()
    return (yaml_dir / p).resolve()


def _resolve_split(value, bases: list, file: Path, key: str):
    """Split entry -> absolute path string (or list of them). Existence is checked by the caller.

    `bases` are the candidate roots in order; a relative entry takes the first base under which
    it exists (one base when the yaml sets `path`)."""
    if value is None or value == "":
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)) or str(item) == "":
            raise UserError(f"{file}: key '{key}' must be a folder, a .txt list or a list of those, "
                            f"got {item!r}")
        p = Path(item).expanduser()
        if not p.is_absolute():
            p = next((b / p for b in bases if (b / p).exists()), bases[0] / p)
        out.append(str(Path(os.path.normpath(p))))
    return out if isinstance(value, (list, tuple)) else out[0]


def _check_names(d: dict, file: Path):
    nc, names = d.get("nc"), d.get("names")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 1):
        raise UserError(f"{file}: key 'nc' must be a positive integer, got {nc!r}")
    if names is None:
        if nc is None:
            raise UserError(f"{file}: missing key 'nc' (number of classes); add e.g. 'nc: 80'")
        return nc, [f"class{i}" for i in range(nc)]
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise UserError(f"{file}: key 'names' as a mapping needs integer keys 0..n-1") from None
        if keys != list(range(len(keys))):
            raise UserError(f"{file}: key 'names' mapping must have keys 0..{len(keys) - 1} without gaps")
        names = [names[k] if k in names else names[str(k)] for k in keys]
    elif not isinstance(names, (list, tuple)):
        raise UserError(f"{file}: key 'names' must be a list or a {{index: name}} mapping")
    names = [str(n) for n in names]
    if nc is None:
        nc = len(names)
    if len(names) != nc:
        raise UserError(f"{file}: 'nc' is {nc} but 'names' has {len(names)} entries; make them agree")
    return nc, names


def load_data_config(data, require=("train", "val"), check_exists=True) -> dict:
    """Load and validate a dataset yaml; returns a dict with absolute split paths.

    `require`: split keys that must be present (and exist on disk when `check_exists`).
    The returned dict keeps the user's other keys and adds `yaml_file`.
    """
    file = resolve_data_file(data)
    try:
        with open(file, encoding="utf-8", errors="replace") as f:
            d = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UserError(f"{file}: not valid YAML ({e})") from None
    if not isinstance(d, dict):
        raise UserError(f"{file}: expected a mapping with keys path/train/val/nc/names")
    d = dict(d)
    if d.pop("download", None) is not None:
        LOGGER.info(f"{file}: the 'download' key is ignored; fetch datasets with prepare.sh")
    root = d.get("path") or ""
    if not isinstance(root, (str, os.PathLike)):
        raise UserError(f"{file}: key 'path' must be a folder path, got {root!r}")
    yaml_dir = file.resolve().parent
    if root:  # one dataset root; splits are relative to it
        root = _resolve_root(str(root), yaml_dir)
        bases = [root]
    else:  # no root: each split is searched like a relative root
        root, bases = yaml_dir, [yaml_dir, Path.cwd(), PROJECT_ROOT]
    d["path"] = str(root)
    for key in SPLITS:
        d[key] = _resolve_split(d.get(key), bases, file, key)
    for key in require:
        if d.get(key) is None:
            raise UserError(f"{file}: missing key '{key}' (a folder or .txt list of images, "
                            f"relative to 'path')")
        if check_exists:
            for p in d[key] if isinstance(d[key], list) else [d[key]]:
                if not Path(p).exists():
                    raise UserError(f"{file}: key '{key}': {p} does not exist "
                                    f"(dataset root 'path' resolved to {root}; run prepare.sh "
                                    f"or fix the path)")
    d["nc"], d["names"] = _check_names(d, file)
    d["yaml_file"] = str(file)
    return d
