"""Association costs and the per-frame linear assignment between tracks and detections."""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

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
    rows, cols = assignment_solver()(np.minimum(cost, INFEASIBLE))
    keep = cost[rows, cols] <= threshold
    matches = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    unmatched_rows = np.setdiff1d(np.arange(n), matches[:, 0])
    unmatched_cols = np.setdiff1d(np.arange(m), matches[:, 1])
    return matches, unmatched_rows, unmatched_cols


@functools.cache
def assignment_solver() -> Callable[[np.ndarray], Any]:
    """scipy's linear_sum_assignment, loaded from its own extension module (scipy.optimize._lsap): importing
    scipy.optimize costs 0.37 s of CPU, the extension alone 0.07 (numpy, loaded anyway). Any other scipy
    layout falls back to the public import; the function is the same either way."""
    name = "scipy.optimize._lsap"
    module = sys.modules.get(name)
    if module is None:
        try:
            scipy = importlib.util.find_spec("scipy")
            assert scipy is not None and scipy.origin is not None
            found = [str(p) for p in (Path(scipy.origin).parent / "optimize").glob("_lsap.*") if p.suffix in (".so", ".pyd")]
            loader = importlib.machinery.ExtensionFileLoader(name, found[0])
            spec = importlib.util.spec_from_file_location(name, found[0], loader=loader)
            assert spec is not None
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
            sys.modules[name] = module  # a later `import scipy.optimize` uses this one
        except Exception:
            from scipy.optimize import linear_sum_assignment

            return linear_sum_assignment  # type: ignore[no-any-return]
    return module.linear_sum_assignment  # type: ignore[no-any-return]
