"""Where objects come into and go out of one camera's view, learned from its tracks.

A track that ends where people leave the picture (its edge, a doorway, the far end of a path) went out of view,
and whoever appears next near there is someone else unless they appear where people come in. A track that
ends where nobody leaves (mid-picture, behind a pillar, in a crowd) was lost, not gone: it may be found again.

The picture is cut into a coarse grid; per cell it counts the distinct tracks seen in it (`visits`), and how
many began (`entries`) and ended (`exits`) there, at the track's anchor (the bottom centre of its box: where it
stands). Only unexplained ends and beginnings count: an end followed within `link` by a beginning nearby (a
person hidden for a moment and found again under a new id) is neither, so places where people are hidden are
not taken for doors. A cell is an exit (entry) zone once enough tracks have ended (begun) in the whole picture
and, over the cell and its neighbours, a large enough share of the tracks that visited ended (began) there.
Until then the frame's edge stands in for both, and a box touching the edge is always at one: it is partly out
of view.

Times are in whatever unit the caller uses throughout (stream seconds in the analyze stage, frames in the
tracker); `end_after` and `link` are in that unit too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.boxes import near_frame_edge

EDGE = 0.01  # of the frame's smaller side: a box this close to the edge may be partly out of view


def _neighbourhood_sum(a: np.ndarray) -> np.ndarray:
    """Each cell plus its 8 neighbours (zero outside the grid)."""
    p = np.pad(a, 1)
    out = np.zeros_like(a)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out += p[dy : dy + a.shape[0], dx : dx + a.shape[1]]
    return out


@dataclass
class _Seen:
    last_box: np.ndarray
    last_time: float
    cells: set[int]  # visited


@dataclass
class SceneZones:
    size: tuple[int, int]  # the frame's (width, height)
    end_after: float  # a track unseen this long has ended
    link: float  # an end and a beginning this close in time (and `reach` in space) are one object hidden a while
    grid: tuple[int, int] = (12, 9)  # cells across, down
    reach: float = 2.0  # box heights between an end and a beginning that are one object
    min_tracks: int = 20  # unexplained ends (beginnings) in the whole picture before exit (entry) zones are learned
    share: float = 0.25  # of the tracks that visited a cell's neighbourhood, the share that ended (began) there
    min_visits: int = 4  # tracks that visited a neighbourhood before its share means anything
    visits: np.ndarray = field(init=False)
    entries: np.ndarray = field(init=False)
    exits: np.ndarray = field(init=False)
    _live: dict[int, _Seen] = field(default_factory=dict)
    _births: list[tuple[np.ndarray, float, bool]] = field(default_factory=list)  # recent beginnings: box, time, explained
    _masks: dict[str, np.ndarray | None] = field(default_factory=dict)  # the zones as of the last update (asked often)

    def __post_init__(self) -> None:
        gx, gy = self.grid
        self.visits = np.zeros((gy, gx), np.int64)
        self.entries = np.zeros((gy, gx), np.int64)
        self.exits = np.zeros((gy, gx), np.int64)

    def cells(self, boxes: np.ndarray) -> np.ndarray:
        """[N] flat cell index of each xyxy box's anchor."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        w, h = self.size
        gx, gy = self.grid
        cx = np.clip(((b[:, 0] + b[:, 2]) / 2 / w * gx).astype(np.int64), 0, gx - 1)
        cy = np.clip((b[:, 3] / h * gy).astype(np.int64), 0, gy - 1)
        return cy * gx + cx

    def update(self, t: float, track_ids: np.ndarray, boxes: np.ndarray) -> None:
        """One frame's confirmed tracks (ids >= 0) at time `t`, in time order."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        for tid, box, c in zip(np.asarray(track_ids).reshape(-1).tolist(), b, self.cells(b).tolist()):
            if tid < 0:
                continue
            s = self._live.get(tid)
            if s is None:
                s = self._live[tid] = _Seen(box, t, set())
                self._births.append((box, t, False))
            s.last_box, s.last_time = box, t
            if c not in s.cells:
                s.cells.add(c)
                self.visits.flat[c] += 1
        for tid in [k for k, s in self._live.items() if t - s.last_time > self.end_after]:
            self._end(self._live.pop(tid))
        # A beginning no end explained by now never will be: every track that vanished before it has ended.
        keep = []
        for birth in self._births:
            box, bt, explained = birth
            if t - bt <= self.end_after + self.link:
                keep.append(birth)
            elif not explained:
                self.entries.flat[int(self.cells(box)[0])] += 1
        self._births = keep
        self._masks.clear()

    def _end(self, s: _Seen) -> None:
        h = max(float(s.last_box[3] - s.last_box[1]), 1.0)
        a = np.array([(s.last_box[0] + s.last_box[2]) / 2, s.last_box[3]])
        explained = False
        for i, (box, bt, done) in enumerate(self._births):
            if not done and s.last_time < bt <= s.last_time + self.link:
                if float(np.hypot((box[0] + box[2]) / 2 - a[0], box[3] - a[1])) <= self.reach * h:
                    self._births[i] = (box, bt, True)
                    explained = True
                    break
        if not explained:
            self.exits.flat[int(self.cells(s.last_box)[0])] += 1

    def _zone(self, counts: np.ndarray) -> np.ndarray | None:
        """[gy, gx] the cells whose neighbourhood has the share of `counts` among its visits; None: not learned."""
        if counts.sum() < self.min_tracks:
            return None
        n, v = _neighbourhood_sum(counts), _neighbourhood_sum(self.visits)
        return (v >= self.min_visits) & (n >= self.share * np.maximum(v, 1))

    def exit_at(self, boxes: np.ndarray) -> np.ndarray:
        """[N] whether each box stands where objects go out of view."""
        return self._at(boxes, "exits")

    def entry_at(self, boxes: np.ndarray) -> np.ndarray:
        """[N] whether each box stands where objects come into view."""
        return self._at(boxes, "entries")

    def _at(self, boxes: np.ndarray, kind: str) -> np.ndarray:
        if kind not in self._masks:
            self._masks[kind] = self._zone(self.exits if kind == "exits" else self.entries)
        zone = self._masks[kind]
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        edge = near_frame_edge(b, self.size, EDGE)
        if zone is None:
            return edge
        return edge | zone.reshape(-1)[self.cells(b)]
