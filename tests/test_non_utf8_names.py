"""File names that are not valid UTF-8 (Linux names are bytes): GBK-encoded Chinese and latin-1 names.

Python hands such names around as str with lone surrogates. They must still open the files, and
everything shown or stored as text (logs, plots, json, TensorBoard) shows U+FFFD instead; OpenCV
crashes the whole process (SIGSEGV) on them, so no such str may reach it.
"""
import io
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from train_helpers import COCO_NAMES, OneThread, REPO_ROOT, train_in_process
from utils.data.image_files import open_video, write_image
from utils.printable import escaped, is_printable, printable

GBK = os.fsdecode(b"\xb2\xe2\xca\xd4")  # the GBK bytes of 测试 ("test")
LATIN1 = os.fsdecode(b"caf\xe9")
NAMES = (GBK, LATIN1, "plain_a", "plain_b")


def test_printable_shows_replacement_characters():
    assert printable(GBK + ".jpg") == "\ufffd" * 4 + ".jpg"
    assert printable(LATIN1 + ".jpg") == "caf\ufffd.jpg"
    assert printable("测试.jpg") == "测试.jpg"  # valid UTF-8 names are shown as they are
    assert not is_printable(LATIN1) and is_printable("测试")
    # keys naming files stay unique where the replacement character would merge them
    assert escaped(LATIN1) == "caf\\xe9" != escaped(os.fsdecode(b"caf\xe8")) and escaped("测试") == "测试"


def test_opencv_sinks_survive_undecodable_names(tmp_path):
    """In a child process: on the old code cv2.putText / cv2.imwrite with such a str killed it (exit 139)."""
    code = (
        "import os, sys, numpy as np\n"
        "sys.path.insert(0, 'yolov5')\n"
        "from utils.plots import plot_images\n"
        "name = os.fsdecode(b'caf\\xe9.jpg')\n"
        "imgs = np.zeros((2, 3, 32, 32), np.uint8)\n"
        "t = np.array([[0, 0, .5, .5, .2, .2], [1, 1, .5, .5, .3, .3]])\n"
        "out = plot_images(imgs, t, [name, os.fsdecode(b'\\xb2\\xe2.jpg')], sys.argv[1] + os.fsdecode(b'/m\\xe9.jpg'),\n"
        "                  names=[name])\n"
        "print(os.path.getsize(out) > 0)\n")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT, capture_output=True, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    assert run.stdout.strip() == b"True"


def test_write_image_and_open_video_use_the_real_name(tmp_path):
    im = np.full((48, 64, 3), 90, np.uint8)
    target = tmp_path / (LATIN1 + ".png")
    write_image(target, im)
    assert os.listdir(tmp_path) == [LATIN1 + ".png"]  # the original bytes, not U+FFFD
    assert (cv2.imdecode(np.fromfile(target, np.uint8), cv2.IMREAD_COLOR) == im).all()  # png: lossless
    video = _tiny_video(tmp_path / (GBK + ".mp4"))
    cap = open_video(video)
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
    assert not open_video(tmp_path / (LATIN1 + "_missing.mp4")).isOpened()


def _tiny_video(path):
    ascii_path = str(path.parent / "tmp_video.mp4")
    writer = cv2.VideoWriter(ascii_path, cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    os.replace(ascii_path, path)
    return path


@pytest.fixture(scope="module")
def undecodable_dataset(tmp_path_factory, real_images_dir):
    """4 real coco16 images and labels named GBK / latin-1 / ASCII, in a folder whose name is latin-1."""
    root = tmp_path_factory.mktemp("names") / os.fsdecode(b"donn\xe9es")
    src = sorted((real_images_dir / "images" / "train2017").glob("*.jpg"))[:4]
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, im in zip(NAMES, src):
        shutil.copy(im, root / "images" / f"{name}.jpg")
        shutil.copy(real_images_dir / "labels" / "train2017" / f"{im.stem}.txt", root / "labels" / f"{name}.txt")
    data = root / "data.yaml"
    with open(data, "w", encoding="utf-8", errors="surrogateescape") as f:
        yaml.safe_dump({"path": str(root), "train": "images", "val": "images", "nc": 80, "names": COCO_NAMES}, f)
    return root


def _no_surrogates(text):
    assert is_printable(text), [line for line in text.splitlines() if not is_printable(line)][:3]


def test_train_val_detect_with_undecodable_names(undecodable_dataset, tmp_path, capsys):
    """train (plots on), val (--save-json --save-txt, plots), detect (--save-txt --save-crop, images and a video).

    capsys's stream is strict UTF-8: any unsanitised name in a log line fails here."""
    root = undecodable_dataset
    project, run_name = tmp_path / "runs", os.fsdecode(b"exp\xb2\xe2")  # a run folder named in GBK too
    with OneThread():
        train_in_process(["--data", str(root / "data.yaml"), "--cfg", "yolov5n.yaml", "--weights", "", "--img", "64",
                          "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--workers", "0",
                          "--project", str(project), "--name", run_name])
    out = capsys.readouterr().out
    _no_surrogates(out)
    run_dir = project / run_name
    for f in ("train_batch0.jpg", "val_batch0_labels.jpg", "val_batch0_pred.jpg", "labels.jpg", "results.csv"):
        assert (run_dir / f).stat().st_size > 0, f
    assert "New label cache created: " + printable(root / "labels.cache") in out
    assert "TensorBoard: the run folder " + printable(run_dir) + " has a name that is not valid UTF-8" in out
    assert (root / "labels.cache").is_file()

    import detect
    import val
    weights = run_dir / "weights" / "last.pt"
    with OneThread():
        val.main(["--data", str(root / "data.yaml"), "--weights", str(weights), "--img", "64", "--batch-size", "4",
                  "--device", "cpu", "--workers", "0", "--project", str(project), "--name", "val",
                  "--save-json", "--save-txt", "--save-conf", "--conf-thres", "0.0001"])
    out = capsys.readouterr().out
    _no_surrogates(out)
    val_dir = project / "val"
    assert sorted(os.listdir(val_dir / "labels")) == sorted(f"{n}.txt" for n in NAMES)  # real names kept
    ids = json.loads((val_dir / "last_predictions_image_ids.json").read_text(encoding="utf-8"))
    assert sorted(ids) == sorted(["\\xb2\\xe2\\xca\\xd4", "caf\\xe9", "plain_a", "plain_b"])  # unique keys
    assert (val_dir / "val_batch0_pred.jpg").stat().st_size > 0

    source = tmp_path / "source"
    shutil.copytree(root / "images", source)
    _tiny_video(source / (LATIN1 + "_clip.mp4"))
    with OneThread():
        detect.main(["--weights", str(weights), "--source", str(source), "--img", "64", "--device", "cpu",
                     "--project", str(project), "--name", run_name, "--save-txt", "--save-crop",
                     "--conf-thres", "0.0001", "--max-det", "2"])
    out = capsys.readouterr().out
    _no_surrogates(out)
    assert f"{printable(source / LATIN1)}.jpg: " in out and "caf\ufffd_clip.mp4: " in out
    det_dir = project / (run_name + "2")
    saved = set(os.listdir(det_dir))
    assert {f"{n}.jpg" for n in NAMES} | {LATIN1 + "_clip.mp4"} <= saved
    assert os.path.getsize(det_dir / (LATIN1 + "_clip.mp4")) > 0
    crops = {f for d in os.listdir(det_dir / "crops") for f in os.listdir(det_dir / "crops" / d)}
    assert {f"{n}.jpg" for n in NAMES} <= crops
    assert f"{GBK}.txt" in os.listdir(det_dir / "labels")


def test_export_and_demo_data_print_undecodable_names(tmp_path, capsys):
    """export.py and the demo-data generator print their output paths through the strict capsys stream."""
    import export
    from models.yolo import Model
    from utils.io.checkpoint import save_checkpoint
    from utils.data.demo_data import main as demo_data_main

    folder = tmp_path / GBK
    folder.mkdir()
    weights = folder / (LATIN1 + ".pt")
    torch.manual_seed(0)
    model = Model(str(REPO_ROOT / "yolov5" / "models" / "yolov5n.yaml"), nc=2)
    save_checkpoint({"epoch": -1, "model": model.half(), "optimizer": None}, weights)
    with OneThread():
        export.main(["--weights", str(weights), "--img", "64", "--include", "torchscript", "--device", "cpu"])
    out = capsys.readouterr().out
    _no_surrogates(out)
    assert f"saved as {printable(folder / LATIN1)}.torchscript.pt" in out
    scripted = torch.jit.load(io.BytesIO((folder / (LATIN1 + ".torchscript.pt")).read_bytes()))  # the real name
    assert scripted(torch.zeros(1, 3, 64, 64))[0].shape == (1, 252, 7)

    demo_data_main(["--out", str(folder / "demo"), "--n-train", "2", "--n-val", "1", "--imgsz", "64"])
    out = capsys.readouterr().out
    _no_surrogates(out)
    assert out.strip() == f"demo dataset ready: {printable(folder / 'demo' / 'demo.yaml')}"
