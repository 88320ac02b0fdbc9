"""Unpack, check and move downloaded datasets for prepare.sh (Python standard library only).

    python3 scripts/archive_tools.py unpack ZIP DIR       unpack ZIP into the new folder DIR
    python3 scripts/archive_tools.py check-images DIR LIST  every image LIST names is in DIR
    python3 scripts/archive_tools.py merge SRC DST        move SRC's contents into DST

`unpack` is also the check of an archive without a published checksum: zipfile verifies every
member's CRC while extracting, so a truncated or damaged zip fails here; DIR is then removed.
`merge` moves each entry of SRC to the same place under DST unless DST already has it (an
existing file is never replaced); whole folders move with one rename, so they appear complete.
Exit codes: 0 ok, 1 failed (the message says why).
"""
import os
import shutil
import sys
import zipfile
import zlib
from pathlib import Path


class Failure(Exception):
    pass


def log(msg):
    print(f"[archive] {msg}", file=sys.stderr, flush=True)


def unpack(archive, out_dir):
    archive, out_dir = Path(archive), Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # left by an interrupted earlier unpack
    damaged = f"{archive} is damaged or not a zip archive"
    if not zipfile.is_zipfile(archive):
        raise Failure(damaged)
    try:
        with zipfile.ZipFile(archive) as z:
            members = z.infolist()
            files = sum(not m.is_dir() for m in members)
            log(f"unpacking {archive.name}: {files} files")
            step = max(1, len(members) // 10)
            for i, m in enumerate(members, 1):
                name = m.filename.replace("\\", "/")
                if name.startswith("/") or ".." in name.split("/"):
                    raise Failure(f"{archive}: member {m.filename!r} would land outside the folder; refusing it")
                z.extract(m, out_dir)  # reads through the member: a CRC mismatch raises BadZipFile
                if i % step == 0 and len(members) >= 1000:
                    log(f"  {archive.name}: {100 * i // len(members)}%")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError) as e:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise Failure(f"{damaged} ({e})") from None
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    found = sum(len(names) for _, _, names in os.walk(out_dir))
    if found != files:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise Failure(f"{archive}: unpacked {found} files, the archive lists {files}")
    log(f"unpacked {files} files from {archive.name}")


def check_images(image_dir, list_file):
    """Every image named in the list (./images/<split>/name.jpg lines) exists in image_dir."""
    image_dir, list_file = Path(image_dir), Path(list_file)
    if not list_file.is_file():
        raise Failure(f"image list {list_file} not found")
    wanted = [line.strip().rsplit("/", 1)[-1] for line in list_file.read_text().splitlines() if line.strip()]
    if not wanted:
        raise Failure(f"image list {list_file} is empty")
    if not image_dir.is_dir():
        raise Failure(f"image folder {image_dir} not found")
    present = set(os.listdir(image_dir))
    missing = [name for name in wanted if name not in present]
    if missing:
        raise Failure(f"{image_dir} lacks {len(missing)} of the {len(wanted)} images listed in {list_file} "
                      f"(first: {', '.join(missing[:3])})")
    extra = len(present) - len(set(wanted))
    print(f"{image_dir}: all {len(wanted)} images of {list_file.name} present"
          + (f" ({extra} more files not listed)" if extra > 0 else ""))


def merge(src, dst, top=True):
    """Returns the number of existing files kept (the new copies of those stay in src)."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    kept = 0
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if not target.exists():
            os.replace(entry, target)
        elif entry.is_dir() and target.is_dir():
            kept += merge(entry, target, top=False)
        else:
            kept += 1
    if top and kept:
        log(f"kept {kept} existing file(s) under {dst} instead of the archive's copies")
    return kept


def main(argv):
    usage = "usage: archive_tools.py unpack ZIP DIR | check-images DIR LIST | merge SRC DST"
    commands = {"unpack": unpack, "check-images": check_images, "merge": merge}
    if len(argv) != 3 or argv[0] not in commands:
        print(usage, file=sys.stderr)
        return 2
    try:
        commands[argv[0]](*argv[1:])
    except (Failure, OSError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
