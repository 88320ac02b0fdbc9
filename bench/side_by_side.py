"""Run our code and an upstream YOLOv5 checkout in the same benchmark, each in its own process.

Both code bases name their packages `models` and `utils`, so one Python process can hold only one of
them: every implementation lives in a worker process (spawned, so it starts with nothing imported)
whose import path puts exactly one code base first. The parent only orchestrates: it asks the
workers in turn to do one unit of work and collects the figures, so machine load hits both alike.

The upstream checkout is never modified: it is copied to a temporary folder and ported there with
our porting tool's `--modernize` fixes (the ones an old tree needs on a current Python, numpy and
torch stack). Optional packages upstream imports at module level but the benchmarks never call
(pandas, seaborn, requests, thop) are replaced by placeholders when they are not installed. The
placeholders are real package folders on the upstream worker's import path (sys.path and PYTHONPATH),
so processes it starts in turn (upstream's label-verification Pool, DataLoader workers) import them too.
"""
import importlib
import importlib.util
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OURS = REPO / "yolov5"
UPSTREAM_FILES = ("train.py", "val.py", "models/yolo.py", "utils/datasets.py", "utils/loss.py", "utils/general.py")
UNUSED_OPTIONAL = ("pandas", "seaborn", "requests", "thop")


GET_UPSTREAM = "git clone -b v6.0 --depth 1 https://github.com/ultralytics/yolov5 DIR"


def add_upstream_argument(ap):
    ap.add_argument("--upstream", metavar="DIR",
                    help="an upstream YOLOv5 v6.0 checkout (outside this repository; it is copied, not changed) "
                         f"to measure side by side with ours. Get one with: {GET_UPSTREAM}")


def say_ours_only(script):
    """The line printed instead of a comparison when no --upstream was given."""
    print(f"only our figures: no --upstream given. For ours / upstream side by side in one run: {GET_UPSTREAM}; "
          f"then .venv/bin/python bench/{script} --upstream DIR")


def prepare_upstream(path, workdir):
    """A ported copy of the upstream checkout `path` inside `workdir`; exits with one line if it is not one."""
    src = Path(path).expanduser().resolve()
    missing = [f for f in UPSTREAM_FILES if not (src / f).is_file()]
    if missing:
        _user_error(f"--upstream {path}: not a YOLOv5 checkout (missing {', '.join(missing)}); "
                    f"pass the folder that holds upstream's train.py")
    if src == REPO or REPO in src.parents or src == OURS:
        _user_error(f"--upstream {path}: that is this repository; pass an upstream YOLOv5 checkout")
    dst = Path(workdir) / "upstream"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".git", "runs", "*.pt", "datasets", "__pycache__"))
    port = subprocess.run([sys.executable, str(REPO / "tools" / "porting" / "port_yolov5.py"), str(dst),
                           "--modernize"], capture_output=True, text=True)
    if port.returncode != 0:
        _user_error(f"--upstream {path}: the porting tool could not prepare a copy to run:\n{port.stdout}{port.stderr}")
    _write_placeholders(dst.parent / "placeholders")
    return dst


# A placeholder package's __init__.py: the module turns itself into an instance of the class below.
_PLACEHOLDER_SOURCE = '''"""Placeholder for an optional package that is not installed (written by bench/side_by_side.py)."""
import sys
import types


class Placeholder(types.ModuleType):
    """Attribute reads and writes work; calling anything fails loudly."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = Placeholder(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.__name__} is not installed; the benchmark did not expect to call it")


sys.modules[__name__].__class__ = Placeholder
'''


def _user_error(message):
    print(message, file=sys.stderr)
    sys.exit(2)


def _write_placeholders(folder, names=UNUSED_OPTIONAL):
    """A package folder per optional package (of `names`) this interpreter cannot import."""
    folder.mkdir(exist_ok=True)
    for name in names:
        if importlib.util.find_spec(name) is None:
            (folder / name).mkdir(exist_ok=True)
            (folder / name / "__init__.py").write_text(_PLACEHOLDER_SOURCE)


def _enter(root, upstream):
    """Make `root` the code base this process imports `models` and `utils` from."""
    for p in (str(OURS), str(REPO)):
        while p in sys.path:
            sys.path.remove(p)
    sys.path[:0] = [str(root), str(BENCH)]
    if upstream:
        # Last on the path, so an installed package always wins over its placeholder; PYTHONPATH
        # carries the folder to any interpreter this worker starts.
        placeholders = str(Path(root).parent / "placeholders")
        sys.path.append(placeholders)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(root), str(BENCH), *filter(None, [os.environ.get("PYTHONPATH")]), placeholders])


def _serve(conn, root, upstream, module, cls, kwargs):
    _enter(root, upstream)
    try:
        obj = getattr(importlib.import_module(module), cls)(**kwargs)
    except BaseException as e:  # report, then let the parent say which side failed
        conn.send(("error", f"{type(e).__name__}: {e}"))
        raise
    conn.send(("ok", None))
    while True:
        method, args = conn.recv()
        if method is None:
            return
        try:
            conn.send(("ok", getattr(obj, method)(*args)))
        except BaseException as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))
            raise


class Worker:
    """One implementation (`module.cls(**kwargs)`, built in its own process) answering method calls."""

    def __init__(self, name, root, module, cls, upstream=False, **kwargs):
        self.name = name
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        # Not daemonic: a loader benchmark's worker starts DataLoader workers of its own.
        self.proc = ctx.Process(target=_serve, args=(child, str(root), upstream, module, cls, kwargs))
        self.proc.start()
        _LIVE.append(self)
        self._recv()

    def _recv(self):
        while not self.conn.poll(1.0):
            if not self.proc.is_alive():
                _fail(f"{self.name}: benchmark worker exited with code {self.proc.exitcode} (traceback above)")
        status, value = self.conn.recv()
        if status == "error":
            _fail(f"{self.name}: {value} (traceback above)")
        return value

    def call(self, method, *args):
        self.conn.send((method, args))
        return self._recv()

    def close(self):
        if self.proc.is_alive():
            self.conn.send((None, ()))
            self.proc.join(timeout=60)
        if self.proc.is_alive():
            self.proc.kill()
        if self in _LIVE:
            _LIVE.remove(self)


_LIVE = []


def _fail(message):
    """Stop every worker (they are not daemonic, so exit would wait for them), then exit with the message."""
    for w in _LIVE:
        w.proc.kill()
    sys.exit(message)


def prepared_upstream(upstream_dir, workdir):
    """The ported copy of `upstream_dir` in `workdir`, made on first use."""
    dst = Path(workdir) / "upstream"
    return dst if dst.is_dir() else prepare_upstream(upstream_dir, workdir)


def side_roots(upstream_dir, workdir):
    """(names, {name: source root}) of the sides to compare: ours, and upstream's ported copy if given."""
    roots = {"ours": OURS}
    if upstream_dir:
        roots["upstream"] = prepared_upstream(upstream_dir, workdir)
    return list(roots), roots


def ratio_text(per_round, digits=2):
    """'median (median of per-round ratios, range lo-hi' for the ratios of alternating rounds."""
    values = [float(v) for v in per_round]
    return (f"{statistics.median(values):.{digits}f} (median of per-round ratios, range "
            f"{min(values):.{digits}f}-{max(values):.{digits}f}")


def profile_and_close(sides, heading, *args):
    """Print each side's profile (when `heading` is given: the text after the side's name), then stop
    every side's worker."""
    if heading:
        for side in sides:
            print(f"--- {side.name}: {heading}")
            print(side.call("profile", *args))
    for side in sides:
        side.close()


def check_data_dir(ap, data_dir):
    """argparse error unless `data_dir` is laid out as coco128 (images/train2017)."""
    if not (Path(data_dir) / "images" / "train2017").is_dir():
        ap.error(f"--data-dir {data_dir}: no images/train2017 folder in it")


def default_data_dir():
    """coco128 beside the checkout where it is, else the 16 coco128 images committed for the tests."""
    shared = REPO.parent / "shared" / "data" / "coco128"
    return shared if shared.is_dir() else REPO / "tests" / "data" / "coco16"


def alternate(workers, rounds, fn):
    """Call fn(worker) `rounds` times per worker, switching who goes first each round: no position bias."""
    for r in range(rounds):
        for w in (workers if r % 2 == 0 else workers[::-1]):
            fn(w, r)


def scratch_dir(prefix):
    return tempfile.TemporaryDirectory(prefix=prefix)
