"""Inference inputs for detect.py: image files and videos (v6.0 `LoadImages`).

Iterating yields (path, letterboxed 3xHxW RGB uint8 array, original BGR image, the cv2.VideoCapture
for video frames or None for images (upstream handed out the open capture for images too), info
string such as "image 3/10 /data/x.jpg: "). Images come first, then videos frame by
frame. A folder is read non-recursively, as upstream. Images that cannot be decoded are skipped with a
warning and listed in `skipped`.
"""
from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from utils.data.augmentations import letterbox
from utils.errors import UserError
from utils.data.image_files import IMG_FORMATS, VID_FORMATS, decode_image, has_suffix, open_video, printable

LOGGER = logging.getLogger("yolov5")


class LoadImages:
    """Images and videos from a file, a folder or a glob pattern."""

    def __init__(self, path, img_size=640, stride=32, auto=True):
        p = str(Path(path).expanduser().resolve()) if not any(c in str(path) for c in "*?[") else str(path)
        if any(c in p for c in "*?["):
            files = sorted(glob.glob(p, recursive=True))
        elif os.path.isdir(p):
            files = sorted(os.path.join(p, f) for f in os.listdir(p))
        elif os.path.isfile(p):
            files = [p]
        else:
            raise UserError(f"--source {printable(path)} does not exist")
        images = [f for f in files if has_suffix(f, IMG_FORMATS)]
        videos = [f for f in files if has_suffix(f, VID_FORMATS)]
        self.img_size, self.stride, self.auto = img_size, stride, auto
        self.files = images + videos
        self.nf = len(self.files)
        self.video_flag = [False] * len(images) + [True] * len(videos)
        self.mode = "image"
        self.cap, self.frame, self.frames = None, 0, 0
        self.skipped = []  # image and video files that could not be decoded
        if videos:
            self.new_video(videos[0])
        if self.nf == 0:
            raise UserError(f"no images or videos found in {printable(p)}; supported: images "
                            f"{', '.join(IMG_FORMATS)}, videos {', '.join(VID_FORMATS)}")

    def __iter__(self):
        self.count = 0
        return self

    def __next__(self):
        while self.count < self.nf and not self.video_flag[self.count]:
            path = self.files[self.count]
            self.count += 1
            self.mode = "image"
            img0 = decode_image(path)
            if img0 is not None:
                return self._item(path, img0, f"image {self.count}/{self.nf} {printable(path)}: ")
            # one unreadable file must not end a run over a whole folder: warn, skip, count it
            self.skipped.append(path)
            LOGGER.warning(f"WARNING: image {self.count}/{self.nf} {printable(path)}: cannot decode it (empty, "
                           f"damaged or not an image); skipped")
        if self.count == self.nf:
            raise StopIteration
        path = self.files[self.count]
        self.mode = "video"
        ok, img0 = self.cap.read()
        while not ok:  # this video is finished: move on to the next one
            if self.frame == 0:  # not one frame: not openable or not a video; say so instead of passing silently
                self.skipped.append(path)
                LOGGER.warning(f"WARNING: video {self.count + 1}/{self.nf} {printable(path)}: cannot open or decode "
                               "it (damaged or not a video); skipped")
            self.count += 1
            self.cap.release()
            if self.count == self.nf:
                raise StopIteration
            path = self.files[self.count]
            self.new_video(path)
            ok, img0 = self.cap.read()
        self.frame += 1
        return self._item(path, img0, f"video {self.count + 1}/{self.nf} ({self.frame}/{self.frames}) "
                                      f"{printable(path)}: ")

    def _item(self, path, img0, info):
        img = letterbox(img0, self.img_size, stride=self.stride, auto=self.auto)[0]
        img = np.ascontiguousarray(img.transpose(2, 0, 1)[::-1])  # HWC BGR -> CHW RGB
        return path, img, img0, self.cap if self.mode == "video" else None, info

    def new_video(self, path):
        self.frame = 0
        self.cap = open_video(path)
        self.frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))

    def __len__(self):
        return self.nf
