"""detect.run and export.run called as v6.0 scripts call them: every option by position, in v6.0's order.

The options are keyword-only in our signatures; these calls prove each position still lands on the
option v6.0 gave it, by options whose effect is visible in the output files.
"""
import inspect
import io
import json
import shutil

import pytest
import torch

import detect
import export
from train_helpers import OneThread
from utils.cli import set_logging

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:FutureWarning")]

# v6.0 detect.run, without its last parameter `dnn` (ONNX models through OpenCV, not offered here)
V60_DETECT = ("weights", "source", "imgsz", "conf_thres", "iou_thres", "max_det", "device", "view_img", "save_txt",
              "save_conf", "save_crop", "nosave", "classes", "agnostic_nms", "augment", "visualize", "update",
              "project", "name", "exist_ok", "line_thickness", "hide_labels", "hide_conf", "half")
V60_EXPORT = ("data", "weights", "imgsz", "batch_size", "device", "include", "half", "inplace", "train", "optimize",
              "int8", "dynamic", "simplify", "opset", "topk_per_class", "topk_all", "iou_thres", "conf_thres")


def test_signatures_list_the_v60_order():
    assert tuple(inspect.signature(detect.run).parameters) == V60_DETECT
    assert tuple(inspect.signature(export.run).parameters) == V60_EXPORT


def test_detect_run_by_position(upstream_checkpoint, real_images_dir, tmp_path, capsys):
    image = sorted((real_images_dir / "images" / "train2017").glob("*.jpg"))[0]
    options = dict(weights=str(upstream_checkpoint), source=str(image), imgsz=[96, 128], conf_thres=0.5,
                   iou_thres=0.45, max_det=3, device="cpu", view_img=False, save_txt=True, save_conf=True,
                   save_crop=False, nosave=True, classes=[0, 5], agnostic_nms=False, augment=False, visualize=False,
                   update=False, project=tmp_path, name="pos", exist_ok=False, line_thickness=None,
                   hide_labels=False, hide_conf=False, half=False)
    assert tuple(options) == V60_DETECT
    set_logging()  # pytest's root handlers make run() leave logging alone
    with OneThread():
        by_position = detect.run(*options.values())
        out = capsys.readouterr().out
        by_name = detect.run(**{**options, "name": "kw"})

    assert by_position == tmp_path / "pos"
    assert sorted(p.name for p in by_position.iterdir()) == ["labels"]  # nosave: no annotated image
    rows = (by_position / "labels" / f"{image.stem}.txt").read_text().splitlines()
    assert rows == (by_name / "labels" / f"{image.stem}.txt").read_text().splitlines()
    values = [[float(v) for v in row.split()] for row in rows]
    assert len(values) == 3  # max_det (the fixture's random weights give ~10 boxes of these classes)
    assert all(len(v) == 6 and v[0] in (0, 5) and 0.5 <= v[5] <= 1 for v in values)  # save_conf, classes, conf
    assert "at shape (1, 3, 96, 128)" in out and f"1 labels saved to {by_position / 'labels'}" in out


def test_export_run_by_position(upstream_checkpoint, tmp_path, capsys):
    weights = tmp_path / "fixture.pt"
    shutil.copyfile(upstream_checkpoint, weights)
    set_logging()
    with OneThread():
        files = export.run("data/coco128.yaml", str(weights), (64, 96), 2, "cpu", ("torchscript",), False, False,
                           False, False, False, False, False, 12, 100, 100, 0.45, 0.25)
    out = capsys.readouterr().out
    assert [f.resolve() for f in files] == [(tmp_path / "fixture.torchscript.pt").resolve()]
    extra = {"config.txt": ""}
    scripted = torch.jit.load(io.BytesIO(files[0].read_bytes()), _extra_files=extra)
    meta = json.loads(extra["config.txt"])
    assert meta["shape"] == [2, 3, 64, 96] and meta["stride"] == 32 and len(meta["names"]) == 80
    anchors = 3 * (8 * 12 + 4 * 6 + 2 * 3)  # three anchors per cell of the stride 8, 16, 32 grids
    assert scripted(torch.zeros(2, 3, 64, 96))[0].shape == (2, anchors, 85)
    assert ("WARNING: --data, --topk-per-class, --topk-all, --iou-thres, --conf-thres only apply to "
            "TensorFlow/CoreML exports, which are not offered here; ignored") in out
    assert "\nTorchScript: starting export with torch" in out and "fixture.torchscript.pt" in out
