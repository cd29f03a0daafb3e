"""One stream's analytics: its zones, lines, ground plane, line counters, track motion and rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.categories import category_name
from pipeline.detections import FACE_DISTANCE, FACE_IDENTITY, PARENT, Detections
from pipeline.scene_zones import SceneZones
from stages.analyze.geometry import Line, Zone
from stages.analyze.ground_plane import GroundPlane
from stages.analyze.line_counter import LineCounter, anchors, entry_exit_zones
from stages.analyze.motion import TrackMotion
from stages.analyze.options import ShapeConfig, StreamAnalyticsConfig
from stages.analyze.rule import FaceMatch, Firing, FrameView, Rule
from stages.analyze.rules import build_rule


def fit_geometry(cfg: StreamAnalyticsConfig, width: int, height: int) -> tuple[dict[str, Zone], dict[str, Line]]:
    """A stream's zones and lines in pixels of frames of width x height: the config's own frame size, scaled
    from it, or fractions of the frame for relative shapes."""
    cw, ch = cfg.frame_size
    sx, sy = width / cw, height / ch

    def pts(shape: ShapeConfig) -> list[list[float]]:
        rel = cfg.relative if shape.relative is None else shape.relative
        p = np.asarray(shape.points, np.float64)
        return (p * ([width, height] if rel else [sx, sy])).tolist()  # type: ignore[no-any-return]

    zones = {n: Zone.load(n, pts(s), (width, height)) for n, s in cfg.zones.items()}
    lines = {n: Line.load(n, pts(s), (width, height)) for n, s in cfg.lines.items()}
    return zones, lines


@dataclass
class FrameResult:
    firings: list[Firing]
    crossings: dict[str, list[tuple[int, str]]]
    occupancy: dict[str, int]  # zone -> confirmed tracks inside


class Scene:
    def __init__(self, cfg: StreamAnalyticsConfig, forget_after_s: float, speed_window_s: float) -> None:
        self.cfg = cfg
        self.forget_after_s = forget_after_s
        self.speed_window_s = speed_window_s
        self.size: tuple[int, int] | None = None
        self.zones: dict[str, Zone] = {}
        self.lines: dict[str, Line] = {}
        self.counters: dict[str, LineCounter] = {}
        self.entry_exit: SceneZones | None = None  # learned from the tracks; its lines go by it (kept over a new geometry)
        self.ground: GroundPlane | None = None
        self.rules: list[Rule[Any]] = [build_rule(r) for r in cfg.rules]
        self.motion: dict[int, TrackMotion] = {}
        self.scale_warning: str | None = None
        self.carried_counts: dict[str, dict[str, int]] = {}  # line counts from before a restart of the stream

    def _fit(self, width: int, height: int) -> None:
        """Geometry in pixels of this frame size: the config's own size, or scaled from it."""
        if self.size == (width, height):
            return
        cw, ch = self.cfg.frame_size
        if (width, height) != (cw, ch):
            self.scale_warning = f"frames are {width}x{height}, geometry was given for {cw}x{ch}: scaled"
        self.zones, self.lines = fit_geometry(self.cfg, width, height)
        old = self.counters
        if self.entry_exit is None or self.entry_exit.size != (width, height):
            self.entry_exit = entry_exit_zones((width, height))
        self.counters = {n: LineCounter(line, hysteresis=self.cfg.line_hysteresis, frame_size=(width, height), zones=self.entry_exit)
                         for n, line in self.lines.items()}  # fmt: skip
        for n, c in old.items():  # counts survive a size change or a new geometry; sides do not (the line moved)
            if n in self.counters:
                self.counters[n].counts.update(c.counts)
        for n, counts in self.carried_counts.items():
            if n in self.counters and not old:
                self.counters[n].counts.update(counts)
        gp = self.cfg.ground_plane
        if gp is not None:
            image = (np.asarray(gp.image, np.float64) * [width / cw, height / ch]).tolist()
            self.ground = GroundPlane.load(image, gp.ground, (width, height))
        self.size = (width, height)

    def reconfigure(self, cfg: StreamAnalyticsConfig) -> None:
        """New zones, lines and rules from an edited config, without a restart: a line's count goes on under its
        name (its sides are found again), the rules keep their state unless the rules themselves changed."""
        if cfg.rules != self.cfg.rules:
            self.rules = [build_rule(r) for r in cfg.rules]
        self.cfg = cfg
        self.size = None  # refitted at the next frame

    def update(self, seq: int, pts: float, width: int, height: int, dets: Detections) -> FrameResult:
        """One frame's confirmed tracks, and its watchlist matches (face rows with an identity)."""
        self._fit(width, height)
        keep = dets.track_ids >= 0  # only confirmed tracks feed the analytics
        ids, classes, boxes = dets.track_ids[keep], dets.class_ids[keep], dets.boxes[keep].astype(np.float64)
        feet = anchors(boxes)
        ground = self.ground.to_ground(feet) if self.ground is not None and len(feet) else feet
        for tid, g in zip(ids.tolist(), ground):
            m = self.motion.get(tid)
            if m is None:
                m = self.motion[tid] = TrackMotion(self.speed_window_s)
            m.add(pts, g)
        inside = {n: z.contains(feet) if len(feet) else np.zeros(0, bool) for n, z in self.zones.items()}
        crossings = {n: c.update(seq, pts, ids, boxes) for n, c in self.counters.items()}
        if self.entry_exit is not None:
            self.entry_exit.update(pts, ids, boxes)
        view = FrameView(seq, pts, ids, classes, boxes, inside, self.motion, crossings, "m/s" if self.ground else "px/s", face_matches(dets),
                         dets, self.lines, self.zones)  # fmt: skip
        firings = [f for rule in self.rules for f in rule.step(view)]
        firings += [f for rule in self.rules for f in rule.follow(pts)]
        for tid in [t for t, m in self.motion.items() if pts - m.last_seen > self.forget_after_s]:
            del self.motion[tid]
        for rule in self.rules:
            rule.forget(pts, self.forget_after_s)
        return FrameResult(firings, {n: c for n, c in crossings.items() if c}, {n: int(v.sum()) for n, v in inside.items()})

    def boxes_of(self, dets: Detections, track_ids: list[int]) -> list[list[float]]:
        rows = {int(t): i for i, t in enumerate(dets.track_ids)}
        return [np.round(dets.boxes[rows[t]].astype(np.float64), 2).tolist() for t in track_ids if t in rows]


    def labels_of(self, dets: Detections, track_ids: list[int]) -> list[str]:
        """The category of each of `track_ids` in this frame, in their order ("" for one not in it)."""
        rows = {int(t): i for i, t in enumerate(dets.track_ids)}
        return [category_name(int(dets.class_ids[rows[t]])) if t in rows else "" for t in track_ids]


def face_matches(dets: Detections) -> list[FaceMatch]:
    """The watchlist matches of a frame: each face row with an identity, with the face's own box and the
    track id of its person (the face row's own when it has no tracked person)."""
    if FACE_IDENTITY not in dets.extra:
        return []
    parent = dets.extra.get(PARENT)
    out = []
    for row in np.flatnonzero(dets.extra[FACE_IDENTITY] >= 0).tolist():
        track_id = int(dets.track_ids[row])
        if parent is not None and parent[row] >= 0 and dets.track_ids[parent[row]] >= 0:
            track_id = int(dets.track_ids[parent[row]])
        name = dets.label(FACE_IDENTITY, row)
        distance = float(dets.extra[FACE_DISTANCE][row]) if FACE_DISTANCE in dets.extra else float("nan")
        out.append(FaceMatch(str(name), round(distance, 4), dets.boxes[row].astype(np.float64).round(2).tolist(), track_id))
    return out
