"""Counting crossings of a directed line exactly: once per real crossing, whatever the detector does.

A track's anchor (the bottom centre of its box: where it stands) must leave a band of `hysteresis` pixels
on one side and reach beyond the band on the other side, through the line's extent, before a crossing
counts. So a box jittering on the line is counted once (or never, if it never leaves the band), a track that
flickers out for a few frames keeps its side (state is kept per track id, not per detection), and
unconfirmed tracks (id -1) are never counted. A track id that jumps across the line faster than any
object moves (`max_speed` box heights per second: the tracker handed the id to another object) moves its
reference side without counting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.analyze.geometry import Line, segments_intersect


def anchors(boxes: np.ndarray) -> np.ndarray:
    """Bottom centre of xyxy boxes [N, 4] -> [N, 2]."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, b[:, 3]], axis=1)


@dataclass
class _Side:
    side: int  # +1 on the `in` side beyond the band, -1 on the `out` side
    point: np.ndarray  # where the anchor last was beyond the band on that side
    point_time: float  # and when (stream time, seconds)
    frame: int  # last frame the track was seen


@dataclass
class LineCounter:
    line: Line
    hysteresis: float = 8.0  # pixels either side of the line that never decide a side
    forget_after: int = 300  # frames without the track before its side is forgotten (bounded memory)
    max_speed: float = 15.0  # box heights per second; a car at 50 km/h is about 9, a runner about 4
    counts: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    _tracks: dict[int, _Side] = field(default_factory=dict)

    def update(self, frame: int, t: float, track_ids: np.ndarray, boxes: np.ndarray) -> list[tuple[int, str]]:
        """Feed one frame's confirmed tracks (`t`: its stream time, seconds); returns the (track id,
        direction) crossings it completes."""
        events: list[tuple[int, str]] = []
        ids = np.asarray(track_ids).reshape(-1)
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        heights = np.maximum(b[:, 3] - b[:, 1], 1.0)
        pts = anchors(b)
        dist = self.line.signed_distance(pts)
        for tid, p, d, h in zip(ids.tolist(), pts, dist, heights):
            if tid < 0:
                continue  # not a confirmed track
            state = self._tracks.get(tid)
            side = 1 if d > self.hysteresis else -1 if d < -self.hysteresis else 0
            if state is None:
                if side:
                    self._tracks[tid] = _Side(side, p, t, frame)
                continue
            state.frame = frame
            if side == 0:
                continue  # inside the band: undecided, keeps its side
            jump = float(np.hypot(*(p - state.point))) / h / max(t - state.point_time, 1e-3)
            if side != state.side and jump <= self.max_speed and segments_intersect(state.point, p, self.line.a, self.line.b):
                direction = "in" if side > 0 else "out"
                self.counts[direction] += 1
                events.append((tid, direction))
            # Passing beside the line's end (not through it) only moves the reference side.
            state.side, state.point, state.point_time = side, p, t
        for tid in [k for k, s in self._tracks.items() if frame - s.frame > self.forget_after]:
            del self._tracks[tid]
        return events
