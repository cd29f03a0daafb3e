"""encode: BGR frames into a video file, for the record stage.

H.264 (`codec: h264`, the default) is written with PyAV's libx264: every browser plays it as it is (MPEG-4
Part 2, OpenCV's `mp4v`, plays in none), and at about the same quality it is a third smaller for the same
CPU. The BGR to YUV 4:2:0 conversion runs in OpenCV's vectorised code (FFmpeg's swscale took a third of
OpenCV's writer's time). The older FourCCs (mp4v, MJPG, VP90) keep OpenCV's writer.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Protocol

import cv2
import numpy as np

# libx264's fastest preset; one thread (the record stage shares the cores with the stages before it, and
# threads would make the bytes depend on scheduling); a keyframe every 2 s so that a player can seek.
# CRF 28 (DEFAULT_CRF) is about OpenCV's mp4v quality (mean absolute error 2.6-2.8 per channel on vtest.avi
# against 2.7-2.9) in 30-40% fewer bytes for the same CPU: 2.25 ms a 768x576 annotated frame (1.4 unannotated;
# mp4v 2.25 and 2.1). CRF 23 costs 20% more CPU and writes more bytes than mp4v.
H264_PRESET = "ultrafast"
DEFAULT_CRF = 28
KEYFRAME_SECONDS = 2.0
EXTENSIONS = {"h264": ".mp4", "mp4v": ".mp4", "MJPG": ".avi", "VP90": ".webm"}


class VideoOut(Protocol):
    def write(self, image: np.ndarray) -> None: ...

    def close(self) -> None: ...


class H264Out:
    """An MP4 file of H.264 in YUV 4:2:0 (the profile every browser decodes), moov atom first so it plays
    while it downloads. Odd frame sizes are padded by one edge row or column (4:2:0 needs even ones)."""

    def __init__(self, path: str, fps: float, width: int, height: int, crf: int = DEFAULT_CRF) -> None:
        import av  # only the record stage needs it

        self.width, self.height = width + width % 2, height + height % 2
        rate = Fraction(fps).limit_denominator(1001)
        open(path, "wb").close()  # FFmpeg opens the file at its first packet: a bad path is an error now, not then
        self.container = av.open(path, "w", options={"movflags": "+faststart"})
        try:
            self.stream = self.container.add_stream("libx264", rate=rate)
            self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
            self.stream.thread_count = 1
            self.stream.codec_context.gop_size = max(1, round(fps * KEYFRAME_SECONDS))
            self.stream.codec_context.options = {"preset": H264_PRESET, "crf": str(crf)}
        except BaseException:
            self.container.close()
            raise
        self.frames = 0
        self._av = av

    def write(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if (w, h) != (self.width, self.height):
            image = cv2.copyMakeBorder(image, 0, self.height - h, 0, self.width - w, cv2.BORDER_REPLICATE)
        yuv = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), np.uint8)  # a view: typed for PyAV
        frame = self._av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self.frames
        self.frames += 1
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        try:
            self.container.mux(self.stream.encode(None))  # the frames the encoder still holds
        finally:
            self.container.close()


class OpenCvOut:
    """OpenCV's writer for the older FourCCs."""

    def __init__(self, path: str, codec: str, fps: float, width: int, height: int) -> None:
        self.writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*codec), fps, (width, height))
        if not self.writer.isOpened():
            raise RuntimeError(f"cannot write video {path} with codec {codec}")

    def write(self, image: np.ndarray) -> None:
        self.writer.write(image)

    def close(self) -> None:
        self.writer.release()


def open_video(path: str, codec: str, fps: float, width: int, height: int, crf: int = DEFAULT_CRF) -> VideoOut:
    """A writer of `codec` (a key of EXTENSIONS) for frames of width x height at fps; `crf`: H.264's quality."""
    if codec == "h264":
        return H264Out(path, fps, width, height, crf)
    return OpenCvOut(path, codec, fps, width, height)
