"""Faces in the infer stage: MTCNN on whole frames or on the head region of person detections, batched
over the batch of frames; optional recognition against a watchlist; optional blurring.

Face rows are appended to each frame's detections as class `face`, with the columns `face.identity`
(watchlist identity, named in the detections' labels; -1: nobody listed), `face.distance` (encoding
distance to that identity, NaN when not compared) and `parent` (the person row the face belongs to, -1
when none), which stay right however later stages filter the rows. The analyze stage's `watchlist`
rule turns the identified rows into alerts.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import torch

from pipeline.blur import blur_regions
from pipeline.boxes import box_ioa, box_iou_torch, nms_torch
from pipeline.categories import category_id
from pipeline.detections import FACE_DISTANCE, FACE_IDENTITY, PARENT, Detections
from pipeline.protocol import Frame
from stages.infer.faces.mtcnn import Mtcnn
from stages.infer.options import FacesOptions

FACE = category_id("face")
PERSON = category_id("person")
PARENT_MIN_INSIDE = 0.5  # whole-frame search: a face belongs to the person box holding at least this much of it


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

    def _find(self, batch: list[Frame]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(boxes [N,4], scores [N], parent person rows [N]) of the faces in each frame, in frame pixels."""
        images: list[torch.Tensor] = []
        owners: list[tuple[int, float, float, int]] = []  # (frame index, x offset, y offset, person row) per image
        for i, frame in enumerate(batch):
            if frame.image is None or frame.image.ndim != 3:
                continue
            full = torch.from_numpy(np.ascontiguousarray(frame.image)).to(self.device)
            if self.o.on == "frames":
                images.append(full)
                owners.append((i, 0.0, 0.0, -1))
                continue
            d = frame.detections
            for row, ((x1, y1, x2, y2), cid, score) in enumerate(zip(d.boxes.tolist(), d.class_ids.tolist(), d.scores.tolist())):
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
                    owners.append((i, float(a), float(b), row))
        found: list[list[tuple[torch.Tensor, torch.Tensor, int]]] = [[] for _ in batch]
        if images:
            for (i, dx, dy, row), (boxes, scores, _marks) in zip(owners, self.mtcnn.detect(images)):
                if len(boxes):
                    found[i].append((boxes + boxes.new_tensor([dx, dy, dx, dy]), scores, row))
        out = []
        for frame, parts in zip(batch, found):
            if not parts:
                out.append((np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)))
                continue
            boxes = torch.cat([p[0] for p in parts])
            scores = torch.cat([p[1] for p in parts])
            rows = np.concatenate([np.full(len(p[0]), p[2], np.int32) for p in parts])
            keep = nms_torch(boxes, scores, 0.5)  # overlapping person crops can see one face twice
            kept = boxes[keep].cpu().numpy().astype(np.float32)
            parents = rows[keep.cpu().numpy()]
            if self.o.on == "frames":
                parents = person_of(kept, frame.detections)
            out.append((kept, scores[keep].cpu().numpy().astype(np.float32), parents))
        return out

    def apply(self, batch: list[Frame]) -> None:
        names = list(self.watchlist.names) if self.watchlist is not None else []
        for frame, (boxes, scores, parents) in zip(batch, self._find(batch)):
            n = len(boxes)
            identity = np.full(n, -1, np.int32)
            distance = np.full(n, np.nan, np.float32)
            if n and self.watchlist is not None and frame.image is not None:
                identity, distance = self._recognise(frame, boxes)
            self._append(frame, boxes, scores, identity, distance, parents, names)
            self.on_faces(frame.stream, n)
            for k in np.flatnonzero(identity >= 0).tolist():
                self.on_match(frame.stream, names[int(identity[k])])
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
    def _append(frame: Frame, boxes: np.ndarray, scores: np.ndarray, identity: np.ndarray, distance: np.ndarray,
                parents: np.ndarray, names: list[str]) -> None:
        d = frame.detections
        n = len(boxes)
        extra_new: dict[str, np.ndarray] = {}
        for name, col in d.extra.items():  # other columns do not apply to faces
            extra_new[name] = np.full(n, -1 if col.dtype.kind == "i" else np.nan, col.dtype)
        old = Detections(d.boxes, d.scores, d.class_ids, d.track_ids, dict(d.extra), dict(d.labels))
        old.extra.setdefault(FACE_IDENTITY, np.full(len(d), -1, np.int32))
        old.extra.setdefault(FACE_DISTANCE, np.full(len(d), np.nan, np.float32))
        old.extra.setdefault(PARENT, np.full(len(d), -1, np.int32))
        old.labels.setdefault(FACE_IDENTITY, names)
        extra_new[FACE_IDENTITY], extra_new[FACE_DISTANCE], extra_new[PARENT] = identity, distance, np.full(n, -1, np.int32)
        new = Detections(boxes, scores, np.full(n, FACE, np.int32), np.full(n, -1, np.int64), extra_new, {FACE_IDENTITY: names})
        if not n:
            frame.detections = old
            return
        both = Detections.concat([old, new])
        both.extra[PARENT][len(old):] = parents  # the persons are among the old rows, which keep their indices
        frame.detections = both



def person_of(faces: np.ndarray, dets: Detections) -> np.ndarray:
    """For faces found on the whole frame: the person row whose box holds most of each face (at least
    PARENT_MIN_INSIDE of its area), -1 when none does."""
    out = np.full(len(faces), -1, np.int32)
    persons = np.flatnonzero(dets.class_ids == PERSON)
    if not len(faces) or not len(persons):
        return out
    inside = box_ioa(faces, dets.boxes[persons])
    best = inside.argmax(axis=1)
    ok = inside[np.arange(len(faces)), best] >= PARENT_MIN_INSIDE
    out[ok] = persons[best[ok]]
    return out
