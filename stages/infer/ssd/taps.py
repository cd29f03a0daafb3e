"""Where TF1's ResizeBilinear(align_corners=False, half_pixel_centers=False) samples a frame, in numpy.

The tap indices and weights depend only on the frame size, so they are computed once per size; the gather of the
source pixels runs where the frames are (numpy here, torch in stages.infer.ssd.preprocess). The arithmetic is
float32, as TF's, so that both pick the same taps.
"""

from __future__ import annotations

import cv2
import numpy as np


def _axis_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper source index and the upper weight of each output position (TF LegacyScaler)."""
    scale = np.float32(in_size / out_size)
    src = np.arange(out_size, dtype=np.float32) * scale
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo.astype(np.float32)
    return lo, hi, frac


def legacy_taps(height: int, width: int, size: tuple[int, int], bgr: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The taps of a [height, width, 3] frame for an output of `size` (h, w): rows [2h] (the upper then the lower
    source row of each output row), cols [2 * w * 3] (the left then the right source byte of each output
    pixel's channel in a flattened row), dy [h] and dx [w * 3] (the weights of the lower row and the right
    column), float32. `bgr`: the frames are BGR and the taps come out RGB."""
    oh, ow = size
    y0, y1, dy = _axis_taps(height, oh)
    x0, x1, dx = _axis_taps(width, ow)
    channel = np.arange(3)[::-1] if bgr else np.arange(3)  # the colour swap costs nothing as part of the gather
    cols = np.concatenate([(x0[:, None] * 3 + channel).ravel(), (x1[:, None] * 3 + channel).ravel()])
    return np.concatenate([y0, y1]), cols, dy, np.repeat(dx, 3)


def gather_taps(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """uint8 NHWC frames [B, H, W, C] -> the source pixels of every tap, [B, len(rows), len(cols)]: whole rows
    first (cheap), then the columns of the flattened rows."""
    flat = images.reshape(images.shape[0], images.shape[1], -1)[:, rows]
    return flat[:, :, cols]


def pixel_columns(width: int, size: tuple[int, int]) -> np.ndarray:
    """The left then the right source pixel of each output column, [2 * w] (what `gather_bgr` takes)."""
    x0, x1, _ = _axis_taps(width, size[1])
    return np.concatenate([x0, x1]).astype(np.intp)


def gather_bgr(image: np.ndarray, rows: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """One uint8 BGR frame [H, W, 3] -> its taps in RGB, [1, len(rows), 3 * len(pixels)]: what
    `gather_taps(image[None], rows, cols)` gives with `legacy_taps(..., bgr=True)`'s cols, in 0.35 ms instead
    of 0.8 (768x576 to 300x300). numpy gathers single bytes slowly, so the rows are widened to RGBA (the
    colour swap on the way, in OpenCV's vectorised code), the columns gathered as 32-bit pixels, and the
    alpha dropped again."""
    h = len(rows)
    rgba = cv2.cvtColor(image.reshape(image.shape[0], -1)[rows].reshape(h, -1, 3), cv2.COLOR_BGR2RGBA)
    picked = np.take(rgba.view(np.uint32).reshape(h, -1), pixels, axis=1)
    return cv2.cvtColor(picked.view(np.uint8).reshape(h, -1, 4), cv2.COLOR_RGBA2RGB).reshape(1, h, -1)
