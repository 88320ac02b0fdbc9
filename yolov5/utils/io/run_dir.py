"""Run directories that never overwrite an earlier run: runs/train/exp, exp2, exp3, ...

Upstream v6.0 behaviour (`increment_path`): a path that does not exist yet is used as is; an
existing one gets the smallest number above every sibling already numbered, starting at 2 (there is
never an `exp1`). Two v6.1 fixes are followed: names containing periods (`exp.v2`) are treated as
directory names, and an existing *file* keeps its suffix after the number (`last.pt` -> `last2.pt`).
The name is regex-escaped, so names with `+`, `(`, `[` and the like work too.
"""
import re
from pathlib import Path


def increment_path(path, exist_ok=False, sep="", mkdir=False):
    """The first free path of the series `path`, `path{sep}2`, `path{sep}3`, ...

    exist_ok: return `path` unchanged even if it exists (resume, --exist-ok).
    sep: text between the name and its number (train.py uses '').
    mkdir: create the returned path as a directory (parents included).
    """
    path = Path(path)
    if path.exists() and not exist_ok:
        # Only an existing file has its suffix split off; a directory called "exp.v2" keeps its name.
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        numbered = re.compile(re.escape(stem.name + sep) + r"(\d+)" + re.escape(suffix))
        taken = [int(m.group(1)) for sibling in stem.parent.iterdir()
                 if (m := numbered.fullmatch(sibling.name))]
        number = max(taken) + 1 if taken else 2
        path = stem.parent / f"{stem.name}{sep}{max(number, 2)}{suffix}"
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path
