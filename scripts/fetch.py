"""Resumable, verified HTTP(S) downloads for prepare.sh (Python standard library only).

    python3 scripts/fetch.py plan [--offline] URL DEST [URL DEST ...]
    python3 scripts/fetch.py get URL DEST

`get` makes DEST complete: bytes go to DEST.part (with DEST.part.json recording the size and
the server's validator), an existing DEST.part is continued with a Range request, and DEST.part
is renamed to DEST only after the size and, where published, the MD5 check out. A dropped
connection is retried (resuming) PREPARE_RETRIES times; what is left after that stays in
DEST.part for the next run.

`plan` asks every URL for its size before anything is downloaded, so an offline machine or a
wrong mirror is reported at once (each connection waits at most PREPARE_TIMEOUT seconds), and
checks that the disks have room for the downloads plus what they unpack to.

Known sizes and MD5s come from scripts/prepare_manifest.txt (or PREPARE_MANIFEST), keyed by
file name. Exit codes: 0 done, 1 failed (bad file, HTTP error, no space), 3 host unreachable.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CHUNK = 1 << 20
MARGIN = 200 << 20  # keep this much free beyond the estimate
MIRROR_HINT = ("No internet here, or the host is blocked? Point COCO_MIRROR (COCO images and annotations: "
               "<mirror>/zips/train2017.zip, <mirror>/annotations/annotations_trainval2017.zip) or "
               "WEIGHTS_MIRROR (ultralytics/yolov5 release assets: <mirror>/v6.0/yolov5s.pt, "
               "<mirror>/v1.0/coco128.zip, <mirror>/v1.0/coco2017labels.zip) at a reachable mirror and "
               "run prepare.sh again.")


class Failure(Exception):
    """A download that cannot complete; the message says what to do."""
    code = 1


class Unreachable(Failure):
    code = 3


class Interrupted(Exception):
    """The transfer stopped part-way; the bytes so far are kept for a resume."""


def log(msg):
    print(f"[fetch] {msg}", file=sys.stderr, flush=True)


def human(n):
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def load_manifest():
    """{file name: (bytes or None, md5 or None, unpacked bytes or None)}."""
    path = Path(os.environ.get("PREPARE_MANIFEST") or Path(__file__).with_name("prepare_manifest.txt"))
    table = {}
    if not path.is_file():
        raise Failure(f"manifest {path} not found (PREPARE_MANIFEST)")
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 4:
            raise Failure(f"{path}:{n}: expected 'name bytes md5 unpacked_bytes' ('-' for unknown)")
        name, size, md5, unpacked = fields
        try:
            table[name] = (None if size == "-" else int(size), None if md5 == "-" else md5.lower(),
                           None if unpacked == "-" else int(unpacked))
        except ValueError:
            raise Failure(f"{path}:{n}: sizes must be whole numbers of bytes or '-'") from None
    return table


def timeout():
    return float(os.environ.get("PREPARE_TIMEOUT", "10"))


def check_resolves(url):
    """Look the host up with a deadline: urlopen's timeout does not cover a DNS server that never answers."""
    host = urllib.parse.urlsplit(url).hostname or ""
    result = []

    def lookup():
        try:
            result.append(socket.getaddrinfo(host, None))
        except OSError as e:
            result.append(e)

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout())
    if not result:
        raise Unreachable(f"cannot reach {url} (no DNS answer for {host} within {timeout():.0f} s). {MIRROR_HINT}")
    if isinstance(result[0], OSError):
        raise Unreachable(f"cannot reach {url} (cannot resolve {host}: {result[0]}). {MIRROR_HINT}")


def open_url(url, start=0, validator=None, first_byte_only=False):
    """urlopen with a resume offset; network failures become Unreachable naming the URL."""
    headers = {"User-Agent": "yolov5-prepare/1.0", "Accept-Encoding": "identity"}
    if first_byte_only:
        headers["Range"] = "bytes=0-0"
    elif start:
        headers["Range"] = f"bytes={start}-"
        if validator:
            headers["If-Range"] = validator
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout())
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, socket.timeout, OSError) as e:
        reason = getattr(e, "reason", e)
        raise Unreachable(f"cannot reach {url} ({reason}). {MIRROR_HINT}") from None


def http_failure(url, e):
    return Failure(f"{url}: HTTP {e.code} {e.reason}. The file is not on this server; check the URL, or "
                   f"set COCO_MIRROR / WEIGHTS_MIRROR to a mirror that holds it.")


def content_range(header):
    """'bytes 100-199/1000' -> (100, 1000); 'bytes */1000' -> (None, 1000)."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", header or "")
    if not m:
        return None, None
    return (int(m.group(1)) if m.group(1) else None), (int(m.group(2)) if m.group(2) != "*" else None)


def remote_size(url):
    """Total bytes of `url` (None if the server does not say), from a request for its first byte."""
    try:
        with open_url(url, start=0, first_byte_only=True) as r:
            if r.status == 206:
                return content_range(r.headers.get("Content-Range"))[1]
            length = r.headers.get("Content-Length")  # no Range support: the whole file's length
            return int(length) if length and length.isdigit() else None
    except urllib.error.HTTPError as e:
        raise http_failure(url, e) from None


# ----------------------------------------------------------------------------------- plan
def free_dir(path):
    """The nearest existing folder at or above `path` (where the disk-space question applies)."""
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    return p


def cmd_plan(pairs, offline):
    manifest = load_manifest()
    need = {}  # st_dev -> [bytes, folder]
    resolved = set()
    for url, dest in pairs:
        dest = Path(dest)
        host = urllib.parse.urlsplit(url).hostname
        if not offline and host not in resolved:
            check_resolves(url)
            resolved.add(host)
        known_size, _, unpacked = manifest.get(Path(url).name, (None, None, None))
        if dest.is_file():
            size = dest.stat().st_size
        else:
            size = known_size if offline else remote_size(url)
        if known_size is not None and size is not None and size != known_size:
            raise Failure(f"{url} is {size} bytes, but {Path(url).name} should be {known_size} bytes "
                          f"(manifest). The mirror holds a different file; fix the mirror.")
        part = Path(str(dest) + ".part")
        have = part.stat().st_size if part.is_file() else 0
        if unpacked is None:
            unpacked = (size or 0) * 2 if dest.suffix == ".zip" else 0
        if dest.is_file():  # downloaded by an earlier run, waiting to be unpacked or checked
            left = 0
            log(f"{dest}: already downloaded")
        else:
            left = max(0, (size or 0) - have)
            log(f"{url} -> {dest}: {human(size) if size is not None else 'size unknown'}"
                + (f", {human(have)} already downloaded" if have else "")
                + (f", unpacks to ~{human(unpacked)}" if unpacked else ""))
        where = free_dir(dest.parent)
        slot = need.setdefault(where.stat().st_dev, [0, where])
        slot[0] += left + unpacked
    for total, where in need.values():
        free = shutil.disk_usage(where).free
        log(f"disk holding {where}: need ~{human(total + MARGIN)}, free {human(free)}")
        if total + MARGIN > free:
            raise Failure(f"not enough free space in {where}: need about {human(total + MARGIN)} "
                          f"(downloads + unpacked files), {human(free)} free. Free some space or choose "
                          f"another disk with --data-root / --weights-dir.")


# ----------------------------------------------------------------------------------- get
class Progress:
    """One updating line on a terminal, a line per ~10% (or 30 s) otherwise."""

    def __init__(self, name, total, start):
        self.name, self.total, self.start = name, total, start
        self.t0 = self.last = time.time()
        self.last_pct, self.shown = -10, None
        self.tty = sys.stderr.isatty()

    def update(self, done, final=False):
        now = time.time()
        pct = 100.0 * done / self.total if self.total else 0.0
        if done == self.shown:
            return
        if not final and (now - self.last < (1 if self.tty else 30)) and (self.tty or pct < self.last_pct + 10):
            return
        self.last, self.last_pct, self.shown = now, pct, done
        rate = (done - self.start) / max(now - self.t0, 1e-6)
        eta = (self.total - done) / rate if self.total and rate > 0 else 0
        size = f"{human(done)}/{human(self.total)} {pct:5.1f}%" if self.total else human(done)
        line = f"  {self.name}  {size}  {human(rate)}/s  ETA {int(eta // 60)}:{int(eta % 60):02d}"
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)


def md5_of(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def transfer(url, part, meta_path, known_size):
    """One attempt: continue `part` from its current size. Returns when it holds the whole file."""
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    have = part.stat().st_size if part.is_file() else 0
    total = meta.get("total") or known_size
    if have and total is not None and have == total:
        return  # complete from an earlier run; no need to ask the server
    if have and total is not None and have > total:
        log(f"{part.name} is larger than the file ({have} > {total} bytes); starting over")
        part.unlink()
        have = 0
    try:
        r = open_url(url, start=have, validator=meta.get("validator"))
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after `have`: complete if the server's size agrees
            _, size = content_range(e.headers.get("Content-Range"))
            if size == have or (size is None and known_size == have):
                return
            log(f"the server refused to resume {part.name}; starting over")
            part.unlink()
            return transfer(url, part, meta_path, known_size)
        raise http_failure(url, e) from None
    with r:
        if r.status == 206:
            first, size = content_range(r.headers.get("Content-Range"))
            if first != have:
                raise Failure(f"{url}: asked to resume at byte {have}, server answered at {first}")
            mode = "ab"
        else:
            if have:
                log(f"{url}: the server does not resume this file (or it changed); starting over")
            length = r.headers.get("Content-Length")
            size, have, mode = (int(length) if length and length.isdigit() else None), 0, "wb"
        if known_size is not None and size is not None and size != known_size:
            raise Failure(f"{url} is {size} bytes, but {Path(url).name} should be {known_size} bytes "
                          f"(manifest). The mirror holds a different file; fix the mirror.")
        validator = r.headers.get("ETag") or r.headers.get("Last-Modified")
        meta_path.write_text(json.dumps({"url": url, "total": size, "validator": validator}))
        if size is not None and size - have > shutil.disk_usage(part.parent).free:
            raise Failure(f"not enough free space in {part.parent} for the remaining {human(size - have)}")
        progress = Progress(Path(url).name, size, have)
        done = have
        with open(part, mode) as f:
            try:
                while True:
                    block = r.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    done += len(block)
                    progress.update(done)
            except (OSError, http.client.HTTPException) as e:  # resets, timeouts, broken chunks
                progress.update(done, final=True)
                raise Interrupted(f"{type(e).__name__}: {e}") from None
        progress.update(done, final=True)
        if size is not None and done != size:
            raise Interrupted(f"connection closed after {done} of {size} bytes")


def cmd_get(url, dest):
    dest = Path(dest)
    if dest.is_file():
        log(f"{dest} already downloaded")
        return
    known_size, known_md5, _ = load_manifest().get(Path(url).name, (None, None, None))
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = Path(str(dest) + ".part")
    meta_path = Path(str(dest) + ".part.json")
    retries = int(os.environ.get("PREPARE_RETRIES", "3"))
    log(f"{url} -> {dest}" + (f" (resuming at {human(part.stat().st_size)})" if part.is_file() else ""))
    for attempt in range(retries + 1):
        try:
            transfer(url, part, meta_path, known_size)
            break
        except (Interrupted, Unreachable) as e:
            if part.is_file() and part.stat().st_size == 0:
                part.unlink()
            if attempt == 0 and isinstance(e, Unreachable):
                raise  # not reachable at all: say so now instead of retrying
            if attempt == retries:
                kept = f"{human(part.stat().st_size)} kept in {part}" if part.is_file() else "nothing kept"
                raise Failure(f"download of {url} interrupted ({e}); {kept}. Run prepare.sh again to "
                              f"resume. {MIRROR_HINT if isinstance(e, Unreachable) else ''}".rstrip()) from None
            wait = min(2 ** attempt, 10)
            log(f"interrupted ({e}); resuming in {wait} s (attempt {attempt + 2} of {retries + 1})")
            time.sleep(wait)
    if known_md5 is not None:
        log(f"checking the MD5 of {part.name}")
        got = md5_of(part)
        if got != known_md5:
            part.unlink()
            meta_path.unlink()
            raise Failure(f"{dest.name} from {url} is corrupt: MD5 {got}, expected {known_md5}. The damaged "
                          f"download was deleted; run prepare.sh again to fetch it anew.")
    os.replace(part, dest)
    if meta_path.is_file():
        meta_path.unlink()
    log(f"downloaded {dest} ({human(dest.stat().st_size)})")


def main(argv):
    usage = "usage: fetch.py plan [--offline] URL DEST [URL DEST ...] | fetch.py get URL DEST"
    if not argv or argv[0] not in ("plan", "get"):
        print(usage, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    offline = cmd == "plan" and args[:1] == ["--offline"]
    args = args[1:] if offline else args
    if len(args) % 2 or not args or (cmd == "get" and len(args) != 2):
        print(usage, file=sys.stderr)
        return 2
    try:
        if cmd == "plan":
            cmd_plan(list(zip(args[::2], args[1::2])), offline)
        else:
            cmd_get(*args)
    except Failure as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("\ninterrupted; run prepare.sh again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
