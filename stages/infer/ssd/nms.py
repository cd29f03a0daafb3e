"""Greedy non-maximum suppression in plain torch (torchvision is not a dependency), per class.

Semantics of TF's / torchvision's NMS: boxes are visited in decreasing score order (ties keep
their input order) and a box is dropped when its IoU with an already kept box of the same group
is above the threshold. The greedy pass runs on the boxes' device without a per-box loop: it
iterates keep[j] = not any(keep[i] and suppresses[i, j] for i < j) to its fixed point, which is
reached after (longest chain of suppressions + 1) steps, a handful in practice.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrix [N, M] of corner boxes (y1, x1, y2, x2) or (x1, y1, x2, y2); 0 where the union is empty."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(dim=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def _greedy_keep(suppresses: Tensor) -> Tensor:
    """keep mask of the greedy pass; suppresses[i, j] (i < j in score order) = i would remove j."""
    n = suppresses.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=suppresses.device)
    for _ in range(n + 1):  # position t is final after step t + 1, so n + 1 steps always suffice
        new = ~(suppresses & keep[:, None]).any(dim=0)
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """Indices of the kept boxes, highest score first; boxes only suppress boxes of their own group."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].float()
    g = groups[order]
    suppresses = (box_iou(b, b) > iou_threshold) & (g[:, None] == g[None, :])
    suppresses = torch.triu(suppresses, diagonal=1)
    return order[_greedy_keep(suppresses)]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Single-group NMS: indices of the kept boxes, highest score first."""
    return batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.int64), iou_threshold)


def select_detections(
    scores: Tensor,
    boxes: Tensor,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    max_candidates: int = 3000,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per image: (boxes [K, 4], scores [K], class columns [K]) after a score threshold and per-class NMS.

    scores [B, A, C] and boxes [B, A, 4] as the model returns them; every (anchor, class) above
    the threshold is a candidate (TF's multiclass NMS), at most `max_candidates` of them per image
    (the best), which bounds the IoU matrix. Class column c of COCO-SSD is COCO id c + 1.
    """
    results = []
    for image_scores, image_boxes in zip(scores, boxes):
        anchor, cls = torch.nonzero(image_scores > score_threshold, as_tuple=True)
        cand_scores = image_scores[anchor, cls]
        if cand_scores.numel() > max_candidates:
            top = torch.topk(cand_scores, max_candidates).indices
            anchor, cls, cand_scores = anchor[top], cls[top], cand_scores[top]
        keep = batched_nms(image_boxes[anchor], cand_scores, cls, iou_threshold)[:max_detections]
        results.append((image_boxes[anchor[keep]], cand_scores[keep], cls[keep]))
    return results
