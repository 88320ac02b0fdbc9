"""detect.py end to end: images, a generated video, a stream list, ensembles, crops, bad input.

detect.py runs as a user would (`python detect.py ...` from yolov5/). Its label files are checked
against detections computed here independently: letterbox -> model -> NMS -> scale_coords, on the
upstream-format fixture checkpoint. Its random weights give saturated scores, so a high --conf-thres
and a --classes filter keep ~10 detections per image.
"""
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.experimental import attempt_load
from utils.data.augmentations import letterbox
from utils.boxes import scale_coords, xyxy2xywh
from utils.io.checkpoint import load_checkpoint
from utils.evaluation.nms import non_max_suppression

IMGSZ = 256
CONF, IOU, CLASSES = 0.9, 0.45, (0, 5)
IMAGES = ("000000000009", "000000000025", "000000000030")
VIDEO_FRAMES, VIDEO_FPS = 10, 10


def detect_cli(repo_root, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}  # headless
    return subprocess.run([sys.executable, "detect.py", *map(str, args)], cwd=repo_root / "yolov5",
                          capture_output=True, text=True, timeout=300, env=env)


def common_args(weights, project):
    return ["--weights", weights, "--imgsz", IMGSZ, "--conf-thres", CONF, "--iou-thres", IOU,
            "--classes", *CLASSES, "--project", project]


@pytest.fixture(scope="module")
def weights(upstream_checkpoint):
    return upstream_checkpoint


@pytest.fixture(scope="module")
def model(weights):
    return attempt_load(str(weights))


@torch.no_grad()
def reference(model, im0, copies=1):
    """(n, 6) [cls, x, y, w, h, conf] normalised, in the order detect.py writes them, and pixel xyxy.

    copies > 1: an ensemble of that many copies of `model` (their boxes pooled before NMS)."""
    im = letterbox(im0, IMGSZ, stride=32, auto=True)[0]
    x = torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
    pred = torch.cat([model(x)[0]] * copies, 1)
    det = non_max_suppression(pred, CONF, IOU, classes=CLASSES, max_det=1000)[0]
    det[:, :4] = scale_coords(x.shape[2:], det[:, :4], im0.shape).round()
    h, w = im0.shape[:2]
    xywh = xyxy2xywh(det[:, :4]) / torch.tensor([w, h, w, h])
    rows = torch.cat((det[:, 5:6], xywh, det[:, 4:5]), 1).flip(0)  # lowest score first
    return rows.numpy(), det[:, :4].flip(0).numpy(), tuple(x.shape[2:])


def read_rows(path):
    return np.array([[float(v) for v in line.split()] for line in Path(path).read_text().splitlines()])


def assert_rows_equal(got, expected):
    assert got.shape == expected.shape, f"{got.shape} != {expected.shape}"
    np.testing.assert_array_equal(got[:, 0], expected[:, 0])  # class ids
    np.testing.assert_allclose(got[:, 1:], expected[:, 1:], rtol=0, atol=2e-6)  # '%g' keeps 6 digits


def crop_size(xyxy, shape, gain=1.02, pad=10):
    """Height, width of the crop --save-crop cuts for a pixel box (grown, truncated, clipped)."""
    x1, y1, x2, y2 = xyxy
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * gain + pad, (y2 - y1) * gain + pad
    left, right = np.clip(np.trunc([cx - w / 2, cx + w / 2]), 0, shape[1])
    top, bottom = np.clip(np.trunc([cy - h / 2, cy + h / 2]), 0, shape[0])
    return int(bottom - top), int(right - left)


def make_video(path, image):
    """VIDEO_FRAMES frames of 320x240, the picture shifted 8 px per frame (MJPG in .avi)."""
    base = cv2.resize(cv2.imread(str(image)), (320, 240))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (320, 240))
    for k in range(VIDEO_FRAMES):
        writer.write(np.roll(base, 8 * k, axis=1))
    writer.release()
    return path


def video_frames(path):
    cap, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


# ------------------------------------------------------------------------------------ images
@pytest.fixture(scope="module")
def image_run(repo_root, real_images_dir, weights, tmp_path_factory):
    src = tmp_path_factory.mktemp("images")
    for stem in IMAGES:
        os.symlink(real_images_dir / "images" / "train2017" / f"{stem}.jpg", src / f"{stem}.jpg")
    project = tmp_path_factory.mktemp("runs")
    r = detect_cli(repo_root, *common_args(weights, project), "--source", src, "--save-txt", "--save-conf",
                   "--save-crop", "--view-img", "--visualize")
    assert r.returncode == 0, r.stderr
    return src, project / "exp", r


def test_image_labels_equal_independent_nms(image_run, model):
    src, run_dir, r = image_run
    total = 0
    for k, stem in enumerate(IMAGES, 1):
        im0 = cv2.imread(str(src / f"{stem}.jpg"))
        expected, _, shape = reference(model, im0)
        total += len(expected)
        txt = run_dir / "labels" / f"{stem}.txt"
        if len(expected):
            assert_rows_equal(read_rows(txt), expected)
        else:
            assert not txt.exists()
        counts = Counter(int(c) for c in expected[:, 0])
        words = "".join(f"{counts[c]} {c}{'s' * (counts[c] > 1)}, " for c in sorted(counts))
        assert f"image {k}/3 {src / stem}.jpg: {shape[0]}x{shape[1]} {words}Done. (" in r.stdout
    assert total >= 15  # enough detections for the comparison to mean something
    assert f"Results saved to {run_dir}" in r.stdout
    assert f"{len(IMAGES)} labels saved to {run_dir / 'labels'}" in r.stdout


def test_annotated_images_are_written(image_run):
    src, run_dir, _ = image_run
    for stem in IMAGES:
        original = cv2.imread(str(src / f"{stem}.jpg"))
        annotated = cv2.imread(str(run_dir / f"{stem}.jpg"))
        assert annotated.shape == original.shape
        assert np.abs(annotated.astype(int) - original).max() > 100  # boxes drawn, not a copy


def test_view_img_on_headless_machine_warns_and_still_saves(image_run):
    _, run_dir, r = image_run
    assert "--view-img: cannot show a window here" in r.stdout
    assert "Traceback" not in r.stderr
    assert (run_dir / f"{IMAGES[0]}.jpg").is_file()


def test_crops_have_the_expected_sizes(image_run, model):
    src, run_dir, _ = image_run
    expected = {c: Counter() for c in CLASSES}
    for stem in IMAGES:
        im0 = cv2.imread(str(src / f"{stem}.jpg"))
        rows, boxes, _ = reference(model, im0)
        for cls, box in zip(rows[:, 0], boxes):
            expected[int(cls)][crop_size(box, im0.shape)] += 1
    for c in CLASSES:
        got = Counter(cv2.imread(str(f)).shape[:2] for f in (run_dir / "crops" / str(c)).glob("*.jpg"))
        assert got == expected[c] and sum(got.values()) > 0


def test_visualize_saves_one_feature_map_per_stage(image_run, model):
    _, run_dir, _ = image_run
    expected = {f"stage{m.i}_{m.type.split('.')[-1]}_features.png" for m in model.model if "Detect" not in m.type}
    for stem in IMAGES:
        assert {p.name for p in (run_dir / stem).glob("*.png")} == expected
    sheet = cv2.imread(str(run_dir / IMAGES[0] / "stage0_Conv_features.png"))
    assert sheet is not None and sheet.shape[1] > sheet.shape[0] > 0  # 16 channels: 8 x 2 tiles


# ------------------------------------------------------------------------------------ video
def test_video_and_update(repo_root, real_images_dir, weights, model, tmp_path):
    video = make_video(tmp_path / "clip.avi", real_images_dir / "images" / "train2017" / f"{IMAGES[0]}.jpg")
    ckpt = load_checkpoint(weights)  # a training checkpoint: --update must strip the optimizer
    ckpt.update(epoch=7, optimizer={"state": {}, "param_groups": []})
    w = tmp_path / "train_last.pt"
    torch.save(ckpt, w)
    r = detect_cli(repo_root, *common_args(w, tmp_path / "runs"), "--source", video, "--save-txt", "--update")
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / "runs" / "exp"
    frames = video_frames(video)
    assert len(frames) == VIDEO_FRAMES
    n_rows = 0
    for k, frame in enumerate(frames, 1):
        expected = reference(model, frame)[0][:, :5]  # no --save-conf: 5 columns
        n_rows += len(expected)
        assert_rows_equal(read_rows(run_dir / "labels" / f"clip_{k}.txt"), expected)
        assert f"video 1/1 ({k}/{VIDEO_FRAMES}) {video}: " in r.stdout
    assert n_rows >= 20
    out = video_frames(run_dir / "clip.mp4")
    assert len(out) == VIDEO_FRAMES and out[0].shape == frames[0].shape
    stripped = load_checkpoint(w)
    assert stripped["optimizer"] is None and stripped["epoch"] == -1


def test_stream_list_source(repo_root, real_images_dir, weights, model, tmp_path):
    video = make_video(tmp_path / "cam.avi", real_images_dir / "images" / "train2017" / f"{IMAGES[1]}.jpg")
    streams = tmp_path / "streams.txt"
    streams.write_text(f"{video}\n")
    r = detect_cli(repo_root, *common_args(weights, tmp_path / "runs"), "--source", streams, "--save-txt",
                   "--save-conf")
    assert r.returncode == 0, r.stderr
    assert f"1/1: {video}... success ({VIDEO_FRAMES} frames 320x240 at {VIDEO_FPS:.2f} FPS)" in r.stdout
    per_frame = [reference(model, f)[0] for f in video_frames(video)]
    labels = sorted((tmp_path / "runs" / "exp" / "labels").glob("cam_*.txt"))
    assert labels, r.stdout
    for txt in labels:  # the live reader may skip or repeat frames: each batch is one of the frames
        got = read_rows(txt)
        assert any(got.shape == e.shape and np.allclose(got, e, rtol=0, atol=2e-6) for e in per_frame), txt.name
    assert not list((tmp_path / "runs" / "exp").glob("*.mp4"))  # .txt stream lists are not saved (v6.0)


def test_ensemble_pools_boxes_of_both_models(repo_root, real_images_dir, weights, model, tmp_path):
    image = real_images_dir / "images" / "train2017" / f"{IMAGES[0]}.jpg"
    r = detect_cli(repo_root, "--weights", weights, weights, "--imgsz", IMGSZ, "--conf-thres", CONF,
                   "--classes", *CLASSES, "--project", tmp_path, "--save-txt", "--save-conf", "--nosave",
                   "--source", image)
    assert r.returncode == 0, r.stderr
    assert "Ensemble created" in r.stdout
    expected = reference(model, cv2.imread(str(image)), copies=2)[0]
    assert_rows_equal(read_rows(tmp_path / "exp" / "labels" / f"{IMAGES[0]}.txt"), expected)
    # Identical boxes suppress each other; only zero-area ones (IoU 0) survive twice.
    single = reference(model, cv2.imread(str(image)))[0]
    assert len(single) < len(expected) < 2 * len(single)
    assert not (tmp_path / "exp" / f"{IMAGES[0]}.jpg").exists()  # --nosave


# ------------------------------------------------------------------------------------ bad input
def test_missing_weights_is_a_one_line_error(repo_root, real_images_dir, tmp_path):
    r = detect_cli(repo_root, "--weights", tmp_path / "nope.pt", "--source", real_images_dir / "images" / "train2017",
                   "--project", tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: --weights") and "nope.pt: file not found" in lines[0]


def test_missing_source_is_a_one_line_error(repo_root, weights, tmp_path):
    r = detect_cli(repo_root, "--weights", weights, "--source", tmp_path / "nowhere", "--project", tmp_path,
                   "--imgsz", IMGSZ)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: --source") and "does not exist" in lines[0], r.stderr


def test_stream_sources_that_cannot_open_are_user_errors(tmp_path):
    from utils.errors import UserError
    from utils.inference.stream_sources import LoadStreams

    with pytest.raises(UserError, match="stream list file not found"):
        LoadStreams(str(tmp_path / "none.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="the stream list is empty"):
        LoadStreams(str(empty))
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{tmp_path / 'no_such_stream.mp4'}\n")
    with pytest.raises(UserError, match="cannot open stream .*no_such_stream.mp4"):
        LoadStreams(str(bad))


@pytest.mark.parametrize("source, kind", [("0", "stream"), ("streams.txt", "stream"), ("rtsp://cam/live", "stream"),
                                          ("https://host/a.jpg", "url-file"), ("data/images", "files"),
                                          ("clip.mp4", "files"), ("imgs/*.jpg", "files")])
def test_source_kind(source, kind):
    from utils.inference.detector import source_kind

    assert source_kind(source) == kind


def test_display_check_without_display(monkeypatch):
    from utils.inference.detector import display_unavailable_reason

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    reason = display_unavailable_reason()
    assert reason is not None and ("DISPLAY" in reason or "GUI" in reason)
