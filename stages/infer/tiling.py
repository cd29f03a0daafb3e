"""Tiled (sliced) inference: a detector with a small fixed input also looks at overlapping tiles of the frame.

COCO-SSD sees every frame at 300x300: a person 100 px tall in a 768x576 frame is about 40 px to the network,
where it misses many and boxes two people side by side as one. With `tiles: 2` the detector also runs on a 2x2
grid of overlapping tiles (each seen at 300x300, so objects at about 1.8x the size), and the boxes of all views
are merged: a tile's box that touches a tile border inside the frame is dropped (the object was cut there; the
neighbouring tile or the whole frame sees it whole), the rest are moved to frame coordinates, and of boxes of
different views that are one object (one mostly inside the other) the best scored is kept. The whole frame
still runs, for objects larger than a tile. The idea is SAHI's (slicing aided hyper inference); the cost is
one network pass per view (5 for 2x2), batched.
"""

from __future__ import annotations

import numpy as np

from pipeline.boxes import box_ioa, greedy_keep
from pipeline.detections import Detections

CUT_MARGIN = 2.0  # pixels: a tile's box this close to one of its inner borders was cut by it
SAME_OBJECT = 0.5  # boxes of two views overlapping this much of the smaller one are one object (SAHI's default)


def tile_rects(width: int, height: int, grid: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of `grid` x `grid` tiles of one size covering the frame, neighbours overlapping by
    `overlap` of a tile's size; row by row."""
    if grid < 2:
        return []
    tw = int(np.ceil(width / (grid - (grid - 1) * overlap)))
    th = int(np.ceil(height / (grid - (grid - 1) * overlap)))
    tw, th = min(tw, width), min(th, height)
    xs = np.linspace(0, width - tw, grid).round().astype(int).tolist()
    ys = np.linspace(0, height - th, grid).round().astype(int).tolist()
    return [(x, y, tw, th) for y in ys for x in xs]


def merge_tiles(
    full: Detections,
    tiles: list[tuple[Detections, tuple[int, int, int, int]]],
    frame_size: tuple[int, int],
    same: float = SAME_OBJECT,
    max_detections: int = 100,
) -> Detections:
    """One frame's detections from its whole-frame detections and each tile's (in tile coordinates).

    Boxes of different views are one object when the smaller lies mostly inside the other (intersection over
    the smaller box above `same`: a tile sees a person whole and tighter than the whole frame does, so their IoU
    is often low); the higher score is kept. Within one view the detector's own NMS has already decided.
    """
    w, h = frame_size
    parts = [full]
    for det, (x, y, tw, th) in tiles:
        b = det.boxes
        cut = (
            ((b[:, 0] <= CUT_MARGIN) & (x > 0))
            | ((b[:, 1] <= CUT_MARGIN) & (y > 0))
            | ((b[:, 2] >= tw - CUT_MARGIN) & (x + tw < w))
            | ((b[:, 3] >= th - CUT_MARGIN) & (y + th < h))
        )
        kept = det[~cut]
        kept.boxes = kept.boxes + np.array([x, y, x, y], np.float32)
        parts.append(kept)
    boxes = np.concatenate([p.boxes for p in parts]).astype(np.float32, copy=False)
    scores = np.concatenate([p.scores for p in parts]).astype(np.float32, copy=False)
    classes = np.concatenate([p.class_ids for p in parts])
    view = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])
    order = np.argsort(-scores, kind="stable")
    b, c, v = boxes[order], classes[order], view[order]
    inside = box_ioa(b, b)
    smaller = np.maximum(inside, inside.T)  # intersection over the smaller box of each pair
    duplicate = (smaller > same) & (c[:, None] == c[None, :]) & (v[:, None] != v[None, :])
    # Greedy in score order, as NMS: a kept box removes its lower-scored duplicates.
    idx = order[greedy_keep(np.triu(duplicate, k=1))][:max_detections]
    return Detections(boxes[idx], scores[idx], classes[idx])
