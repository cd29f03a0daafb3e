"""Finding traffic signs in a frame: candidate regions by colour, then a CNN that names the sign or rejects it.

Signs are made to be seen: a saturated red or blue border or face on a pale ground. The candidates are the
connected regions of a redness map (R - max(G, B)) and a blueness map (B - max(R, G)) whose size and shape could
be a sign, plus the boxes of detector rows of `proposal_classes` (COCO-SSD's stop sign). Each candidate is cut
out (padded by PAD of its size), resized to CROP x CROP and classified into SIGN_CLASSES or background; the kept
ones go through NMS. The colour step is a few milliseconds of OpenCV per frame; the CNN runs once per batch of
frames, on the candidates only, through the backend layer.

Training crops are cut by the same `candidates` and `cut` (tools/train_signs.py), so the classifier learns the
boxes and the background it will be shown.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.boxes import nms
from stages.infer.signs import CROP

LEVELS = (15, 30, 60)  # redness / blueness levels (0-255) the colour regions are cut at
PAD = 0.15  # each side of a candidate box grows by this fraction of its size before the cut


def _components(mask: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """Boxes [K, 5] (x1, y1, x2, y2, pixel count) of the mask's connected regions that could be a sign."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    s = stats[1:]
    x, y, w, h, area = s[:, 0], s[:, 1], s[:, 2], s[:, 3], s[:, 4]
    big = np.maximum(w, h)
    keep = (big >= min_size) & (big <= max_size) & (w <= 2.6 * h) & (h <= 2.6 * w) & (area >= 0.12 * w * h)
    return np.stack([x, y, x + w, y + h, area], 1)[keep].astype(np.float32)


def candidates(image: np.ndarray, min_size: int = 10, max_size: int = 200, limit: int = 64) -> np.ndarray:
    """Candidate sign boxes [K, 4] (x1, y1, x2, y2, float32) of a BGR frame, the largest regions first, at most `limit`.

    Regions of the redness and blueness maps at three levels (a faded sign is weakly red, a bright one touches
    its surroundings at a low level), where the colour is at least a fifth of the pixel's value (no dark
    brownish noise), and where it stands out from its neighbourhood (a red ring on an orange wall). Boxes found at
    several levels are kept once. The regions are looked for at half resolution (a quarter of the work; sizes
    are in pixels of the frame all the same)."""
    small = cv2.resize(image, (max(1, image.shape[1] // 2), max(1, image.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    min_size, max_size = max(3, min_size // 2), max(4, max_size // 2)
    b, g, r = cv2.split(small)
    kernel = np.ones((3, 3), np.uint8)
    found = []
    for colour, value in ((cv2.subtract(r, cv2.max(g, b)), r), (cv2.subtract(b, cv2.max(r, g)), b)):  # saturating
        strong = cv2.compare(cv2.multiply(colour, 5, dtype=cv2.CV_16U), value.astype(np.uint16), cv2.CMP_GE)
        for level in LEVELS:
            mask = cv2.bitwise_and(cv2.compare(colour, level, cv2.CMP_GT), strong)
            # Closing joins a ring broken by blur or JPEG into one region.
            found.append(_components(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel), min_size, max_size))
        local = cv2.adaptiveThreshold(colour, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 31, -8)
        found.append(_components(cv2.bitwise_and(local, strong), min_size, max_size))
    boxes = np.concatenate(found)
    boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32)
    keep = np.sort(nms(boxes[:, :4], area, 0.8))[:limit]  # one of each near-duplicate, the larger; order kept
    return np.ascontiguousarray(boxes[keep, :4] * 2)


def cut(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The classifier's input for `boxes` of a BGR frame: [K, CROP, CROP, 3] uint8 RGB, each box padded by PAD,
    area-resized when shrinking (no aliasing of small text), border replicated where the pad leaves the frame."""
    out = np.empty((len(boxes), CROP, CROP, 3), np.uint8)
    h, w = image.shape[:2]
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float32).tolist()):
        px, py = (x2 - x1) * PAD, (y2 - y1) * PAD
        a, b_ = int(np.floor(x1 - px)), int(np.ceil(x2 + px))
        c, d = int(np.floor(y1 - py)), int(np.ceil(y2 + py))
        b_, d = max(b_, a + 1), max(d, c + 1)
        patch = image[max(c, 0) : min(d, h), max(a, 0) : min(b_, w)]
        if patch.size == 0:
            out[k] = 0
            continue
        if a < 0 or c < 0 or b_ > w or d > h:
            patch = cv2.copyMakeBorder(patch, max(-c, 0), max(d - h, 0), max(-a, 0), max(b_ - w, 0), cv2.BORDER_REPLICATE)
        shrink = patch.shape[0] > CROP or patch.shape[1] > CROP
        resized = cv2.resize(patch, (CROP, CROP), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out[k] = resized[:, :, ::-1]
    return out


def decide(boxes: np.ndarray, probs: np.ndarray, min_score: float, nms_iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The signs among classified candidates: (boxes [N, 4], class codes [N], scores [N]), best first.

    A candidate is a sign when its most probable output is a class, not background, with at least `min_score`;
    overlapping signs (one sign's red ring and blue face both proposed it) keep the most probable, whatever
    their classes."""
    probs = np.asarray(probs, np.float32)
    if not len(boxes):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    cls = probs.argmax(1)
    score = probs[np.arange(len(cls)), cls]
    keep = np.flatnonzero((cls < probs.shape[1] - 1) & (score >= min_score))
    keep = keep[nms(boxes[keep], score[keep], nms_iou)]
    return boxes[keep].astype(np.float32), cls[keep].astype(np.int32), score[keep].astype(np.float32)
