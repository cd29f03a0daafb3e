"""Counting crossings of a directed line exactly: once per real crossing, whatever the detector does.

A track's anchor (the bottom centre of its box: where it stands) must leave a band of `hysteresis` pixels
on one side and reach beyond the band on the other side, through the line's extent, before a crossing
counts. So a box jittering on the line is counted once (or never, if it never leaves the band), a track that
flickers out for a few frames keeps its side (state is kept per track id, not per detection), and
unconfirmed tracks (id -1) are never counted. A track id that jumps across the line faster than any
object moves (`max_speed` box heights per second: the tracker handed the id to another object) moves its
reference side without counting.

A track first seen inside the band (out of an occlusion at the line) starts on the side its anchor is on:
leaving the band on the other side is a crossing.

Identities break, so two more rules keep the count exact:
- a track seen again after more than `max_gap_s` unseen (re-identified after an occlusion, or handed to
  someone else) counts a crossing only if walking the straight line through the counting line in that time
  is plausible (`gap_speed` box heights per second): its path over the gap was not observed;
- a new track whose first side is opposite to that of a track that vanished less than `stitch_s` before,
  close to the line on both sides (`stitch_reach` box heights), heading for it before it vanished (not standing
  or walking along it: `min_approach`) and at a plausible speed, is the same person found again under a new id:
  the crossing is counted once, and the vanished track can no longer count it.
  If the vanished track is seen again while the new one is still seen too, they were two people after all:
  it goes on from where it was (its own crossing counts); seen again without the new one, it is the same
  person under the old id once more, on the side the stitch moved it to.
  Not where people leave or come in (the frame's edge, and the exit and entry zones learned from the tracks:
  `pipeline.scene_zones`): a track that vanished there left the picture, one that starts there came in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.scene_zones import SceneZones
from stages.analyze.geometry import Line, segments_intersect

TRACK_END_S = 3.0  # a track unseen this long has ended (for learning where tracks leave the picture)
STITCH_S = 2.0  # how long after a track vanished a new one may continue it across the line
APPROACH_S = 1.0  # how far back a vanished track's way towards the line is looked at


def entry_exit_zones(frame_size: tuple[int, int], stitch_s: float = STITCH_S) -> SceneZones:
    """The entry and exit zones line counters go by: an end and a beginning within `stitch_s` (the counters' own
    stitching time) and close by are one person hidden a while, not someone leaving and someone else coming."""
    return SceneZones(frame_size, end_after=TRACK_END_S, link=stitch_s)


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
    time: float  # and when (stream time, seconds)
    height: float  # its box height then (pixels)
    box: np.ndarray  # its box then
    trail: list[tuple[float, float]] = field(default_factory=list)  # (time, distance from the line) over the last APPROACH_S


@dataclass
class LineCounter:
    line: Line
    hysteresis: float = 8.0  # pixels either side of the line that never decide a side
    forget_after: int = 300  # frames without the track before its side is forgotten (bounded memory)
    max_speed: float = 15.0  # box heights per second; a car at 50 km/h is about 9, a runner about 4
    max_gap_s: float = 0.5  # unseen longer than this, the path in between is not observed
    gap_speed: float = 3.0  # box heights per second a path over an unobserved gap may need (a walk is about 0.8)
    stitch_s: float = STITCH_S
    stitch_reach: float = 1.5  # box heights from the line both ends of a stitched crossing must be
    min_approach: float = 0.1  # box heights a second a vanished track must have been nearing the line at to be stitched
    frame_size: tuple[int, int] | None = None  # (width, height): where tracks enter and leave; None: unknown
    zones: SceneZones | None = None  # where tracks enter and leave, learned and updated by its owner (a stream's
    # lines share one: `entry_exit_zones`); None: the counter learns its own, given the frame size
    counts: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    _tracks: dict[int, _Side] = field(default_factory=dict)
    _entering: dict[int, tuple[int, np.ndarray, float, int]] = field(default_factory=dict)  # first seen in the band: sign, point, time, frame
    _stitched: dict[int, tuple[int, _Side]] = field(default_factory=dict)  # vanished track -> the new track that continued it, its state then
    _own_zones: bool = False

    def __post_init__(self) -> None:
        if self.zones is None and self.frame_size is not None:
            self.zones, self._own_zones = entry_exit_zones(self.frame_size, self.stitch_s), True

    def update(self, frame: int, t: float, track_ids: np.ndarray, boxes: np.ndarray) -> list[tuple[int, str]]:
        """Feed one frame's confirmed tracks (`t`: its stream time, seconds); returns the (track id,
        direction) crossings it completes."""
        events: list[tuple[int, str]] = []
        ids = np.asarray(track_ids).reshape(-1)
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        heights = np.maximum(b[:, 3] - b[:, 1], 1.0)
        pts = anchors(b)
        dist = self.line.signed_distance(pts)
        entry = self.zones.entry_at(b) if self.zones is not None else np.zeros(len(b), bool)
        seen = set(ids.tolist())
        for tid, p, d, h, e, box in zip(ids.tolist(), pts, dist, heights, entry.tolist(), b):
            if tid < 0:
                continue  # not a confirmed track
            state = self._tracks.get(tid)
            side = 1 if d > self.hysteresis else -1 if d < -self.hysteresis else 0
            if state is None and tid in self._stitched:
                state = self._tracks[tid] = self._unstitch(tid, p, t, seen)
            if state is None:
                if not side:
                    # First seen inside the band (out of an occlusion at the line): it starts on the side of the
                    # line it stands on, a crossing only once it leaves the band on the other side.
                    if d and tid not in self._entering:
                        self._entering[tid] = (1 if d > 0 else -1, p, t, frame)
                    continue
                self._tracks[tid] = _Side(side, p, t, frame, t, h, box, [(t, abs(float(d)))])
                entered = self._entering.pop(tid, None)
                if entered is not None and entered[0] != side:
                    speed = float(np.hypot(*(p - entered[1]))) / h / max(t - entered[2], 1e-3)
                    if speed <= self.max_speed and segments_intersect(entered[1], p, self.line.a, self.line.b):
                        events.append(self._count(tid, side))
                        continue
                gone = None if e else self._vanished_across(tid, side, p, float(d), t, h, seen)
                if gone is not None:
                    # Found again: it cannot count this crossing a second time.
                    self._stitched[gone] = (tid, self._tracks.pop(gone))
                    events.append(self._count(tid, side))
                continue
            gap = t - state.time
            state.frame, state.time, state.height, state.box = frame, t, h, box
            state.trail = [x for x in state.trail if t - x[0] <= APPROACH_S] + [(t, abs(float(d)))]
            if side == 0:
                continue  # inside the band: undecided, keeps its side
            dt = max(t - state.point_time, 1e-3)
            jump = float(np.hypot(*(p - state.point))) / h / dt
            limit = self.gap_speed if gap > self.max_gap_s else self.max_speed
            if side != state.side and jump <= limit and segments_intersect(state.point, p, self.line.a, self.line.b):
                events.append(self._count(tid, side))
            # Passing beside the line's end (not through it) only moves the reference side.
            state.side, state.point, state.point_time = side, p, t
        if self._own_zones and self.zones is not None:
            self.zones.update(t, ids, b)
        for tid in [k for k, s in self._tracks.items() if frame - s.frame > self.forget_after]:
            del self._tracks[tid]
        for tid in [k for k, s in self._entering.items() if frame - s[3] > self.forget_after]:
            del self._entering[tid]
        for tid in [k for k, (_, s) in self._stitched.items() if frame - s.frame > self.forget_after]:
            del self._stitched[tid]
        return events

    def _count(self, tid: int, side: int) -> tuple[int, str]:
        direction = "in" if side > 0 else "out"
        self.counts[direction] += 1
        return tid, direction

    def _approaching(self, st: _Side) -> bool:
        """Whether a track was heading for the line when last seen: over its last `APPROACH_S` (at least a third of
        it) it came nearer by `min_approach` box heights a second. Unknown (seen too briefly) counts as heading there."""
        (t0, d0), (t1, d1) = st.trail[0], st.trail[-1]
        if t1 - t0 < APPROACH_S / 3:
            return True
        return (d0 - d1) / st.height / (t1 - t0) >= self.min_approach

    def _unstitch(self, tid: int, p: np.ndarray, t: float, seen: set[int]) -> _Side:
        """The state of a track, continued by a new one, that is seen again."""
        new, state = self._stitched.pop(tid)
        if new in seen:
            return state  # two people: it goes on from where it was
        # The same person: the stitch counted its crossing; it stands beyond the line now.
        state.side, state.point, state.point_time = -state.side, p, t
        return state

    def _vanished_across(self, tid: int, side: int, p: np.ndarray, d: float, t: float, h: float, seen: set[int]) -> int | None:
        """The track that vanished most recently on the other side, close to the line, that this new track
        plausibly continues through the line; None if there is none."""
        if abs(d) > self.stitch_reach * h:
            return None
        best, best_time = None, -np.inf
        for other, st in self._tracks.items():
            if other == tid or other in seen or st.side != -side or not 0 < t - st.time <= self.stitch_s:
                continue
            if self.zones is not None and self.zones.exit_at(st.box)[0]:
                continue  # it left the picture there
            if abs(float(self.line.signed_distance(st.point[None])[0])) > self.stitch_reach * st.height:
                continue
            if not self._approaching(st):
                continue  # it stood or walked along the line until it vanished: whoever appears beyond is someone else
            speed = float(np.hypot(*(p - st.point))) / max(h, st.height) / max(t - st.point_time, 1e-3)
            if speed <= self.gap_speed and segments_intersect(st.point, p, self.line.a, self.line.b) and st.time > best_time:
                best, best_time = other, st.time
        return best
