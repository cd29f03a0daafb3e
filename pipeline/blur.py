"""Blurring faces in frames: every face, or every face but the watchlist's matches.

Applied where faces are found (the infer stage), so every later reader of the pixels (tracker, alert
snapshots, the recorded video, PUB observers) only ever sees blurred faces.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

BlurMode = Literal["none", "all", "unlisted"]


def blur_regions(image: np.ndarray, boxes: np.ndarray, grow: float = 0.15) -> np.ndarray:
    """A copy of `image` with each xyxy box (grown by `grow` of its size on every side) pixelated and
    blurred beyond recognition: a mosaic of at most 6x6 cells, then a box blur to hide the cell edges."""
    out = np.array(image, copy=True)
    h, w = out.shape[:2]
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        gx, gy = (x2 - x1) * grow, (y2 - y1) * grow
        a, b = max(int(x1 - gx), 0), max(int(y1 - gy), 0)
        c, d = min(int(np.ceil(x2 + gx)), w), min(int(np.ceil(y2 + gy)), h)
        if c - a < 2 or d - b < 2:
            continue
        region = out[b:d, a:c]
        cells = (max(1, min(6, (c - a) // 4)), max(1, min(6, (d - b) // 4)))
        small = cv2.resize(region, cells, interpolation=cv2.INTER_AREA)
        mosaic = cv2.resize(small, (c - a, d - b), interpolation=cv2.INTER_NEAREST)
        k = max(3, ((min(c - a, d - b) // 4) | 1))
        out[b:d, a:c] = cv2.blur(mosaic, (k, k))
    return out
