"""Box operations every plugin shares: pairwise IoU, greedy NMS (one group or per group), multiclass selection, which
boxes touch the frame's edge.

Corner boxes (x1, y1, x2, y2), or (y1, x1, y2, x2): IoU and NMS do not care which as long as both sides agree.
The numpy functions are what the pipeline runs without torch (the tracker, COCO-SSD on a CPU runtime, evaluation);
the `*_torch` ones are the same steps on tensors, for models that keep their outputs on the device. torch is imported
inside them, so importing this module never loads it.

NMS has TF's / torchvision's semantics: boxes are visited in decreasing score order (ties keep their input order) and
a box is dropped when its IoU with an already kept box of its group is above the threshold. The greedy pass runs
without a per-box loop: it iterates keep[j] = not any(keep[i] and suppresses[i, j] for i < j) to its fixed point,
reached after (longest chain of suppressions + 1) steps, a handful in practice. numpy and torch give the same kept
boxes (tests/test_backend_parity.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

_TINY = np.finfo(np.float32).tiny


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [N, M] of corner boxes a [N, 4] and b [M, 4], in their dtype; 0 where the union is empty."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.result_type(a, b, np.float32))
    area_a, area_b = _area(a), _area(b)
    inter = _intersection(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, _TINY), np.float32(0))


def box_ioa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M]: how much of each box of a [N, 4] lies inside each box of b [M, 4] (intersection over a's area)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.result_type(a, b, np.float32))
    area_a = _area(a)
    return np.where(area_a[:, None] > 0, _intersection(a, b) / np.maximum(area_a[:, None], _TINY), np.float32(0))


def near_frame_edge(boxes: np.ndarray, frame_size: tuple[int, int], fraction: float) -> np.ndarray:
    """[N] (one box: [1]): which corner boxes come within `fraction` of the frame's smaller side of its edge, an object
    that may be partly out of view."""
    w, h = frame_size
    m = fraction * min(w, h)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (b[:, 0] <= m) | (b[:, 1] <= m) | (b[:, 2] >= w - m) | (b[:, 3] >= h - m)


def _area(a: np.ndarray) -> np.ndarray:
    return np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(high - low, 0, None)
    return wh[..., 0] * wh[..., 1]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the kept boxes, highest score first; boxes only suppress boxes of their own group (float32 IoU)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float32, copy=False)
    g = groups[order]
    suppresses = np.triu((box_iou(b, b) > iou_threshold) & (g[:, None] == g[None, :]), k=1)
    return order[greedy_keep(suppresses)]


def greedy_keep(suppresses: np.ndarray) -> np.ndarray:
    """keep mask of the greedy pass; suppresses[i, j] (i < j in score order) = i would remove j."""
    keep: np.ndarray = np.ones(len(suppresses), dtype=bool)
    for _ in range(len(suppresses) + 1):  # position t is final after step t + 1
        new: np.ndarray = ~(suppresses & keep[:, None]).any(axis=0)
        if np.array_equal(new, keep):
            break
        keep = new
    return keep


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Single-group NMS: indices of the kept boxes, highest score first."""
    return batched_nms(boxes, scores, np.zeros(len(scores), np.int64), iou_threshold)


def select_detections(
    scores: np.ndarray,
    boxes: np.ndarray,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    max_candidates: int = 3000,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (boxes [K, 4], scores [K], class columns [K]) after a score threshold and per-class NMS, from
    scores [B, A, C] and boxes [B, A, 4]; at most `max_candidates` (the best) per image enter NMS.

    Every (box, class) above the threshold is a candidate (TF's multiclass NMS); the candidate cap bounds the IoU matrix.
    """
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


# -- the same on torch tensors -----------------------------------------------------------------------------------


def box_iou_torch(a: Tensor, b: Tensor) -> Tensor:
    """box_iou on tensors: IoU matrix [N, M] of corner boxes; 0 where the union is empty."""
    import torch

    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(dim=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def greedy_keep_torch(suppresses: Tensor) -> Tensor:
    """keep mask of the greedy pass; suppresses[i, j] (i < j in score order) = i would remove j."""
    import torch

    n = suppresses.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=suppresses.device)
    for _ in range(n + 1):  # position t is final after step t + 1, so n + 1 steps always suffice
        new = ~(suppresses & keep[:, None]).any(dim=0)
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def batched_nms_torch(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """batched_nms on tensors, on their device: indices of the kept boxes, highest score first."""
    import torch

    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].float()
    g = groups[order]
    suppresses = (box_iou_torch(b, b) > iou_threshold) & (g[:, None] == g[None, :])
    suppresses = torch.triu(suppresses, diagonal=1)
    return order[greedy_keep_torch(suppresses)]


def nms_torch(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Single-group NMS on tensors: indices of the kept boxes, highest score first."""
    import torch

    return batched_nms_torch(boxes, scores, torch.zeros_like(scores, dtype=torch.int64), iou_threshold)


def select_detections_torch(
    scores: Tensor,
    boxes: Tensor,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    max_candidates: int = 3000,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """select_detections on tensors (scores [B, A, C] and boxes [B, A, 4] as a model returns them), on their device."""
    import torch

    results = []
    for image_scores, image_boxes in zip(scores, boxes):
        anchor, cls = torch.nonzero(image_scores > score_threshold, as_tuple=True)
        cand_scores = image_scores[anchor, cls]
        if cand_scores.numel() > max_candidates:
            top = torch.topk(cand_scores, max_candidates).indices
            anchor, cls, cand_scores = anchor[top], cls[top], cand_scores[top]
        keep = batched_nms_torch(image_boxes[anchor], cand_scores, cls, iou_threshold)[:max_detections]
        results.append((image_boxes[anchor[keep]], cand_scores[keep], cls[keep]))
    return results
