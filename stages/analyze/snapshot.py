"""The JPEG attached to an alert: the frame, the rule's zone or line, and the alert's objects boxed."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.draw import draw_arrow, draw_box, draw_label, draw_polygon
from stages.analyze.geometry import Line, Zone

RED = (0, 0, 255)
YELLOW = (0, 220, 255)


def snapshot(
    image: np.ndarray,
    boxes: list[list[float]],
    title: str,
    zone: Zone | None = None,
    line: Line | None = None,
    quality: int = 85,
    max_width: int = 1280,
) -> bytes:
    out = np.array(image, copy=True)
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    if zone is not None:
        draw_polygon(out, zone.polygon, YELLOW, 2)
    if line is not None:
        draw_arrow(out, line.a, line.b, YELLOW, 2, tip=0.05)
    for x1, y1, x2, y2 in boxes:
        draw_box(out, (int(x1), int(y1), x2, y2), RED, 3)  # the top-left corner truncated, as snapshots always drew it
    draw_label(out, title, (0, 0), (0, 0, 0), (255, 255, 255), scale=0.6, thickness=2, pad=(5, 5))
    if out.shape[1] > max_width:
        scale = max_width / out.shape[1]
        out = cv2.resize(out, (max_width, int(round(out.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding of the snapshot failed")
    return buf.tobytes()
