"""Moving-object detection by background subtraction (OpenCV MOG2), one model per stream.

Cheap enough to run on every frame, it finds what moves against a fixed camera's
background; later it gates the CNN detectors (no motion, no CNN).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.categories import category_id
from pipeline.detections import Detections
from pipeline.protocol import Frame
from stages.infer.detector import Detector

MOTION = category_id("motion")


class MotionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["motion"] = Field("motion", description="Moving-object boxes by background subtraction (OpenCV MOG2, per stream).")
    history: int = Field(300, ge=10, le=10_000, description="Frames the background model remembers.")
    var_threshold: float = Field(25.0, gt=0, description="MOG2 squared Mahalanobis distance that counts as foreground.")
    detect_shadows: bool = Field(True, description="Mark shadows and leave them out of the boxes.")
    work_width: int = Field(320, ge=64, le=4096, description="Frames are scaled to this width for the model.")
    min_area: float = Field(0.0015, gt=0, lt=1, description="Smallest box, as a fraction of the frame area.")
    warmup_frames: int = Field(15, ge=0, description="Frames at the start of a stream that only train the model.")
    dilate: int = Field(2, ge=0, le=20, description="Dilation iterations that join the parts of one object.")


class MotionDetector(Detector):
    """Per-stream MOG2 background models; frames of each stream must come in order."""

    type = "motion"
    Options = MotionOptions

    def __init__(self, options: MotionOptions) -> None:
        self.o = options
        self._models: dict[str, cv2.BackgroundSubtractorMOG2] = {}
        self._seen: dict[str, int] = {}
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def warming_up(self, stream: str) -> bool:
        """True until the stream's model has seen its warm-up frames (its masks mean little before)."""
        return self._seen.get(stream, 0) <= self.o.warmup_frames

    def reset(self, stream: str) -> None:
        self._models.pop(stream, None)
        self._seen.pop(stream, None)

    def detect(self, frames: list[Frame]) -> list[Detections]:
        out = []
        for f in frames:
            if f.image is None:
                raise ValueError(f"frame {f.stream}#{f.seq} carries no pixels (forward_pixels is off upstream)")
            out.append(self.detect_image(f.stream, f.image))
        return out

    def detect_image(self, stream: str, image: np.ndarray) -> Detections:
        o = self.o
        model = self._models.get(stream)
        if model is None:
            model = cv2.createBackgroundSubtractorMOG2(o.history, o.var_threshold, o.detect_shadows)
            self._models[stream] = model
            self._seen[stream] = 0
        h, w = image.shape[:2]
        scale = min(1.0, o.work_width / w)
        small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else image
        mask = model.apply(small)
        self._seen[stream] += 1
        if self._seen[stream] <= o.warmup_frames:
            return Detections()
        # Shadows are 127 in the mask: keep only sure foreground.
        _, mask = cv2.threshold(mask, 200, 255, cv2.THRESH_BINARY)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._kernel)
        if o.dilate:
            mask = cv2.dilate(mask, self._kernel, iterations=o.dilate)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        stats = stats[1:]  # row 0 is the background
        min_px = o.min_area * mask.shape[0] * mask.shape[1]
        keep = stats[:, cv2.CC_STAT_AREA] >= min_px
        stats = stats[keep]
        if not len(stats):
            return Detections()
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
        boxes = np.stack([x, y, x + bw, y + bh], axis=1).astype(np.float32) / scale
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        # Score: how much of the box is foreground (a solid blob scores near 1).
        scores = (stats[:, cv2.CC_STAT_AREA] / np.maximum(bw * bh, 1)).astype(np.float32)
        order = np.lexsort((boxes[:, 0], boxes[:, 1]))  # stable, reading order
        return Detections(boxes[order], scores[order], np.full(len(order), MOTION, np.int32))
