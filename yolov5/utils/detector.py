"""The detect.py run loop: sources -> model -> NMS -> annotated images/videos, label txt files, crops.

Behaviour follows upstream v6.0 detect.py: letterbox with minimum-rectangle
padding, NMS with the CLI thresholds (single label per box), boxes mapped back to the original
image and rounded to whole pixels, label rows `cls x y w h [conf]` normalised by the original image
size in '%g' format, written lowest score first. Post-v6.0 fixes followed: result videos always get
an .mp4 suffix (v6.1), --update strips every given checkpoint (v6.0 passed the list as one path).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.boxes import clip_coords, scale_coords, xywh2xyxy, xyxy2xywh
from utils.errors import UserError
from utils.image_files import IMG_FORMATS, VID_FORMATS, is_printable, printable, write_image
from utils.image_size import check_img_size
from utils.model_files import find_weights
from utils.nms import non_max_suppression
from utils.plots import auto_line_width, class_colour, draw_box
from utils.run_dir import increment_path
from utils.train_imgsz import resolve_imgsz

LOGGER = logging.getLogger("yolov5")
YOLO_ROOT = Path(__file__).resolve().parents[1]
EXPORTED_SUFFIXES = (".onnx", ".engine", ".mlmodel", ".tflite", ".pb", ".xml", ".mm", ".magicmind")
VIDEO_FOURCC = "mp4v"


# ------------------------------------------------------------------------------------ inputs
def source_kind(source) -> str:
    """'stream' for a webcam index, a .txt list of streams or a stream URL, 'url-file' for a URL
    naming an image/video file, else 'files' (image, folder, glob or video file)."""
    s = str(source)
    suffix = Path(s).suffix[1:].lower()
    is_url = s.lower().startswith(("rtsp://", "rtmp://", "http://", "https://"))
    if is_url and suffix in IMG_FORMATS + VID_FORMATS:
        return "url-file"
    if s.isnumeric() or s.endswith(".txt") or is_url:
        return "stream"
    return "files"


def open_source(source, imgsz, stride):
    """The dataset object for `source` (LoadImages or LoadStreams)."""
    kind = source_kind(source)
    if kind == "url-file":
        raise UserError(f"--source {source}: downloading files is not supported here; download it "
                        "first and pass the local path")
    if kind == "stream":
        from utils.stream_sources import LoadStreams
        return LoadStreams(source, img_size=imgsz, stride=stride)
    from utils.inference_sources import LoadImages
    return LoadImages(source, img_size=imgsz, stride=stride)


def check_weights(weights):
    """Every --weights entry must be an existing PyTorch checkpoint file."""
    paths = weights if isinstance(weights, (list, tuple)) else [weights]
    for w in paths:
        if Path(w).suffix.lower() in EXPORTED_SUFFIXES:
            raise UserError(f"--weights {w}: detect.py runs PyTorch checkpoints (.pt); this is an exported "
                            "model, run it with its own runtime (onnxruntime, MagicMind, TensorRT)")
    return [find_weights(w) for w in paths]


# ------------------------------------------------------------------------------------ display
def display_unavailable_reason():
    """None if OpenCV can open a window here, else a short reason (checked without crashing)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"  # a GUI OpenCV build would abort trying
    try:
        cv2.imshow("yolov5-display-check", np.zeros((1, 1, 3), np.uint8))
        cv2.waitKey(1)
        cv2.destroyAllWindows()
        cv2.waitKey(1)
    except cv2.error:
        return "this OpenCV build has no GUI support (opencv-python-headless)"
    return None


# ------------------------------------------------------------------------------------ outputs
def save_one_box(xyxy, im, file=Path("im.jpg"), gain=1.02, pad=10, square=False, BGR=False, save=True):
    """Crop box `xyxy` (grown by `gain` and `pad` pixels, clipped to the image) out of BGR image `im`.

    Saved under `file`, numbered (x.jpg, x2.jpg, ...) when the name is taken. Returns the crop (BGR
    when `BGR`, else RGB).
    """
    b = xyxy2xywh(torch.tensor([float(v) for v in xyxy]).view(-1, 4))
    if square:
        b[:, 2:] = b[:, 2:].max(1)[0].unsqueeze(1)
    b[:, 2:] = b[:, 2:] * gain + pad
    box = xywh2xyxy(b).long()
    clip_coords(box, im.shape)
    x1, y1, x2, y2 = (int(v) for v in box[0])
    crop = im[y1:y2, x1:x2, ::(1 if BGR else -1)]
    if save and crop.size:  # a zero-area box clipped at the border has nothing to save
        file = Path(file)
        file.parent.mkdir(parents=True, exist_ok=True)
        bgr = crop if BGR else crop[..., ::-1]  # files are always written in BGR order
        write_image(increment_path(file).with_suffix(".jpg"), np.ascontiguousarray(bgr))
    return crop


def label_lines(det, im0_shape, save_conf):
    """Label txt rows for detections `det` (n, 6) already in original-image pixels, lowest score first."""
    gn = torch.tensor(im0_shape)[[1, 0, 1, 0]].float()
    lines = []
    for *xyxy, conf, cls in reversed(det.tolist()):
        xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
        line = (cls, *xywh, conf) if save_conf else (cls, *xywh)
        lines.append(("%g " * len(line)).rstrip() % line)
    return lines


def draw_and_crop(det, im0, names, style, crop_dir=None, stem="im"):
    """Draw detections (original-image pixels) on im0 in place, lowest score first (drawn under the
    best ones); with `crop_dir`, save each box's crop from an undrawn copy to crop_dir/<class>/."""
    clean = im0.copy() if crop_dir is not None else None
    for *xyxy, conf, cls in reversed(det.tolist()):
        c = int(cls)
        label = "" if style["hide_labels"] else (names[c] if style["hide_conf"] else f"{names[c]} {conf:.2f}")
        draw_box(im0, xyxy, label, class_colour(c), style["line_width"] or auto_line_width(im0.shape))
        if crop_dir is not None:
            save_one_box(xyxy, clean, file=Path(crop_dir) / names[c] / f"{stem}.jpg", BGR=True)


class VideoSaver:
    """One cv2.VideoWriter per batch slot, reopened whenever that slot's output path changes.

    OpenCV crashes on paths that are not valid UTF-8: such a video is written under a temporary
    name in the system's temp folder and moved to its real path when the writer is released.
    """

    def __init__(self, slots):
        self.paths, self.writers = [None] * slots, [None] * slots
        self.temp = [None] * slots

    def write(self, i, save_path, frame, vid_cap):
        save_path = str(Path(save_path).with_suffix(".mp4"))
        if self.paths[i] != save_path:
            self._release(i)
            fps = vid_cap.get(cv2.CAP_PROP_FPS) if vid_cap is not None else 0
            fps = fps if fps and np.isfinite(fps) and fps > 0 else 30
            h, w = frame.shape[:2]
            target = save_path
            if not is_printable(save_path):
                # a fresh folder, so the file gets the usual mode (mkstemp's would be 0600)
                target = os.path.join(tempfile.mkdtemp(prefix="yolov5-video-"), "video.mp4")
                self.temp[i] = target
            self.writers[i] = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps, (w, h))
            self.paths[i] = save_path
        self.writers[i].write(frame)

    def _release(self, i):
        if self.writers[i] is not None:
            self.writers[i].release()
            if self.temp[i] is not None:
                if os.path.exists(self.temp[i]):
                    shutil.move(self.temp[i], self.paths[i])
                shutil.rmtree(os.path.dirname(self.temp[i]), ignore_errors=True)
        self.writers[i], self.temp[i] = None, None

    def close(self):
        for i in range(len(self.writers)):
            self._release(i)


class _QuitRequested(Exception):
    """The user pressed q in a --view-img window."""


def describe(det, names):
    """'2 persons, 1 bus, ' for the detections of one image (v6.0 wording)."""
    s = ""
    for c in det[:, 5].unique():
        n = int((det[:, 5] == c).sum())
        s += f"{n} {names[int(c)]}{'s' * (n > 1)}, "
    return s


# ------------------------------------------------------------------------------------ run
@torch.no_grad()
def run(weights=YOLO_ROOT / "yolov5s.pt", source=YOLO_ROOT / "data/images", imgsz=None, conf_thres=0.25,
        iou_thres=0.45, max_det=1000, device="", view_img=False, save_txt=False, save_conf=False,
        save_crop=False, nosave=False, classes=None, agnostic_nms=False, augment=False, visualize=False,
        update=False, project=YOLO_ROOT / "runs/detect", name="exp", exist_ok=False, line_thickness=None,
        hide_labels=False, hide_conf=False, half=False):
    """Detect objects in `source` with `weights`; returns the run directory.

    imgsz: int or [h, w]; None means the training size stored in the checkpoint, else 640.
    line_thickness: box lines in pixels; None scales them with each image (auto_line_width)."""
    from models.experimental import attempt_load
    from utils.devices import select_device

    source = str(source)
    weight_files = check_weights(weights)
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise UserError(f"--conf-thres {conf_thres} / --iou-thres {iou_thres}: both must be in [0, 1]")
    save_img = not nosave and not source.endswith(".txt")
    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)

    dev = select_device(device)
    half = bool(half) and dev.kind != "cpu"
    model = attempt_load(weight_files if len(weight_files) > 1 else weight_files[0], map_location=dev.torch_device)
    stride = int(model.stride.max())
    names = getattr(model, "names", None) or [str(i) for i in range(int(getattr(model, "nc", 80)))]
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    if half:
        model.half()
    imgsz = check_img_size(resolve_imgsz(imgsz, model, "detect.py"), s=stride)
    if isinstance(imgsz, int):
        imgsz = [imgsz, imgsz]

    if view_img:
        reason = display_unavailable_reason()
        if reason:
            print(f"WARNING: --view-img: cannot show a window here: {reason}; results are still saved to "
                  f"{printable(save_dir)}")
            view_img = False
    dataset = open_source(source, imgsz, stride)
    streaming = dataset.mode == "stream"
    videos = VideoSaver(len(dataset) if streaming else 1)
    recorder = None
    if visualize:
        from utils.feature_maps import FeatureMapRecorder
        recorder = FeatureMapRecorder(model)

    style = {"line_width": line_thickness, "hide_labels": hide_labels, "hide_conf": hide_conf}
    params = next(model.parameters())
    if dev.kind != "cpu":  # warm-up so the first timing is not the kernel set-up
        model(torch.zeros(1, 3, *imgsz, device=dev.torch_device, dtype=params.dtype))
    dt, seen = [0.0, 0.0, 0.0], 0
    try:
        for path, img, im0s, vid_cap, info in dataset:
            t1 = time.perf_counter()
            im = torch.from_numpy(img).to(dev.torch_device)
            im = (im.half() if half else im.float()) / 255
            if im.dim() == 3:
                im = im[None]
            dev.synchronize()
            t2 = time.perf_counter()
            dt[0] += t2 - t1

            if recorder is not None:
                first = path[0] if streaming else path
                recorder.save_dir = increment_path(save_dir / Path(first).stem, mkdir=True)
            pred = model(im, augment=augment)[0]
            dev.synchronize()
            t3 = time.perf_counter()
            dt[1] += t3 - t2
            pred = non_max_suppression(pred.float().to(dev.postprocess_device), conf_thres, iou_thres, classes,
                                       agnostic_nms, max_det=max_det)
            dt[2] += time.perf_counter() - t3

            for i, det in enumerate(pred):
                seen += 1
                if streaming:
                    p, s, im0, frame = Path(path[i]), f"{i}: ", im0s[i].copy(), dataset.count
                else:
                    p, s, im0, frame = Path(path), info, im0s.copy(), getattr(dataset, "frame", 0)
                save_path = str(save_dir / p.name)
                txt_path = save_dir / "labels" / (p.stem + ("" if dataset.mode == "image" else f"_{frame}"))
                s += "%gx%g " % tuple(im.shape[2:])
                if len(det):
                    det[:, :4] = scale_coords(im.shape[2:], det[:, :4], im0.shape).round()
                    s += describe(det, names)
                    if save_txt:
                        with open(f"{txt_path}.txt", "a") as f:
                            f.writelines(line + "\n" for line in label_lines(det, im0.shape, save_conf))
                    if save_img or save_crop or view_img:
                        draw_and_crop(det, im0, names, style, save_dir / "crops" if save_crop else None, p.stem)
                print(f"{printable(s)}Done. ({t3 - t2:.3f}s)")

                if view_img:
                    cv2.imshow(printable(p), im0)
                    if cv2.waitKey(1) == ord("q"):  # upstream: q closes a live view
                        raise _QuitRequested
                if save_img:
                    if dataset.mode == "image":
                        write_image(save_path, im0)
                    else:
                        videos.write(i, save_path, im0, vid_cap)
    except _QuitRequested:
        print("Stopped by the user (q pressed)")
    finally:
        videos.close()
        if recorder is not None:
            recorder.remove()
        if streaming:
            dataset.close()

    skipped = getattr(dataset, "skipped", [])
    if skipped:
        names_shown = ", ".join(printable(Path(f).name) for f in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print(f"WARNING: {len(skipped)} of {dataset.nf} files skipped, they could not be decoded: "
              f"{names_shown}")
        if not seen:
            raise UserError(f"--source {printable(source)}: none of its {len(skipped)} files could be decoded "
                            f"({', '.join(printable(Path(f).name) for f in skipped[:3])}); check that they are "
                            "intact images or videos")
    t = tuple(x / max(seen, 1) * 1e3 for x in dt)
    print(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {(1, 3, *imgsz)}" % t)
    if save_txt or save_img:
        n_labels = len(list(save_dir.glob("labels/*.txt")))
        extra = f"\n{n_labels} labels saved to {save_dir / 'labels'}" if save_txt else ""
        print(printable(f"Results saved to {save_dir}{extra}"))
    if update:
        from utils.checkpoint import strip_optimizer
        for w in weight_files:
            strip_optimizer(w)
    return save_dir
