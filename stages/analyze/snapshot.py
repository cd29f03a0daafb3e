"""The JPEG attached to an alert: the frame, the rule's zone or line, and the alert's objects boxed."""

from __future__ import annotations

import cv2
import numpy as np

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
        cv2.polylines(out, [np.round(zone.polygon).astype(np.int32)], True, YELLOW, 2, cv2.LINE_AA)
    if line is not None:
        a, b = (tuple(int(round(v)) for v in p) for p in (line.a, line.b))
        cv2.arrowedLine(out, a, b, YELLOW, 2, cv2.LINE_AA, tipLength=0.05)
    for x1, y1, x2, y2 in boxes:
        cv2.rectangle(out, (int(x1), int(y1)), (int(round(x2)), int(round(y2))), RED, 3)
    (tw, th), base = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 2)
    cv2.rectangle(out, (0, 0), (tw + 10, th + base + 10), (0, 0, 0), -1)
    cv2.putText(out, title, (5, th + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    if out.shape[1] > max_width:
        scale = max_width / out.shape[1]
        out = cv2.resize(out, (max_width, int(round(out.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding of the snapshot failed")
    return buf.tobytes()
