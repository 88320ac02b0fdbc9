"""Live inference inputs for detect.py: webcams, network streams, .txt lists of them (v6.0 `LoadStreams`).

Each source is opened with cv2.VideoCapture and read by its own daemon thread, which always keeps
the newest frame; the consumer takes whatever frame is current, so a slow model skips frames
instead of falling behind the live feed. Iterating yields (sources, letterboxed Bx3xHxW RGB uint8
batch, list of original BGR frames, None, ""), one batch entry per source, until any reader
thread stops (stream ended or closed).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from utils.data.augmentations import letterbox
from utils.errors import UserError
from utils.data.image_files import open_video, printable

LOGGER = logging.getLogger("yolov5")
DEFAULT_FPS = 30.0  # used when a stream does not report its frame rate
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")


def stream_list(source) -> list:
    """The sources named by `source`: the lines of a .txt file, else `source` itself."""
    path = Path(str(source))
    if str(source).endswith(".txt"):
        if not path.is_file():
            raise UserError(f"--source {printable(source)}: stream list file not found")
        lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        if not lines:
            raise UserError(f"--source {printable(source)}: the stream list is empty; put one webcam "
                            "index or stream URL per line")
        return lines
    return [str(source)]


def _open(source):
    """cv2.VideoCapture for a webcam index ('0') or a URL/file, or a UserError saying why not."""
    cap = cv2.VideoCapture(int(source)) if source.isnumeric() else open_video(source)
    if not cap.isOpened():
        what = f"webcam {source}" if source.isnumeric() else f"stream {printable(source)}"
        raise UserError(f"--source: cannot open {what} (check the index/URL and that the camera or "
                        "server is reachable; OpenCV needs FFmpeg/GStreamer support for network streams)")
    return cap


class LoadStreams:
    """Threaded readers for one or more live sources, batched together frame by frame."""

    def __init__(self, sources="streams.txt", img_size=640, stride=32, auto=True):
        self.mode = "stream"
        self.img_size, self.stride = img_size, stride
        self.sources = stream_list(sources)
        n = len(self.sources)
        self.imgs, self.fps, self.frames = [None] * n, [DEFAULT_FPS] * n, [math.inf] * n
        self.caps, self.threads = [None] * n, [None] * n
        self._stop = threading.Event()
        for i, s in enumerate(self.sources):
            cap = _open(s)
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps[i] = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.frames[i] = count if count > 0 else math.inf  # live feeds report 0 or -1
            ok, self.imgs[i] = cap.read()
            if not ok or self.imgs[i] is None:
                cap.release()
                raise UserError(f"--source: stream {printable(s)} opened but returned no frame")
            self.caps[i] = cap
            self.threads[i] = threading.Thread(target=self._update, args=(i, s), daemon=True)
            LOGGER.info(f"{i + 1}/{n}: {printable(s)}... success ({self.frames[i]} frames {w}x{h} at "
                        f"{self.fps[i]:.2f} FPS)")
            self.threads[i].start()
        LOGGER.info("")
        shapes = {letterbox(x, img_size, stride=stride, auto=auto)[0].shape for x in self.imgs}
        # One batch needs one shape: the minimum-rectangle padding only when every source agrees.
        self.rect = len(shapes) == 1
        self.auto = auto and self.rect
        if not self.rect:
            LOGGER.warning("WARNING: streams differ in shape; padding all to the full --imgsz. For best "
                           "performance give streams of one shape.")

    def _update(self, i, source):
        """Reader thread: keep imgs[i] at the newest frame until the stream ends or we are closed."""
        cap, n = self.caps[i], 0
        while cap.isOpened() and n < self.frames[i] and not self._stop.is_set():
            n += 1
            if not cap.grab():
                if math.isinf(self.frames[i]):  # live feed hiccup: blank frame, try to reconnect
                    LOGGER.warning(f"WARNING: stream {printable(source)} unresponsive, reconnecting")
                    self.imgs[i] = np.zeros_like(self.imgs[i])
                    cap.open(int(source) if source.isnumeric() else source)
                    continue
                break  # a finite source (a video file given as a stream) has ended
            ok, im = cap.retrieve()
            if ok:
                self.imgs[i] = im
            time.sleep(1 / self.fps[i])

    def __iter__(self):
        self.count = -1
        return self

    def __next__(self):
        self.count += 1
        if not all(t.is_alive() for t in self.threads):
            self.close()
            raise StopIteration
        img0 = [x.copy() for x in self.imgs]
        img = np.stack([letterbox(x, self.img_size, stride=self.stride, auto=self.auto)[0] for x in img0])
        img = np.ascontiguousarray(img[..., ::-1].transpose(0, 3, 1, 2))  # BGR->RGB, BHWC->BCHW
        return self.sources, img, img0, None, ""

    def close(self):
        """Stop the reader threads and release the captures."""
        self._stop.set()
        for t in self.threads:
            if t is not None and t is not threading.current_thread():
                t.join(timeout=2)
        for cap in self.caps:
            if cap is not None:
                cap.release()

    def __len__(self):
        return len(self.sources)
