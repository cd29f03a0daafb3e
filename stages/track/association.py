"""Association costs and the per-frame linear assignment between tracks and detections."""

from __future__ import annotations

import numpy as np

from pipeline.boxes import box_iou

# An assignment cost no match may have: gated-out pairs get it, and the solver never picks them
# unless it must, after which they are rejected by the threshold.
INFEASIBLE = 1e6


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes a [N,4] and b [M,4], in float32 whatever the boxes' dtype (the costs are float32)."""
    return box_iou(a, b).astype(np.float32, copy=False)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of L2-normalised rows a [N,D] and b [M,D], in [0, 2]."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    return (1.0 - a @ b.T).astype(np.float32)


def linear_assignment(cost: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching; pairs costing more than `threshold` are left unmatched.

    Returns (matches [K,2] of (row, col), unmatched rows, unmatched cols), each sorted, so the result
    depends on the costs alone.
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        return np.zeros((0, 2), np.int64), np.arange(n), np.arange(m)
    from scipy.optimize import linear_sum_assignment  # 0.3 s to import: only in the process that tracks

    rows, cols = linear_sum_assignment(np.minimum(cost, INFEASIBLE))
    keep = cost[rows, cols] <= threshold
    matches = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    unmatched_rows = np.setdiff1d(np.arange(n), matches[:, 0])
    unmatched_cols = np.setdiff1d(np.arange(m), matches[:, 1])
    return matches, unmatched_rows, unmatched_cols
