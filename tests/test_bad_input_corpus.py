"""One corpus of bad inputs (images, labels, yamls, checkpoints, options) through train, val and detect.

Each case builds its bad input in a folder of its own, runs one entry point with argv, and states the
expected outcome: "skip" (the run finishes, exit 0, and a warning names the file) or "exit2" (one
`ERROR:` line, exit code 2). Across every case: no traceback, no crash, every file that was in the
input folder before the run is still there byte for byte (so no checkpoint is lost or damaged).

Most cases run in this process (the entry points' main(argv), SystemExit caught); the cases marked
`cli` run as real subprocesses, to show end to end that no traceback reaches the user.
"""
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from train_helpers import COCO_NAMES, YOLO_DIR, OneThread, cli_env, train_in_process
from utils.io.checkpoint import build_checkpoint, save_checkpoint

IMG = "48"  # smallest size the stride-32 models take (rounded up to 64); keeps every run quick


# ----------------------------------------------------------------------------------- shared inputs
@pytest.fixture(scope="module")
def model_ckpt(tmp_path_factory):
    """A yolov5n checkpoint (random weights, 80 classes) in the upstream format."""
    from models.yolo import Model
    torch.manual_seed(0)
    with OneThread():
        model = Model("yolov5n.yaml", nc=80)
    return save_checkpoint(build_checkpoint(model), tmp_path_factory.mktemp("ckpt") / "random.pt")


class Case:
    """Where a case builds its input (`root`, hashed before and after) and the paths it shares."""

    def __init__(self, root, real_images_dir, model_ckpt):
        self.root, self.real, self.model_ckpt = root, real_images_dir, model_ckpt

    def dataset(self, n=2):
        """n real images with labels under root/data, and root/data.yaml over them (train = val)."""
        src = sorted((self.real / "images" / "train2017").glob("*.jpg"))[:n]
        (self.root / "data" / "images").mkdir(parents=True, exist_ok=True)
        (self.root / "data" / "labels").mkdir(exist_ok=True)
        for i, im in enumerate(src):
            shutil.copy(im, self.root / "data" / "images" / f"good{i}.jpg")
            shutil.copy(self.real / "labels" / "train2017" / f"{im.stem}.txt",
                        self.root / "data" / "labels" / f"good{i}.txt")
        return self.data_yaml()

    def data_yaml(self, **override):
        cfg = {"path": str(self.root / "data"), "train": "images", "val": "images", "nc": 80, "names": COCO_NAMES}
        cfg.update(override)
        cfg = {k: v for k, v in cfg.items() if v is not None}
        path = self.root / "data.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def image(self, name, data):
        path = self.root / "data" / "images" / name
        path.write_bytes(data)
        return path

    def label(self, name, text, image=True):
        """A label file; with `image`, a real image of the same stem beside it."""
        if image:
            shutil.copy(self.root / "data" / "images" / "good0.jpg", self.root / "data" / "images" / f"{name}.jpg")
        path = self.root / "data" / "labels" / f"{name}.txt"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    def file(self, name, data):
        path = self.root / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    def checkpoint(self):
        return Path(shutil.copy(self.model_ckpt, self.root / "weights.pt"))

    def jpeg_bytes(self):
        return (self.real / "images" / "train2017").glob("*.jpg").__next__().read_bytes()


# ----------------------------------------------------------------------------------- argv builders
def val_argv(c, data, weights=None, *extra):
    return ["--data", str(data), "--weights", str(weights or c.checkpoint()), "--img", IMG, "--batch-size", "4",
            "--device", "cpu", "--workers", "0", "--project", str(c.root.parent / "runs"), "--name", "val",
            *map(str, extra)]


def train_argv(c, data, *extra, cfg="yolov5n.yaml"):
    return ["--data", str(data), "--cfg", cfg, "--weights", "", "--img", IMG, "--batch-size", "2", "--epochs", "1",
            "--device", "cpu", "--workers", "0", "--project", str(c.root.parent / "runs"), "--name", "train",
            *map(str, extra)]


def detect_argv(c, source, weights=None, *extra):
    return ["--weights", str(weights or c.checkpoint()), "--source", str(source), "--img", IMG, "--device", "cpu",
            "--project", str(c.root.parent / "runs"), "--name", "det", *map(str, extra)]


def malicious_pickle():
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    return pickle.dumps({"model": Boom()})


def png_header(w, h):
    """The first bytes of a PNG that claims w x h pixels (PIL refuses past its decompression-bomb limit)."""
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\x00" * 64)


def png_bytes(w, h):
    import cv2
    return cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))[1].tobytes()


def resumable_finished(c):
    """A finished run's folder: runs/train/weights/last.pt with epoch -1 (stripped), opt.yaml beside it."""
    run = c.root / "run"
    (run / "weights").mkdir(parents=True)
    shutil.copy(c.model_ckpt, run / "weights" / "last.pt")
    return run / "weights" / "last.pt"


# ----------------------------------------------------------------------------------- the corpus
# (id, entry, build(case) -> argv, expected outcome, fragment of the message; "{root}" is the case folder)
CASES = [
    # --- images: one bad file among good ones is skipped, named in a warning
    ("img-empty-file", "val", lambda c: (c.dataset(), c.image("bad.jpg", b""), val_argv(c, c.root / "data.yaml"))[-1],
     "skip", "bad.jpg"),
    ("img-truncated-jpeg", "val", lambda c: (c.dataset(), c.image("bad.jpg", c.jpeg_bytes()[:600]), val_argv(c, c.root / "data.yaml"))[-1],
     "skip", "bad.jpg"),
    ("img-text-as-jpeg", "val", lambda c: (c.dataset(), c.image("bad.jpg", b"hello, not a jpeg"), val_argv(c, c.root / "data.yaml"))[-1],
     "skip", "bad.jpg"),
    ("img-html-as-png", "val", lambda c: (c.dataset(), c.image("bad.png", b"<html>404</html>"), val_argv(c, c.root / "data.yaml"))[-1],
     "skip", "bad.png"),
    ("img-all-corrupt", "val", lambda c: (c.dataset(), [c.image(f"good{i}.jpg", b"xx") for i in range(2)],
                                          val_argv(c, c.root / "data.yaml"))[-1], "exit2", "no usable images"),
    ("img-folder-empty", "train", lambda c: (os.makedirs(c.root / "data" / "images"),
                                             train_argv(c, c.data_yaml()))[-1], "exit2", "no images found"),
    ("img-path-missing", "train", lambda c: train_argv(c, c.data_yaml(train="nowhere")), "exit2", "nowhere"),
    ("img-list-missing-files", "val", lambda c: (c.dataset(), c.file("data/list.txt", "./images/good0.jpg\n"
                                                                     "./images/gone.jpg\n"),
                                                 val_argv(c, c.data_yaml(val="list.txt")))[-1], "skip", "gone.jpg"),
    # --- labels: a bad label file skips its image, named in a warning
    ("lbl-negative-coords", "val", lambda c: (c.dataset(), c.label("neg", "0 -0.5 0.5 0.2 0.2\n"),
                                              val_argv(c, c.root / "data.yaml"))[-1], "skip", "neg.jpg"),
    ("lbl-out-of-range", "val", lambda c: (c.dataset(), c.label("big", "0 1.5 0.5 0.2 0.2\n"),
                                           val_argv(c, c.root / "data.yaml"))[-1], "skip", "big.jpg"),
    ("lbl-four-columns", "val", lambda c: (c.dataset(), c.label("cols", "0 0.5 0.5 0.2\n"),
                                           val_argv(c, c.root / "data.yaml"))[-1], "skip", "cols.jpg"),
    ("lbl-words", "val", lambda c: (c.dataset(), c.label("words", "person 0.5 0.5 0.2 0.2\n"),
                                    val_argv(c, c.root / "data.yaml"))[-1], "skip", "words.jpg"),
    ("lbl-nan", "val", lambda c: (c.dataset(), c.label("nan", "0 nan 0.5 0.2 0.2\n"),
                                  val_argv(c, c.root / "data.yaml"))[-1], "skip", "nan.jpg"),
    ("lbl-binary", "val", lambda c: (c.dataset(), c.label("bin", bytes(range(256))),
                                     val_argv(c, c.root / "data.yaml"))[-1], "skip", "bin.jpg"),
    ("lbl-class-too-big", "val", lambda c: (c.dataset(), c.label("cls", "99 0.5 0.5 0.2 0.2\n"),
                                            val_argv(c, c.root / "data.yaml"))[-1], "exit2", "cls.txt"),
    ("lbl-negative-class", "val", lambda c: (c.dataset(), c.label("negcls", "-1 0.5 0.5 0.2 0.2\n"),
                                             val_argv(c, c.root / "data.yaml"))[-1], "skip", "negcls.jpg"),
    ("lbl-duplicate-rows", "val", lambda c: (c.dataset(), c.label("dup", "0 0.5 0.5 0.2 0.2\n" * 2),
                                             val_argv(c, c.root / "data.yaml"))[-1], "skip", "duplicate"),
    ("lbl-none-at-all", "train", lambda c: (c.dataset(), shutil.rmtree(c.root / "data" / "labels"),
                                            train_argv(c, c.root / "data.yaml"))[-1], "exit2", "no label files"),
    # --- data / hyp / model yamls
    ("data-yaml-missing", "train", lambda c: train_argv(c, c.root / "absent.yaml"), "exit2", "absent.yaml"),
    ("data-yaml-bad-syntax", "train", lambda c: train_argv(c, c.file("d.yaml", "train: [unclosed\n")),
     "exit2", "d.yaml"),
    ("data-yaml-a-list", "train", lambda c: train_argv(c, c.file("d.yaml", "- a\n- b\n")), "exit2", "d.yaml"),
    ("data-yaml-empty", "val", lambda c: val_argv(c, c.file("d.yaml", "")), "exit2", "d.yaml"),
    ("data-yaml-binary", "train", lambda c: train_argv(c, c.file("d.yaml", bytes(range(256)) * 4)),
     "exit2", "d.yaml"),
    ("data-yaml-no-train-key", "train", lambda c: (c.dataset(), train_argv(c, c.data_yaml(train=None)))[-1],
     "exit2", "train"),
    ("data-yaml-names-mismatch", "train", lambda c: (c.dataset(), train_argv(c, c.data_yaml(names=["a", "b"])))[-1],
     "exit2", "names"),
    ("data-yaml-nc-text", "train", lambda c: (c.dataset(), train_argv(c, c.data_yaml(nc="many")))[-1],
     "exit2", "nc"),
    ("hyp-missing-key", "train", lambda c: (c.dataset(), train_argv(
        c, c.root / "data.yaml", "--hyp", c.file("h.yaml", "momentum: 0.9\n")))[-1], "exit2", "lr0"),
    ("hyp-bad-syntax", "train", lambda c: (c.dataset(), train_argv(
        c, c.root / "data.yaml", "--hyp", c.file("h.yaml", "lr0: [0.01\n")))[-1], "exit2", "h.yaml"),
    ("hyp-text-value", "train", lambda c: (c.dataset(), train_argv(
        c, c.root / "data.yaml", "--hyp", c.file("h.yaml", (YOLO_DIR / "data/hyps/hyp.scratch.yaml").read_text()
                                                 .replace("lr0: 0.01", "lr0: fast"))))[-1], "exit2", "lr0"),
    ("cfg-missing", "train", lambda c: (c.dataset(), train_argv(c, c.root / "data.yaml", cfg=str(c.root / "m.yaml")))[-1],
     "exit2", "m.yaml"),
    ("cfg-no-backbone", "train", lambda c: (c.dataset(), train_argv(
        c, c.root / "data.yaml", cfg=str(c.file("m.yaml", "nc: 80\ndepth_multiple: 0.33\n"))))[-1], "exit2", "m.yaml"),
    ("cfg-bad-syntax", "train", lambda c: (c.dataset(), train_argv(
        c, c.root / "data.yaml", cfg=str(c.file("m.yaml", "backbone: [[-1, 1, Conv\n"))))[-1], "exit2", "m.yaml"),
    # --- checkpoints
    ("ckpt-empty", "val", lambda c: val_argv(c, c.dataset(), c.file("w.pt", b"")), "exit2", "w.pt"),
    ("ckpt-truncated", "val", lambda c: val_argv(c, c.dataset(), c.file("w.pt", c.model_ckpt.read_bytes()[:5000])),
     "exit2", "w.pt"),
    ("ckpt-text", "detect", lambda c: detect_argv(c, c.dataset() and c.root / "data" / "images",
                                                  c.file("w.pt", "not a checkpoint\n")), "exit2", "w.pt"),
    ("ckpt-malicious-pickle", "detect", lambda c: detect_argv(c, c.dataset() and c.root / "data" / "images",
                                                              c.file("w.pt", malicious_pickle())), "exit2", "refused"),
    ("ckpt-state-dict-only", "detect", lambda c: detect_argv(c, c.dataset() and c.root / "data" / "images", (
        torch.save(torch.load(c.model_ckpt, weights_only=False)["model"].float().state_dict(), c.root / "sd.pt"),
        c.root / "sd.pt")[1]), "exit2", "state_dict"),
    ("ckpt-missing", "val", lambda c: val_argv(c, c.dataset(), c.root / "gone.pt"), "exit2", "gone.pt"),
    ("ckpt-train-weights-corrupt", "train", lambda c: train_argv(c, c.dataset(), "--weights",
                                                                 c.file("w.pt", b"PK\x03\x04broken")),
     "exit2", "w.pt"),
    ("resume-finished-run", "train", lambda c: ["--resume", str(resumable_finished(c))], "exit2", "last.pt"),
    ("resume-missing", "train", lambda c: ["--resume", str(c.root / "nothing" / "last.pt")], "exit2", "last.pt"),
    # --- options
    ("opt-img-zero", "val", lambda c: val_argv(c, c.dataset(), None, "--img", "0"), "exit2", "--img"),
    ("opt-batch-zero", "train", lambda c: (c.dataset(), train_argv(c, c.root / "data.yaml", "--batch-size", "0"))[-1],
     "exit2", "--batch-size"),
    ("opt-epochs-negative", "train", lambda c: (c.dataset(), train_argv(c, c.root / "data.yaml", "--epochs", "-3"))[-1],
     "exit2", "--epochs"),
    ("opt-iters-zero", "train", lambda c: (c.dataset(), train_argv(c, c.root / "data.yaml", "--iters", "0"))[-1],
     "exit2", "--iters"),
    ("opt-device-bogus", "val", lambda c: val_argv(c, c.dataset(), None, "--device", "tpu7"), "exit2", "tpu7"),
    ("opt-source-missing", "detect", lambda c: detect_argv(c, c.root / "no_such_dir"), "exit2", "no_such_dir"),
    ("opt-source-all-broken", "detect", lambda c: (c.file("a.jpg", b"junk"), c.file("b.png", b""),
                                                   detect_argv(c, c.root))[-1], "exit2", "could be"),
    ("opt-conf-above-one", "detect", lambda c: detect_argv(c, c.dataset() and c.root / "data" / "images", None,
                                                           "--conf-thres", "1.5"), "exit2", "--conf-thres"),
    ("img-huge-header", "val", lambda c: (c.dataset(), c.image("bomb.png", png_header(60000, 60000)),
                                          val_argv(c, c.root / "data.yaml"))[-1], "skip", "bomb.png"),
    ("video-not-a-video", "detect", lambda c: detect_argv(c, c.file("clip.mp4", "not a video")), "exit2", "clip.mp4"),
    ("cfg-is-a-data-yaml", "train", lambda c: train_argv(c, c.dataset(), cfg=str(c.root / "data.yaml")),
     "exit2", "data.yaml"),
    ("weights-is-a-yaml", "val", lambda c: val_argv(c, c.dataset(), c.root / "data.yaml"), "exit2", "data.yaml"),
    ("data-is-a-checkpoint", "val", lambda c: val_argv(c, c.checkpoint()), "exit2", "weights.pt"),
    ("source-empty-list", "detect", lambda c: detect_argv(c, c.file("list.txt", "")), "exit2", "list.txt"),
    ("lbl-latin1-text", "val", lambda c: (c.dataset(), c.label("lat", "0 0.5 0.5 0.2 0.2 \xe9\n".encode("latin-1")),
                                          val_argv(c, c.root / "data.yaml"))[-1], "skip", "lat.jpg"),
    ("data-yaml-is-a-folder", "train", lambda c: train_argv(c, (os.makedirs(c.root / "d.yaml"), c.root / "d.yaml")[1]),
     "exit2", "d.yaml"),
    ("data-yaml-names-dict-text-keys", "train", lambda c: (c.dataset(), train_argv(
        c, c.data_yaml(nc=None, names={"cat": 0, "dog": 1})))[-1], "exit2", "names"),
    ("hyp-a-list", "train", lambda c: (c.dataset(), train_argv(c, c.root / "data.yaml", "--hyp",
                                                               c.file("h.yaml", "- 1\n- 2\n")))[-1], "exit2", "h.yaml"),
    ("hyp-missing-file", "train", lambda c: (c.dataset(), train_argv(c, c.root / "data.yaml", "--hyp",
                                                                     c.root / "nohyp.yaml"))[-1], "exit2", "nohyp.yaml"),
    ("cfg-unknown-layer", "train", lambda c: (c.dataset(), train_argv(
        c, c.root / "data.yaml", cfg=str(c.file("m.yaml", (YOLO_DIR / "models/yolov5n.yaml").read_text()
                                               .replace("[-1, 1, SPPF, [1024, 5]]", "[-1, 1, Sppx, [1024, 5]]")))))[-1],
     "exit2", "Sppx"),
    ("cfg-bad-anchors", "train", lambda c: (c.dataset(), train_argv(
        c, c.root / "data.yaml", cfg=str(c.file("m.yaml", (YOLO_DIR / "models/yolov5n.yaml").read_text()
                                               .replace("[10,13, 16,30, 33,23]", "[10,13, 16]")))))[-1],
     "exit2", "m.yaml"),
    ("ckpt-dict-without-model", "val", lambda c: val_argv(c, c.dataset(), (torch.save({"foo": 1}, c.root / "w.pt"),
                                                                           c.root / "w.pt")[1]), "exit2", "w.pt"),
    ("ckpt-plain-tensor", "detect", lambda c: detect_argv(c, c.dataset() and c.root / "data" / "images", (
        torch.save(torch.zeros(3), c.root / "w.pt"), c.root / "w.pt")[1]), "exit2", "w.pt"),
    ("ckpt-is-a-folder", "val", lambda c: val_argv(c, c.dataset(), (os.makedirs(c.root / "w.pt"), c.root / "w.pt")[1]),
     "exit2", "w.pt"),
    ("opt-img-negative", "detect", lambda c: detect_argv(c, c.dataset() and c.root / "data" / "images", None,
                                                         "--img", "-64"), "exit2", "--im"),
    ("opt-workers-negative", "train", lambda c: (c.dataset(), train_argv(c, c.root / "data.yaml", "--workers", "-2"))[-1],
     "exit2", "--workers"),
    ("opt-val-task-test-missing", "val", lambda c: val_argv(c, c.dataset(), None, "--task", "test"), "exit2", "test"),
    ("opt-source-list-missing-entries", "detect", lambda c: detect_argv(c, (c.dataset(), c.file(
        "list.txt", f"{c.root}/data/images/good0.jpg\n{c.root}/gone.jpg\n"))[1]), "exit2", "gone.jpg"),
    ("img-gbk-name-corrupt", "val", lambda c: (c.dataset(), c.image(os.fsdecode(b"\xb2\xe2.jpg"), b"broken"),
                                               val_argv(c, c.root / "data.yaml"))[-1], "skip", "\ufffd\ufffd.jpg"),
    ("img-one-pixel", "val", lambda c: (c.dataset(), c.image("dot.png", png_bytes(1, 1)),
                                        val_argv(c, c.root / "data.yaml"))[-1], "skip", "dot.png"),
    ("lbl-segment-odd-coords", "val", lambda c: (c.dataset(), c.label("seg", "0 0.1 0.1 0.5 0.1 0.5 0.5 0.3\n"),
                                                 val_argv(c, c.root / "data.yaml"))[-1], "skip", "seg.jpg"),
    ("resume-truncated-last", "train", lambda c: ["--resume", str((resumable_finished(c).write_bytes(
        c.model_ckpt.read_bytes()[:3000]), c.root / "run" / "weights" / "last.pt")[1])], "exit2", "last.pt"),
    ("opt-val-batch-zero", "val", lambda c: val_argv(c, c.dataset(), None, "--batch-size", "0"), "exit2", "--batch"),
    ("opt-val-conf-negative", "val", lambda c: val_argv(c, c.dataset(), None, "--conf-thres", "-1"), "exit2", "--conf"),
    ("opt-val-iou-above-one", "val", lambda c: val_argv(c, c.dataset(), None, "--iou-thres", "2"), "exit2", "--iou"),
    ("opt-detect-max-det-zero", "detect", lambda c: detect_argv(c, c.dataset() and c.root / "data" / "images", None,
                                                                "--max-det", "0"), "exit2", "--max-det"),
    ("opt-device-index-missing", "train", lambda c: train_argv(c, c.dataset(), "--device", "7"), "exit2", "7"),
    ("opt-label-smoothing-two", "train", lambda c: train_argv(c, c.dataset(), "--label-smoothing", "2"),
     "exit2", "--label-smoothing"),
    ("opt-freeze-negative", "train", lambda c: train_argv(c, c.dataset(), "--freeze", "-1"), "exit2", "--freeze"),
    ("opt-patience-negative", "train", lambda c: train_argv(c, c.dataset(), "--patience", "-5"), "exit2", "--patience"),
    ("opt-evolve-zero", "train", lambda c: train_argv(c, c.dataset(), "--evolve", "0"),
     "exit2", "--evolve"),
    ("hyp-negative-lr", "train", lambda c: (c.dataset(), train_argv(
        c, c.root / "data.yaml", "--hyp", c.file("h.yaml", (YOLO_DIR / "data/hyps/hyp.scratch.yaml").read_text()
                                                 .replace("lr0: 0.01", "lr0: -0.01"))))[-1], "exit2", "lr0"),
]

CLI = {"data-yaml-bad-syntax", "ckpt-malicious-pickle", "ckpt-truncated"}  # also run as real subprocesses


def _hashes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[p] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _run_in_process(entry, argv):
    import detect
    import val
    fn = {"train": train_in_process, "val": val.main, "detect": detect.main}[entry]
    try:
        with OneThread():
            fn(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


@pytest.mark.parametrize("case_id,entry,build,expected,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_id, entry, build, expected, fragment, tmp_path, real_images_dir, model_ckpt, capsys,
                   monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    monkeypatch.setenv("YOLOV5_CACHE_DIR", str(tmp_path / "cache"))  # label caches of read-only folders
    argv = build(Case(root, real_images_dir, model_ckpt))
    before = _hashes(root)
    code = _run_in_process(entry, argv)
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text
    if expected == "exit2":
        assert code == 2, text[-3000:]
        errors = [ln for ln in err.splitlines() if ln.startswith("ERROR:") or ": error: " in ln]
        assert len(errors) == 1, err[-3000:]
        assert fragment in errors[0], errors[0]
    else:
        assert code == 0, text[-3000:]
        assert any(fragment in ln and "WARNING" in ln for ln in text.splitlines()), text[-3000:]
    after = _hashes(root)
    assert {p: h for p, h in after.items() if p in before} == before  # nothing changed or removed
    if case_id in CLI:
        script = YOLO_DIR / f"{entry}.py"
        run = subprocess.run([sys.executable, str(script), *argv], cwd=YOLO_DIR, env=cli_env(), capture_output=True,
                             timeout=300)
        err = run.stderr.decode(errors="replace")
        assert run.returncode == 2 and "Traceback" not in err, err[-3000:]
        assert [ln for ln in err.splitlines() if ln.startswith("ERROR:")] == [errors[0]]
        assert _hashes(root) == after


def test_the_corpus_is_large_and_states_every_outcome():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[3] for c in CASES} == {"skip", "exit2"} and CLI <= {c[0] for c in CASES}
