"""stages.infer.ssd.nms in numpy, for the CPU runtimes' path (no torch in that process).

The same semantics step for step: boxes visited in decreasing score order (ties keep their input order), a box
dropped when its IoU with an already kept box of its group is above the threshold, float32 arithmetic; the
greedy pass iterates keep[j] = not any(keep[i] and suppresses[i, j] for i < j) to its fixed point.
tests/test_backend_parity.py checks that both give the same detections.
"""

from __future__ import annotations

import numpy as np

_TINY = np.finfo(np.float32).tiny


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [N, M] of float32 corner boxes; 0 where the union is empty."""
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(high - low, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, _TINY), np.float32(0))


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the kept boxes, highest score first; boxes only suppress boxes of their own group."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float32, copy=False)
    g = groups[order]
    suppresses = np.triu((box_iou(b, b) > iou_threshold) & (g[:, None] == g[None, :]), k=1)
    keep = np.ones(len(b), dtype=bool)
    for _ in range(len(b) + 1):  # position t is final after step t + 1
        new = ~(suppresses & keep[:, None]).any(axis=0)
        if np.array_equal(new, keep):
            break
        keep = new
    return order[keep]


def select_detections(
    scores: np.ndarray,
    boxes: np.ndarray,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    max_candidates: int = 3000,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (boxes [K, 4], scores [K], class columns [K]) after a score threshold and per-class NMS, from
    scores [B, A, C] and boxes [B, A, 4]; at most `max_candidates` (the best) per image enter NMS."""
    results = []
    for image_scores, image_boxes in zip(scores, boxes):
        anchor, cls = np.nonzero(image_scores > score_threshold)
        cand_scores = image_scores[anchor, cls]
        if len(cand_scores) > max_candidates:
            top = np.argsort(-cand_scores, kind="stable")[:max_candidates]
            anchor, cls, cand_scores = anchor[top], cls[top], cand_scores[top]
        keep = batched_nms(image_boxes[anchor], cand_scores, cls, iou_threshold)[:max_detections]
        results.append((image_boxes[anchor[keep]], cand_scores[keep], cls[keep]))
    return results
