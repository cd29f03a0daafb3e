"""The infer stage's sign finder: per batch of frames, the colour candidates of every frame (plus the boxes of
detector rows of `proposal_classes`) are cut out, classified in one call through the backend layer, and the
signs are appended to each frame's Detections as `traffic_sign` rows with `sign.class` (labels: SIGN_CLASSES)
and `sign.score`.

Rows that already are `traffic_sign` (a fixed camera's sign given in `fixed_objects`, or a detector of your own
that finds signs) are classified in place, in the same call, among the sign classes only (they are known to be
signs): a sign too faded for the colour step is still read where its box is known. Candidates on such a row are dropped, so one sign is one row.

No torch at import: on a CPU runtime whose export is cached, the classifier runs without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pipeline.boxes import box_iou
from pipeline.categories import category_id
from pipeline.detections import SIGN_CLASS, SIGN_SCORE, Detections
from pipeline.protocol import Frame
from stages.infer.backend import CpuRuntime, compile_cached, file_key
from stages.infer.signs import CROP, DEFAULT_WEIGHTS, SIGN_CLASSES
from stages.infer.signs.finder import candidates, cut, decide

# Fastest CPU runtime for this network, measured by bench/backends.py --models signs (README, Traffic signs).
CPU_RUNTIME: CpuRuntime = "onnxruntime"
_CODE = [Path(__file__).resolve().parent / f for f in ("__init__.py", "net.py", "classes.py")]
TRAFFIC_SIGN = category_id("traffic_sign")

if TYPE_CHECKING:
    from stages.infer.options import SignOptions


class SignRunner:
    """Finds and classifies the traffic signs of a batch of frames."""

    def __init__(self, options: SignOptions, device: str = "cpu", on_candidates: Callable[[int], None] | None = None) -> None:
        self.options = options
        self.on_candidates = on_candidates
        self.proposal_ids = np.array([category_id(c) for c in options.proposal_classes], np.int32)
        weights = Path(options.weights or DEFAULT_WEIGHTS)
        key = file_key([weights, *_CODE], f"signs input={CROP}")

        def build() -> tuple[Any, list[Any]]:
            import torch

            from stages.infer.signs.net import load_model

            return load_model(weights), [torch.zeros(2, 3, CROP, CROP)]

        self.net = compile_cached(build, key=key, name="signs", backend=options.backend, device=device, cpu_default=CPU_RUNTIME)
        self.backend: str = self.net.backend
        self.device = device

    def _classify(self, crops: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), np.float32) * np.float32(1 / 255)
        if self.backend in ("onnxruntime", "openvino"):
            (prob,) = self.net(x)
            return np.asarray(prob)
        import torch

        (prob,) = self.net(torch.from_numpy(x).to(self.device))
        return prob.float().cpu().numpy()

    def apply(self, frames: list[Frame]) -> None:
        """Appends the signs of each frame to its Detections (the existing rows get sign.class -1, sign.score NaN)."""
        o = self.options
        boxes, known, crops = [], [], []
        for f in frames:
            if f.image is None:
                raise ValueError(f"frame {f.stream}#{f.seq} carries no pixels (forward_pixels is off upstream)")
            b = candidates(f.image, o.min_size, o.max_size, o.max_candidates)
            d = f.detections
            if len(self.proposal_ids) and len(d):
                b = np.concatenate([b, d.boxes[np.isin(d.class_ids, self.proposal_ids)]])
            rows = np.flatnonzero(d.class_ids == TRAFFIC_SIGN)
            boxes.append(b)
            known.append(rows)
            crops.append(cut(f.image, np.concatenate([d.boxes[rows], b])))
        n = sum(len(c) for c in crops)
        if self.on_candidates is not None:
            self.on_candidates(n)
        probs = self._classify(np.concatenate(crops)) if n else np.zeros((0, len(SIGN_CLASSES) + 1), np.float32)
        start = 0
        for f, b, rows in zip(frames, boxes, known):
            mine = probs[start : start + len(rows) + len(b)]
            start += len(rows) + len(b)
            found, cls, score = decide(b, mine[len(rows) :], o.min_score, o.nms_iou)
            if len(rows) and len(found):  # a candidate on a sign row already there is that sign
                fresh = box_iou(found, f.detections.boxes[rows]).max(1) <= o.nms_iou
                found, cls, score = found[fresh], cls[fresh], score[fresh]
            f.detections = _with_signs(f.detections, rows, mine[: len(rows)], found, cls, score)


def _with_signs(d: Detections, rows: np.ndarray, row_probs: np.ndarray, boxes: np.ndarray, cls: np.ndarray,
                score: np.ndarray) -> Detections:  # fmt: skip
    """d with its sign rows' class and score set from `row_probs`, and the new signs appended.

    A row that already is a sign (configured, or a detector's) is known to be one: its class is the most probable
    sign class and its score that class's probability given a sign (background left out), however low: the score
    says how sure the reading is, and rules such as sign_seen set their own bar."""
    n, k = len(d), len(boxes)
    extra = {name: np.concatenate([col, np.full(k, -1 if col.dtype.kind in "iu" else np.nan, col.dtype)]) for name, col in d.extra.items()}
    own_cls, own_score = np.full(n, -1, np.int32), np.full(n, np.nan, np.float32)
    if len(rows):
        signs = row_probs[:, : len(SIGN_CLASSES)]
        best = signs.argmax(1)
        p = signs[np.arange(len(rows)), best] / np.maximum(signs.sum(1), 1e-6)
        own_cls[rows], own_score[rows] = best, p
    extra[SIGN_CLASS] = np.concatenate([own_cls, cls.astype(np.int32)])
    extra[SIGN_SCORE] = np.concatenate([own_score, score.astype(np.float32)])
    return Detections(
        np.concatenate([d.boxes, boxes]), np.concatenate([d.scores, score]), np.concatenate([d.class_ids, np.full(k, TRAFFIC_SIGN, np.int32)]),
        np.concatenate([d.track_ids, np.full(k, -1, np.int64)]), extra, {**d.labels, SIGN_CLASS: list(SIGN_CLASSES)},
    )  # fmt: skip
