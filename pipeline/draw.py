"""Small drawing functions on BGR frames, composed by the recorded video, the alert snapshots and face blurring.

Each draws in place on the image it is given (callers copy first where the frame must keep its clean pixels);
boxes are corner boxes (x1, y1, x2, y2) in pixels, rounded to the nearest pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX

Color = tuple[int, int, int]
Box = Sequence[float] | np.ndarray  # x1, y1, x2, y2
Point = Sequence[float] | np.ndarray  # x, y


def draw_box(image: np.ndarray, box: Box, color: Color, thickness: int = 2) -> tuple[int, int, int, int]:
    """The box's outline; returns its corners as drawn."""
    x1, y1, x2, y2 = (int(np.rint(v)) for v in box)  # half to even, as round()
    cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
    return x1, y1, x2, y2


def label_size(text: str, scale: float = 0.45, thickness: int = 1, pad: tuple[int, int] = (2, 1)) -> tuple[int, int]:
    """(width, height) of the filled box draw_label puts behind `text`."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    return tw + 2 * pad[0], th + base + 2 * pad[1]


def draw_label(
    image: np.ndarray,
    text: str,
    at: tuple[int, int],
    background: Color,
    color: Color = (0, 0, 0),
    scale: float = 0.45,
    thickness: int = 1,
    pad: tuple[int, int] = (2, 1),
) -> None:
    """`text` on a filled box whose top-left corner is `at`, `pad` pixels (x, y) between the text and the box's edges."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = at
    cv2.rectangle(image, (x, y), (x + tw + 2 * pad[0], y + th + base + 2 * pad[1]), background, -1)
    cv2.putText(image, text, (x + pad[0], y + pad[1] + th), FONT, scale, color, thickness, cv2.LINE_AA)


def label_scale(width: int, height: int) -> float:
    """Text scale for a frame: 0.45 at 768x576, in proportion to the frame's smaller side, at least 0.3 (legible) and
    at most 1.2."""
    return float(min(1.2, max(0.3, 0.45 * (min(width, height) / 576))))


Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 of a label


def place_labels(
    boxes: Sequence[Box] | np.ndarray, sizes: Sequence[tuple[int, int]], width: int, height: int, taken: Sequence[Rect] = ()
) -> list[tuple[int, int]]:
    """Top-left corners for labels of `sizes` (w, h), one per box, inside the frame and overlapping no label placed
    before them nor a `taken` one (the zones' and lines' labels) where a free place exists: above the box's
    top-left corner, below its bottom, inside its top, then shifted up or down from those in label-height steps.
    Boxes are served largest first (their labels matter most); a label that finds no free place takes the first
    candidate."""
    placed: list[Rect] = list(taken)
    out: list[tuple[int, int]] = [(0, 0)] * len(sizes)
    order = sorted(range(len(sizes)), key=lambda i: -float((boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])))
    for i in order:
        x1, y1, _, y2 = (int(np.rint(v)) for v in boxes[i])
        w, h = sizes[i]
        x = min(max(x1, 0), max(width - w, 0))  # inside the frame, left and right
        candidates = [y1 - h, y2 + 1, y1]
        candidates += [c + k * h * sgn for k in range(1, 4) for c in (y1 - h, y2 + 1) for sgn in (-1, 1)]
        spots = [(x, min(max(y, 0), max(height - h, 0))) for y in candidates]
        free = next((p for p in spots if not any(p[0] < b[2] and b[0] < p[0] + w and p[1] < b[3] and b[1] < p[1] + h for b in placed)), spots[0])
        placed.append((free[0], free[1], free[0] + w, free[1] + h))
        out[i] = free
    return out


def draw_boxes(
    image: np.ndarray, boxes: Sequence[Box] | np.ndarray, colors: Sequence[Color], labels: Sequence[str] | None = None, thickness: int = 2,
    taken: Sequence[Rect] = (),
) -> None:
    """Each box in its colour, with its label (if given) on the box's colour: just above it where that is free,
    else the nearest free place around `taken` labels (place_labels), inside the frame, text scaled to the frame
    (label_scale)."""
    for i, box in enumerate(boxes):
        draw_box(image, box, colors[i], thickness)
    if labels is None or not len(boxes):
        return
    h, w = image.shape[:2]
    scale = label_scale(w, h)
    sizes = [label_size(text, scale) for text in labels]
    for i, at in enumerate(place_labels(boxes, sizes, w, h, taken)):
        draw_label(image, labels[i], at, colors[i], scale=scale)


def draw_polygon(image: np.ndarray, points: np.ndarray, color: Color, thickness: int = 2) -> None:
    """A closed polygon through `points` [N, 2] (rounded), anti-aliased."""
    cv2.polylines(image, [np.round(points).astype(np.int32)], True, color, thickness, cv2.LINE_AA)


def draw_arrow(image: np.ndarray, a: Point, b: Point, color: Color, thickness: int = 2, tip: float = 0.05) -> None:
    """An arrow from a to b (rounded), its tip `tip` of its length, anti-aliased."""
    pa, pb = (tuple(int(np.rint(v)) for v in p) for p in (a, b))
    cv2.arrowedLine(image, pa, pb, color, thickness, cv2.LINE_AA, tipLength=tip)


def pixelate(image: np.ndarray, box: Box, grow: float = 0.15) -> None:
    """The box (grown by `grow` of its size on every side, clipped to the image) made unrecognisable: a mosaic of at
    most 6x6 cells, then a box blur to hide the cell edges. Regions under 2 pixels wide or high are left alone."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    gx, gy = (x2 - x1) * grow, (y2 - y1) * grow
    a, b = max(int(x1 - gx), 0), max(int(y1 - gy), 0)
    c, d = min(int(np.ceil(x2 + gx)), w), min(int(np.ceil(y2 + gy)), h)
    if c - a < 2 or d - b < 2:
        return
    region = image[b:d, a:c]
    cells = (max(1, min(6, (c - a) // 4)), max(1, min(6, (d - b) // 4)))
    small = cv2.resize(region, cells, interpolation=cv2.INTER_AREA)
    mosaic = cv2.resize(small, (c - a, d - b), interpolation=cv2.INTER_NEAREST)
    k = max(3, ((min(c - a, d - b) // 4) | 1))
    image[b:d, a:c] = cv2.blur(mosaic, (k, k))
