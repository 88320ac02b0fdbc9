"""Writes of run files that fail cleanly: a full disk, a quota or a file-size limit leaves every
existing file as it was and becomes one clear UserError instead of a traceback or half a line."""
import errno
import os
import shutil

from utils.errors import UserError
from utils.printable import printable

# A write refused for lack of room (ENOSPC, EDQUOT) or over `ulimit -f` (EFBIG), or denied outright.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def write_failure(exc):
    """The OSError behind `exc` (torch wraps it in a RuntimeError) when it is a refused write, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def free_space(folder):
    """Free space of the file system holding `folder`, as text ('12.3 MB'); '?' when unknown."""
    try:
        return f"{shutil.disk_usage(folder).free / 1e6:.1f} MB"
    except OSError:
        return "?"


def append_text(path, text):
    """Append `text` to `path`; if the write fails, the file is cut back to its old length.

    A failed append never leaves a partial line; the failure is a UserError naming the folder.
    """
    path = os.fspath(path)
    try:
        old_size = os.path.getsize(path)
    except FileNotFoundError:
        old_size = None
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
    except OSError as e:
        _restore(path, old_size)
        if write_failure(e) is None:
            raise
        raise _write_error(e, path, "it was left as it was") from None


def _write_error(failure, path, kept):
    """The UserError for a write of `path` that failed for lack of space (or a size limit)."""
    folder = os.path.dirname(path) or "."
    return UserError(f"cannot write {printable(path)}: {failure.strerror} ({free_space(folder)} free in "
                     f"{printable(folder)}); {kept}. Free some space and run again")


def _restore(path, old_size):
    try:
        if old_size is None:
            os.unlink(path)
        else:
            os.truncate(path, old_size)
    except OSError:
        pass


def write_text(path, text):
    """Replace `path` with `text` atomically (temp file in the same folder, then rename): a failed
    write leaves the old file whole, and is a UserError naming the folder."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
        os.replace(tmp, path)
    except OSError as e:
        _restore(tmp, None)
        if write_failure(e) is None:
            raise
        raise _write_error(e, path, "the previous file, if any, is unchanged") from None
