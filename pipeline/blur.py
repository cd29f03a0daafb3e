"""Blurring faces in frames: every face, or every face but the watchlist's matches.

Applied where faces are found (the infer stage), so every later reader of the pixels (tracker, alert
snapshots, the recorded video, PUB observers) only ever sees blurred faces.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pipeline.draw import pixelate

BlurMode = Literal["none", "all", "unlisted"]


def blur_regions(image: np.ndarray, boxes: np.ndarray, grow: float = 0.15) -> np.ndarray:
    """A copy of `image` with each xyxy box (grown by `grow` of its size on every side) pixelated and
    blurred beyond recognition: a mosaic of at most 6x6 cells, then a box blur to hide the cell edges."""
    out = np.array(image, copy=True)
    for box in np.asarray(boxes, np.float64).reshape(-1, 4):
        pixelate(out, box, grow)
    return out
