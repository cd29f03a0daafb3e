"""Where a track has been lately, and how fast it moves: displacement over a time window.

A speed from one frame to the next is mostly box jitter; over a window of about a second the jitter
of the two end points is divided by the window, not by one frame interval.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class TrackMotion:
    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._hist: deque[tuple[float, np.ndarray]] = deque()
        self.last_seen = -np.inf

    def add(self, pts: float, point: np.ndarray) -> None:
        self._hist.append((pts, np.asarray(point, np.float64)))
        self.last_seen = pts
        # Keep one sample older than the window, so the window is always spanned once it can be.
        while len(self._hist) > 2 and pts - self._hist[1][0] >= self.window_s:
            self._hist.popleft()

    def velocity(self) -> np.ndarray | None:
        """Units per second over the last window; None until at least half a window has been seen."""
        if len(self._hist) < 2:
            return None
        t0, p0 = self._hist[0]
        t1, p1 = self._hist[-1]
        if t1 - t0 < 0.5 * self.window_s:
            return None
        return (p1 - p0) / (t1 - t0)

    def speed(self) -> float | None:
        v = self.velocity()
        return None if v is None else float(np.hypot(v[0], v[1]))
