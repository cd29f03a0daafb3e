"""The rules: each looks at one frame's confirmed tracks (with their zones, crossings and motion) and says
what fires. A firing is once per episode (see Sustain) and then quiet for the rule's cooldown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.categories import category_id, category_name
from stages.analyze.motion import TrackMotion
from stages.analyze.options import (
    LineCrossingRule,
    LoiteringRule,
    OvercrowdingRule,
    SpeedRule,
    StoppedVehicleRule,
    WatchlistRule,
    WrongWayRule,
    ZoneIntrusionRule,
)
from stages.analyze.sustain import Sustain

RESET_S = 1.0  # how long a speed/direction condition must be false before its episode ends


@dataclass
class FrameView:
    """One frame of one stream, as the rules see it: confirmed tracks only."""

    seq: int
    pts: float
    ids: np.ndarray  # [N] track ids
    classes: np.ndarray  # [N] category ids
    boxes: np.ndarray  # [N, 4] xyxy pixels
    inside: dict[str, np.ndarray]  # zone -> [N] bool (anchor in zone)
    motion: dict[int, TrackMotion]  # track id -> motion (pixels, or metres with a ground plane)
    crossings: dict[str, list[tuple[int, str]]]  # line -> (track id, direction) completed in this frame
    unit: str  # "px/s" or "m/s": the unit of motion speeds
    faces: list[FaceMatch] = field(default_factory=list)  # watchlist matches in this frame (any track state)


@dataclass
class FaceMatch:
    identity: str
    distance: float
    box: list[float]
    track_id: int  # -1 when the face is not (yet) a confirmed track


@dataclass
class Firing:
    rule: str
    kind: str
    severity: str
    track_ids: list[int]
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    boxes: list[list[float]] | None = None  # what to box in the snapshot, when not the tracks' boxes


class RuleRunner:
    """Base: the class filter and the cooldown. Subclasses implement `step`."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.class_ids = None if cfg.classes is None else {category_id(c) for c in cfg.classes}
        self._last_fire: dict[Any, float] = {}
        self.suppressed = 0  # firings swallowed by the cooldown

    def selected(self, view: FrameView) -> np.ndarray:
        if self.class_ids is None:
            return np.ones(len(view.ids), bool)
        return np.isin(view.classes, list(self.class_ids))

    def fire(self, key: Any, pts: float, track_ids: list[int], message: str, **details: Any) -> Firing | None:
        last = self._last_fire.get(key)
        if last is not None and pts - last < self.cfg.cooldown_s:
            self.suppressed += 1
            return None
        self._last_fire[key] = pts
        return Firing(self.cfg.name, self.cfg.type, self.cfg.severity, track_ids, message, details)

    def forget(self, pts: float, horizon_s: float) -> None:
        keep = max(horizon_s, self.cfg.cooldown_s)
        for k in [k for k, t in self._last_fire.items() if pts - t > keep]:
            del self._last_fire[k]

    def step(self, view: FrameView) -> list[Firing]:
        raise NotImplementedError


def _what(view: FrameView, i: int) -> str:
    return f"{category_name(int(view.classes[i]))} #{int(view.ids[i])}"


class ZoneDwell(RuleRunner):
    """zone_intrusion (short minimum dwell) and loitering (long limit): time inside a zone."""

    def __init__(self, cfg: ZoneIntrusionRule | LoiteringRule) -> None:
        super().__init__(cfg)
        threshold = cfg.min_dwell_s if isinstance(cfg, ZoneIntrusionRule) else cfg.limit_s
        self.sustain: Sustain[int] = Sustain(threshold, cfg.exit_after_s)

    def step(self, view: FrameView) -> list[Firing]:
        out = []
        inside = view.inside[self.cfg.zone] & self.selected(view)
        for i in np.flatnonzero(inside):
            tid = int(view.ids[i])
            if self.sustain.update(tid, view.pts, True):
                dwell = self.sustain.duration(tid, view.pts)
                verb = "entered" if self.cfg.type == "zone_intrusion" else "is loitering in"
                f = self.fire(tid, view.pts, [tid], f"{_what(view, i)} {verb} zone {self.cfg.zone} ({dwell:.1f} s)",
                              zone=self.cfg.zone, dwell_s=round(dwell, 3))
                if f:
                    out.append(f)
        self.sustain.expire(view.pts)
        return out


class LineCrossing(RuleRunner):
    def __init__(self, cfg: LineCrossingRule) -> None:
        super().__init__(cfg)

    def step(self, view: FrameView) -> list[Firing]:
        out = []
        row = {int(t): i for i, t in enumerate(view.ids)}
        sel = self.selected(view)
        for tid, direction in view.crossings.get(self.cfg.line, []):
            i = row.get(tid)
            if i is None or not sel[i] or self.cfg.direction not in ("any", direction):
                continue
            f = self.fire((tid, direction), view.pts, [tid], f"{_what(view, i)} crossed line {self.cfg.line} ({direction})",
                          line=self.cfg.line, direction=direction)
            if f:
                out.append(f)
        return out


class WrongWay(RuleRunner):
    def __init__(self, cfg: WrongWayRule) -> None:
        super().__init__(cfg)
        d = np.asarray(cfg.direction, np.float64)
        self.allowed = d / np.hypot(d[0], d[1])
        self.cos_limit = float(np.cos(np.radians(cfg.max_angle_deg)))
        self.sustain: Sustain[int] = Sustain(cfg.for_s, RESET_S)

    def step(self, view: FrameView) -> list[Firing]:
        out = []
        inside = view.inside[self.cfg.zone] & self.selected(view)
        for i in np.flatnonzero(inside):
            tid = int(view.ids[i])
            v = view.motion[tid].velocity()
            wrong = False
            if v is not None:
                speed = float(np.hypot(v[0], v[1]))
                wrong = speed >= max(self.cfg.min_speed, 1e-9) and float(v @ self.allowed) / speed < self.cos_limit
            if self.sustain.update(tid, view.pts, wrong):
                angle = float(np.degrees(np.arccos(np.clip(float(v @ self.allowed) / speed, -1, 1))))
                f = self.fire(tid, view.pts, [tid], f"{_what(view, i)} moves the wrong way in zone {self.cfg.zone} ({angle:.0f} deg off)",
                              zone=self.cfg.zone, angle_deg=round(angle, 1), speed=round(speed, 3), unit=view.unit)
                if f:
                    out.append(f)
        self.sustain.expire(view.pts)
        return out


class Overcrowding(RuleRunner):
    def __init__(self, cfg: OvercrowdingRule) -> None:
        super().__init__(cfg)
        self.sustain: Sustain[str] = Sustain(cfg.for_s, RESET_S)

    def step(self, view: FrameView) -> list[Firing]:
        inside = view.inside[self.cfg.zone] & self.selected(view)
        count = int(inside.sum())
        if self.sustain.update(self.cfg.zone, view.pts, count > self.cfg.max_count):
            ids = sorted(int(t) for t in view.ids[inside])
            f = self.fire(self.cfg.zone, view.pts, ids, f"{count} objects in zone {self.cfg.zone} (limit {self.cfg.max_count})",
                          zone=self.cfg.zone, count=count, max_count=self.cfg.max_count)
            return [f] if f else []
        return []


class _TrackSpeedRule(RuleRunner):
    """A condition on each selected track's speed (optionally inside a zone), sustained for `for_s`."""

    def __init__(self, cfg: SpeedRule | StoppedVehicleRule) -> None:
        super().__init__(cfg)
        self.sustain: Sustain[int] = Sustain(cfg.for_s, RESET_S)

    def holds(self, speed: float) -> bool:
        raise NotImplementedError

    def firing(self, view: FrameView, i: int, tid: int, speed: float) -> Firing | None:
        raise NotImplementedError

    def step(self, view: FrameView) -> list[Firing]:
        out = []
        sel = self.selected(view)
        if self.cfg.zone is not None:
            sel &= view.inside[self.cfg.zone]
        for i in np.flatnonzero(sel):
            tid = int(view.ids[i])
            speed = view.motion[tid].speed()
            if self.sustain.update(tid, view.pts, speed is not None and self.holds(speed)):
                f = self.firing(view, i, tid, speed)  # type: ignore[arg-type]
                if f:
                    out.append(f)
        self.sustain.expire(view.pts)
        return out


class Speeding(_TrackSpeedRule):
    def holds(self, speed: float) -> bool:
        return speed > self.cfg.limit

    def firing(self, view: FrameView, i: int, tid: int, speed: float) -> Firing | None:
        return self.fire(tid, view.pts, [tid], f"{_what(view, i)} at {speed:.1f} {view.unit} (limit {self.cfg.limit:g})",
                         speed=round(speed, 3), limit=self.cfg.limit, unit=view.unit, zone=self.cfg.zone)


class StoppedVehicle(_TrackSpeedRule):
    def holds(self, speed: float) -> bool:
        return speed <= self.cfg.max_speed

    def firing(self, view: FrameView, i: int, tid: int, speed: float) -> Firing | None:
        still = self.sustain.duration(tid, view.pts)
        where = f" in zone {self.cfg.zone}" if self.cfg.zone else ""
        return self.fire(tid, view.pts, [tid], f"{_what(view, i)} stopped{where} for {still:.0f} s",
                         stopped_s=round(still, 3), zone=self.cfg.zone)


class WatchlistMatch(RuleRunner):
    """A listed identity recognised in `min_frames` frames within `within_s`; quiet per identity for the cooldown."""

    def __init__(self, cfg: WatchlistRule) -> None:
        super().__init__(cfg)
        self.wanted = None if cfg.identities is None else set(cfg.identities)
        self._seen: dict[str, list[float]] = {}

    def step(self, view: FrameView) -> list[Firing]:
        out = []
        best: dict[str, FaceMatch] = {}
        for m in view.faces:
            if (self.wanted is None or m.identity in self.wanted) and (m.identity not in best or m.distance < best[m.identity].distance):
                best[m.identity] = m
        for name, m in sorted(best.items()):
            last = self._last_fire.get(name)
            if last is not None and view.pts - last < self.cfg.cooldown_s:
                continue  # still the same sighting, as far as alerts go
            times = [t for t in self._seen.get(name, []) if view.pts - t < self.cfg.within_s] + [view.pts]
            self._seen[name] = times
            if len(times) < self.cfg.min_frames:
                continue
            tracks = [m.track_id] if m.track_id >= 0 else []
            f = self.fire(name, view.pts, tracks, f"watchlist: {name} recognised (distance {m.distance:.2f})",
                          identity=name, distance=round(m.distance, 4))
            if f:
                f.boxes = [m.box]
                out.append(f)
        for name in [n for n, ts in self._seen.items() if view.pts - ts[-1] >= self.cfg.within_s]:
            del self._seen[name]
        return out


RUNNERS: dict[str, type[RuleRunner]] = {
    "zone_intrusion": ZoneDwell,
    "loitering": ZoneDwell,
    "line_crossing": LineCrossing,
    "wrong_way": WrongWay,
    "overcrowding": Overcrowding,
    "speed": Speeding,
    "stopped_vehicle": StoppedVehicle,
    "watchlist": WatchlistMatch,
}


def build_rule(cfg: Any) -> RuleRunner:
    return RUNNERS[cfg.type](cfg)
