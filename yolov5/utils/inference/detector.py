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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.boxes import clip_coords, scale_coords, xywh2xyxy, xyxy2xywh
from utils.cli import set_logging
from utils.errors import UserError
from utils.data.image_files import IMG_FORMATS, VID_FORMATS, is_printable, printable, write_image
from utils.image_size import check_img_size
from utils.io.model_files import find_weights
from utils.evaluation.nms import non_max_suppression
from utils.plots import auto_line_width, class_colour, draw_box
from utils.io.run_dir import increment_path
from utils.io.train_imgsz import resolve_imgsz
from utils.upstream_call import upstream_positions

LOGGER = logging.getLogger("yolov5")
YOLO_ROOT = Path(__file__).resolve().parents[2]
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
        from utils.inference.stream_sources import LoadStreams
        return LoadStreams(source, img_size=imgsz, stride=stride)
    from utils.inference.inference_sources import LoadImages
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
# detect.run's parameters in v6.0's positional order (v6.0's last one, dnn, is for ONNX models, which
# detect.py does not run here).
UPSTREAM_ORDER = ("weights", "source", "imgsz", "conf_thres", "iou_thres", "max_det", "device", "view_img",
                  "save_txt", "save_conf", "save_crop", "nosave", "classes", "agnostic_nms", "augment",
                  "visualize", "update", "project", "name", "exist_ok", "line_thickness", "hide_labels",
                  "hide_conf", "half")


@dataclass
class DetectOptions:
    """The options of one detect run: detect.py's flags, as `run` receives them."""
    weights: object
    source: str
    imgsz: object
    conf_thres: float
    iou_thres: float
    max_det: int
    device: str
    view_img: bool
    save_txt: bool
    save_conf: bool
    save_crop: bool
    nosave: bool
    classes: object
    agnostic_nms: bool
    augment: bool
    visualize: bool
    update: bool
    project: object
    name: str
    exist_ok: bool
    line_thickness: object
    hide_labels: bool
    hide_conf: bool
    half: bool

    @property
    def save_img(self):
        return not self.nosave and not self.source.endswith(".txt")


@dataclass
class LoadedModel:
    """The model on its device, with what the run needs to know about it."""
    model: torch.nn.Module
    dev: object
    half: bool
    names: list
    stride: int
    imgsz: list


@torch.no_grad()
@upstream_positions(*UPSTREAM_ORDER)
def run(*, weights=YOLO_ROOT / "yolov5s.pt", source=YOLO_ROOT / "data/images", imgsz=None, conf_thres=0.25,
        iou_thres=0.45, max_det=1000, device="", view_img=False, save_txt=False, save_conf=False,
        save_crop=False, nosave=False, classes=None, agnostic_nms=False, augment=False, visualize=False,
        update=False, project=YOLO_ROOT / "runs/detect", name="exp", exist_ok=False, line_thickness=None,
        hide_labels=False, hide_conf=False, half=False):
    """Detect objects in `source` with `weights`; returns the run directory.

    imgsz: int or [h, w]; None means the training size stored in the checkpoint, else 640.
    line_thickness: box lines in pixels; None scales them with each image (auto_line_width)."""
    opt = DetectOptions(**locals())  # first statement: locals() holds exactly the parameters
    opt.source = str(source)
    if not LOGGER.hasHandlers():  # unless the caller configured logging, show what detect.py shows
        set_logging()
    weight_files = check_options(opt)
    save_dir = make_save_dir(opt)
    net = load_model(weight_files, opt.device, opt.half, opt.imgsz)
    opt.view_img = opt.view_img and display_available(save_dir)
    dataset = open_source(opt.source, net.imgsz, net.stride)
    loop = DetectLoop(opt, net, save_dir, dataset)
    loop.run()
    report_skipped(dataset, loop.seen, opt.source)
    log_summary(loop.dt, loop.seen, net.imgsz, save_dir, opt)
    if opt.update:
        from utils.io.checkpoint import strip_optimizer
        for w in weight_files:
            strip_optimizer(w)
    return save_dir


def check_options(opt):
    """The checkpoint files of --weights, after the checks that need no model; UserError otherwise."""
    weight_files = check_weights(opt.weights)
    if not 0 <= opt.conf_thres <= 1 or not 0 <= opt.iou_thres <= 1:
        raise UserError(f"--conf-thres {opt.conf_thres} / --iou-thres {opt.iou_thres}: both must be in [0, 1]")
    return weight_files


def make_save_dir(opt):
    """project/name, numbered when taken (unless --exist-ok), with labels/ for --save-txt."""
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    (save_dir / "labels" if opt.save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    return save_dir


def load_model(weight_files, device, half, imgsz):
    """Load the checkpoint(s) (several make an ensemble) on `device`; imgsz checked against the stride."""
    from models.experimental import attempt_load
    from utils.device.devices import select_device

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
    return LoadedModel(model, dev, half, names, stride, imgsz)


def display_available(save_dir):
    """--view-img: True if a window can be shown, else warn (results are still saved) and False."""
    reason = display_unavailable_reason()
    if reason:
        LOGGER.warning(f"WARNING: --view-img: cannot show a window here: {reason}; results are still saved to "
                       f"{printable(save_dir)}")
        return False
    return True


class DetectLoop:
    """One pass over a source: each batch through the model and NMS, then each image's log line,
    labels, drawings, crops, window and saved image or video frame."""

    def __init__(self, opt, net, save_dir, dataset):
        self.opt, self.net, self.save_dir, self.dataset = opt, net, save_dir, dataset
        self.streaming = dataset.mode == "stream"
        self.videos = VideoSaver(len(dataset) if self.streaming else 1)
        self.recorder = None
        if opt.visualize:
            from utils.inference.feature_maps import FeatureMapRecorder
            self.recorder = FeatureMapRecorder(net.model)
        self.style = {"line_width": opt.line_thickness, "hide_labels": opt.hide_labels, "hide_conf": opt.hide_conf}
        self.dt, self.seen = [0.0, 0.0, 0.0], 0  # seconds in pre-process, inference, NMS; images done

    def run(self):
        self.warm_up()
        try:
            for path, img, im0s, vid_cap, info in self.dataset:
                im, pred, infer_s = self.infer(path, img)
                for i, det in enumerate(pred):
                    self.seen += 1
                    self.handle_image(i, det, im.shape[2:], self.frame(i, path, im0s, info), vid_cap, infer_s)
        except _QuitRequested:
            LOGGER.info("Stopped by the user (q pressed)")
        finally:
            self.close()

    def warm_up(self):
        """One forward pass on an accelerator, so the first timing is not the kernel set-up."""
        if self.net.dev.kind != "cpu":
            params = next(self.net.model.parameters())
            self.net.model(torch.zeros(1, 3, *self.net.imgsz, device=self.net.dev.torch_device, dtype=params.dtype))

    def infer(self, path, img):
        """Pre-process, forward and NMS of one batch, each stage timed into self.dt; returns (input
        tensor, detections per image, inference seconds)."""
        dev, opt = self.net.dev, self.opt
        t1 = time.perf_counter()
        im = torch.from_numpy(img).to(dev.torch_device)
        im = (im.half() if self.net.half else im.float()) / 255
        if im.dim() == 3:
            im = im[None]
        dev.synchronize()
        t2 = time.perf_counter()
        self.dt[0] += t2 - t1

        if self.recorder is not None:
            first = path[0] if self.streaming else path
            self.recorder.save_dir = increment_path(self.save_dir / Path(first).stem, mkdir=True)
        pred = self.net.model(im, augment=opt.augment)[0]
        dev.synchronize()
        t3 = time.perf_counter()
        self.dt[1] += t3 - t2
        pred = non_max_suppression(pred.float().to(dev.postprocess_device), opt.conf_thres, opt.iou_thres,
                                   opt.classes, opt.agnostic_nms, max_det=opt.max_det)
        self.dt[2] += time.perf_counter() - t3
        return im, pred, t3 - t2

    def frame(self, i, path, im0s, info):
        """(path, log prefix, a copy of the original image, frame number) of batch slot i."""
        if self.streaming:
            return Path(path[i]), f"{i}: ", im0s[i].copy(), self.dataset.count
        return Path(path), info, im0s.copy(), getattr(self.dataset, "frame", 0)

    def handle_image(self, i, det, shape, frame, vid_cap, infer_s):
        """Detections `det` of one image (in `shape` input pixels): log, labels, drawing, outputs."""
        opt = self.opt
        p, s, im0, frame_no = frame
        s += "%gx%g " % tuple(shape)
        if len(det):
            det[:, :4] = scale_coords(shape, det[:, :4], im0.shape).round()
            s += describe(det, self.net.names)
            if opt.save_txt:
                stem = p.stem + ("" if self.dataset.mode == "image" else f"_{frame_no}")
                with open(f"{self.save_dir / 'labels' / stem}.txt", "a") as f:
                    f.writelines(line + "\n" for line in label_lines(det, im0.shape, opt.save_conf))
            if opt.save_img or opt.save_crop or opt.view_img:
                crop_dir = self.save_dir / "crops" if opt.save_crop else None
                draw_and_crop(det, im0, self.net.names, self.style, crop_dir, p.stem)
        LOGGER.info(f"{printable(s)}Done. ({infer_s:.3f}s)")
        if opt.view_img:
            cv2.imshow(printable(p), im0)
            if cv2.waitKey(1) == ord("q"):  # upstream: q closes a live view
                raise _QuitRequested
        if opt.save_img:
            save_path = str(self.save_dir / p.name)
            if self.dataset.mode == "image":
                write_image(save_path, im0)
            else:
                self.videos.write(i, save_path, im0, vid_cap)

    def close(self):
        self.videos.close()
        if self.recorder is not None:
            self.recorder.remove()
        if self.streaming:
            self.dataset.close()


def report_skipped(dataset, seen, source):
    """Warn about the files that could not be decoded; a UserError when that was every file."""
    skipped = getattr(dataset, "skipped", [])
    if not skipped:
        return
    names_shown = ", ".join(printable(Path(f).name) for f in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
    LOGGER.warning(f"WARNING: {len(skipped)} of {dataset.nf} files skipped, they could not be decoded: "
                   f"{names_shown}")
    if not seen:
        raise UserError(f"--source {printable(source)}: none of its {len(skipped)} files could be decoded "
                        f"({', '.join(printable(Path(f).name) for f in skipped[:3])}); check that they are "
                        "intact images or videos")


def log_summary(dt, seen, imgsz, save_dir, opt):
    """Mean milliseconds per image of each stage, and where the results went."""
    t = tuple(x / max(seen, 1) * 1e3 for x in dt)
    LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {(1, 3, *imgsz)}" % t)
    if opt.save_txt or opt.save_img:
        n_labels = len(list(save_dir.glob("labels/*.txt")))
        extra = f"\n{n_labels} labels saved to {save_dir / 'labels'}" if opt.save_txt else ""
        LOGGER.info(printable(f"Results saved to {save_dir}{extra}"))
