"""Faces in the infer stage: MTCNN on whole frames or on the head region of person detections, batched
over the batch of frames; optional recognition against a watchlist; optional blurring.

Face rows are appended to each frame's detections as class `face`, with the columns `face.identity`
(watchlist index, -1: nobody listed) and `face.distance` (encoding distance to that identity, NaN when
not compared). Matches are also named in `frame.attrs["faces"]` (`[{"row", "identity", "distance"}]`),
which the analyze stage's `watchlist` rule turns into alerts.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import torch

from pipeline.blur import blur_regions
from pipeline.boxes import box_iou_torch, nms_torch
from pipeline.categories import category_id
from pipeline.detections import Detections
from pipeline.protocol import Frame
from stages.infer.faces.mtcnn import Mtcnn
from stages.infer.options import FacesOptions

FACE = category_id("face")
PERSON = category_id("person")
IDENTITY, DISTANCE = "face.identity", "face.distance"


class FaceRunner:
    def __init__(
        self,
        options: FacesOptions,
        device: torch.device,
        log: logging.Logger,
        on_faces: Callable[[str, int], None] = lambda stream, n: None,
        on_match: Callable[[str, str], None] = lambda stream, identity: None,
        on_encode: Callable[[float, int], None] = lambda seconds, n: None,
    ) -> None:
        self.o = options
        self.device = device
        self.log = log
        self.mtcnn = Mtcnn(options.mtcnn, device)
        self.on_faces, self.on_match, self.on_encode = on_faces, on_match, on_encode
        # Per stream: faces encoded lately, as (box, identity, distance, stream time of the encoding).
        self._recent: dict[str, list[tuple[np.ndarray, int, float, float]]] = {}
        self.encoder = None
        self.watchlist = None
        if options.watchlist is not None:
            from stages.infer.faces.encoder import FaceEncoder
            from stages.infer.faces.watchlist import Watchlist

            self.encoder = FaceEncoder()
            self.watchlist = Watchlist.load(options.watchlist, self.encoder, self._detect_one, log=log)
            log.info("watchlist %s: %d identities, %d photos", options.watchlist.folder, len(self.watchlist.names), self.watchlist.photos)

    def _detect_one(self, image: np.ndarray) -> np.ndarray:
        """Face boxes in one BGR image (enrolment photos)."""
        boxes, _scores, _marks = self.mtcnn.detect_numpy([image])[0]
        return boxes

    def _find(self, batch: list[Frame]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(boxes [N,4], scores [N]) of the faces in each frame, in frame pixels."""
        images: list[torch.Tensor] = []
        owners: list[tuple[int, float, float]] = []  # (frame index, x offset, y offset) per image
        for i, frame in enumerate(batch):
            if frame.image is None or frame.image.ndim != 3:
                continue
            full = torch.from_numpy(np.ascontiguousarray(frame.image)).to(self.device)
            if self.o.on == "frames":
                images.append(full)
                owners.append((i, 0.0, 0.0))
                continue
            d = frame.detections
            for (x1, y1, x2, y2), cid, score in zip(d.boxes.tolist(), d.class_ids.tolist(), d.scores.tolist()):
                h = y2 - y1
                if cid != PERSON or score < self.o.person_min_score or h < self.o.person_min_height:
                    continue
                # The head is in the top part of a standing person's box (0.45 of its height); a box about as
                # tall as it is wide is a head and shoulders (a close-up, cut by the frame): search most of it.
                # Widened a little for turned heads.
                w = x2 - x1
                a, b = max(int(x1 - 0.1 * w), 0), max(int(y1 - 0.05 * h), 0)
                c, e = min(int(x2 + 0.1 * w), frame.width), min(int(y1 + min(h, max(0.45 * h, 0.9 * w))), frame.height)
                if c - a >= 12 and e - b >= 12:
                    images.append(full[b:e, a:c])
                    owners.append((i, float(a), float(b)))
        found: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in batch]
        if images:
            for (i, dx, dy), (boxes, scores, _marks) in zip(owners, self.mtcnn.detect(images)):
                if len(boxes):
                    found[i].append((boxes + boxes.new_tensor([dx, dy, dx, dy]), scores))
        out = []
        for parts in found:
            if not parts:
                out.append((np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
                continue
            boxes = torch.cat([p[0] for p in parts])
            scores = torch.cat([p[1] for p in parts])
            keep = nms_torch(boxes, scores, 0.5)  # overlapping person crops can see one face twice
            out.append((boxes[keep].cpu().numpy().astype(np.float32), scores[keep].cpu().numpy().astype(np.float32)))
        return out

    def apply(self, batch: list[Frame]) -> None:
        for frame, (boxes, scores) in zip(batch, self._find(batch)):
            n = len(boxes)
            identity = np.full(n, -1, np.int32)
            distance = np.full(n, np.nan, np.float32)
            if n and self.watchlist is not None and frame.image is not None:
                identity, distance = self._recognise(frame, boxes)
            self._append(frame, boxes, scores, identity, distance)
            self.on_faces(frame.stream, n)
            matches = []
            base = len(frame.detections) - n
            for k in np.flatnonzero(identity >= 0).tolist():
                name = self.watchlist.names[int(identity[k])] if self.watchlist else str(identity[k])
                matches.append({"row": base + k, "identity": name, "distance": round(float(distance[k]), 4)})
                self.on_match(frame.stream, name)
            if matches:
                frame.attrs["faces"] = matches
            if self.o.blur != "none" and n and frame.image is not None:
                hide = boxes if self.o.blur == "all" else boxes[identity < 0]
                if len(hide):
                    frame.image = blur_regions(frame.image, hide)

    def _recognise(self, frame: Frame, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Identity and distance per face: reused from an overlapping face encoded lately, else encoded now."""
        assert self.watchlist is not None and self.encoder is not None and frame.image is not None
        n = len(boxes)
        identity = np.full(n, -1, np.int32)
        distance = np.full(n, np.nan, np.float32)
        encoded_at = np.full(n, frame.pts)
        recent = [r for r in self._recent.get(frame.stream, []) if 0 <= frame.pts - r[3] < self.o.reencode_after_s]
        todo = []
        if recent:
            overlap = box_iou_torch(torch.from_numpy(boxes), torch.from_numpy(np.stack([r[0] for r in recent]))).numpy()
        for k in range(n):
            j = int(overlap[k].argmax()) if recent else -1
            if j >= 0 and overlap[k, j] >= 0.3:
                identity[k], distance[k], encoded_at[k] = recent[j][1], recent[j][2], recent[j][3]
            else:
                todo.append(k)
        if todo:
            t0 = time.perf_counter()
            enc = self.encoder.encode(frame.image, boxes[todo])
            self.on_encode(time.perf_counter() - t0, len(todo))
            identity[todo], distance[todo] = self.watchlist.match(enc)
        self._recent[frame.stream] = [(boxes[k], int(identity[k]), float(distance[k]), float(encoded_at[k])) for k in range(n)]
        return identity, distance

    def end_stream(self, stream: str) -> None:
        self._recent.pop(stream, None)

    @staticmethod
    def _append(frame: Frame, boxes: np.ndarray, scores: np.ndarray, identity: np.ndarray, distance: np.ndarray) -> None:
        d = frame.detections
        n = len(boxes)
        extra_new: dict[str, np.ndarray] = {}
        for name, col in d.extra.items():  # other columns do not apply to faces
            extra_new[name] = np.full(n, -1 if col.dtype.kind == "i" else np.nan, col.dtype)
        old = Detections(d.boxes, d.scores, d.class_ids, d.track_ids, dict(d.extra))
        old.extra.setdefault(IDENTITY, np.full(len(d), -1, np.int32))
        old.extra.setdefault(DISTANCE, np.full(len(d), np.nan, np.float32))
        extra_new[IDENTITY], extra_new[DISTANCE] = identity, distance
        new = Detections(boxes, scores, np.full(n, FACE, np.int32), np.full(n, -1, np.int64), extra_new)
        frame.detections = Detections.concat([old, new]) if n else old

