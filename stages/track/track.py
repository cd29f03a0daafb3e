"""One tracked object: its state, its recent boxes (for the motion model) and its appearance."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class TrackState(IntEnum):
    TENTATIVE = 0  # seen, not yet trusted: never reaches analytics
    CONFIRMED = 1  # matched in its last frame
    LOST = 2  # confirmed once, unmatched lately: still predicted, may be re-identified
    REMOVED = 3


@dataclass
class Track:
    key: int  # internal, per stream; the public id is given on confirmation so that ids have no gaps
    class_id: int
    group: int  # class group: tracks match detections of their own group only
    first_frame: int
    window: int  # observations kept for the motion model
    track_id: int = -1
    state: TrackState = TrackState.TENTATIVE
    hits: int = 0
    embedding: np.ndarray | None = None
    score: float = 0.0
    motion_state: object | None = None  # owned by the motion model, if it keeps state between frames
    # The last `window` observations, oldest first, as arrays the motion model's batch is stacked from;
    # rows before the first observation have frame -1.
    frames: np.ndarray = field(init=False)
    boxes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.frames = np.full(self.window, -1, np.int64)
        self.boxes = np.zeros((self.window, 4), np.float32)

    @property
    def last_frame(self) -> int:
        return int(self.frames[-1])

    @property
    def last_box(self) -> np.ndarray:
        return self.boxes[-1]

    def observe(self, frame: int, box: np.ndarray, score: float, class_id: int, group: int) -> None:
        self.frames[:-1] = self.frames[1:]
        self.boxes[:-1] = self.boxes[1:]
        self.frames[-1] = frame
        self.boxes[-1] = box
        self.hits += 1
        self.score = score
        self.class_id = class_id  # the latest label wins: vehicle labels flicker (car/bus/truck)
        self.group = group

    def update_embedding(self, embedding: np.ndarray, momentum: float) -> None:
        """Exponential moving average of the crops' embeddings, kept on the unit sphere."""
        if self.embedding is None:
            self.embedding = embedding.astype(np.float32, copy=True)
            return
        e = momentum * self.embedding + (1.0 - momentum) * embedding
        self.embedding = (e / max(float(np.linalg.norm(e)), 1e-12)).astype(np.float32)
