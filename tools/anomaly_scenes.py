"""Abnormal-behaviour scenes: real people walking new paths over the real campus, with injected anomalies and
exact per-track, per-frame labels.

Built on tools/synthetic.py: its sprite bank (people cut from hand-labelled vtest.avi frames, the empty campus
median, the scenery that stands in front of walkers) and its pinhole camera fitted to the footage, so that every
person has a position in metres on the ground and their size and speed in pixels follow perspective. Speeds
below are ground speeds in metres per second through that camera.

A scene has a dominant walking direction (`flow_deg`, on the ground: 0 = +X, image right; 90 = away from the
camera). Normal walkers cross the scene along smooth, turn-rate-limited paths at 1.0-1.6 m/s, 80 % with the flow
and 20 % across it, their course wandering up to 0.35 rad, and may pause for 1-4 s. They come and go at the frame
edges, or at the building at the top, where the ground ends (walls turn them along it, with the flow). Walls and
drift never turn anyone unlabelled more than FLOW_CONE_DEG from the flow, and nobody unlabelled runs, circles or
lingers. People do not avoid each other: they pass in front of or behind one another, drawn by depth.

Anomalies, each an event on one track (two for a struggle) with a first and last frame. The anomalous person is
seen walking normally on screen for 2 s first, and the labelled part happens in full view (box inside the frame)
on open ground:

- running: ground speed >= 2.5 m/s (cruise 2.8-5 m/s for 2-5 s); the label is exactly the frames at >= 2.5 m/s
  while on screen (the ramps between walking and 2.5 m/s, under 0.5 s each, are not); runners may leave the frame;
- sudden_reversal: brakes to a stop, stands 0.5-2 s, turns round (180 +- 15 deg) and walks back; labelled from the
  first braking frame to 2 s after it is walking again (these walkers cross the flow, so walking back is not
  against it);
- zigzag: 4-7 legs of 0.8-1.6 s at 35-57 deg either side of its course, fast turns between them; labelled from the
  first turn to the end of the last leg;
- circling: one or two whole turns (at most 20 s) of a circle of 1-2 m radius at 1.1-1.4 m/s; labelled over the circle;
- lingering: stops and stays within LINGER_RADIUS_M of the stopping point for 15-25 s (normal pauses last at
  most 4 s), standing and shuffling; labelled from the stop to leaving;
- against_flow: a walker whose course is the flow reversed (always within AGAINST_CONE_DEG); the whole track on
  screen is labelled;
- fall: the sprite rotates about its feet to the ground over 0.5-1 s (sideways in the image, towards where it
  was walking) and lies there to the end of the sequence; the box is then the lying box (wider than tall);
  labelled from the first tilted frame to the last frame of the sequence;
- struggle: two people meet and tussle erratically 0.35-0.7 m apart for 3-6 s (jerky moves up to ~2 m/s,
  tilting, facing each other), then walk off; both tracks get the same interval and event number.

Boxes are the drawn sprite rectangles clipped to the frame (as tools/synthetic.py's ground truth); for a tilted
sprite (fall, struggle) the tight box round its rotated mask, as a labeller would draw it. A track's ground
position is its foot point (a fallen person's feet stay where they were).

Seeds come in three disjoint ranges: TRAIN (normal scenes only, for fitting models of normal motion), TUNE (with
anomalies, for choosing thresholds), EVAL (with anomalies, for the final figures only). EVAL scenes use other
people than TRAIN and TUNE: the sprite bank is split by look (`EVAL_SPRITES`), as vtest's cast is small; several
crops in dark jacket and jeans may be one person, so the EVAL looks are the clearly distinct ones.

`trajectories(spec)` gives the same tracks, boxes and labels as `make_scene(spec)` without drawing a pixel (no
visibility then), for training trajectory models on lots of data. The same spec gives byte-identical frames and
truth: seeded numpy Generators only, one for motion and one for pixels.

    python -m tools.anomaly_scenes --out DIR --split eval --n 5

writes DIR/NAME.avi (MJPG) and DIR/NAME_truth.json per scene and DIR/summary.json, and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tools.street_clip import truth_json
from tools.synthetic import CAMPUS_SIZE, Sprite, SpriteBank, _casting, _clip_boxes, _int_box, _shadow, _World, _wrap, sprite_bank

ANOMALY_TYPES = ("running", "sudden_reversal", "zigzag", "circling", "lingering", "against_flow", "fall", "struggle")
WALK_MPS = (1.0, 1.6)  # normal walkers' preferred speeds
RUN_MPS = 2.5  # running starts here
RUN_CRUISE_MPS = (2.8, 5.0)
PAUSE_S = (1.0, 4.0)  # normal pauses
PAUSE_RATE = 0.012  # per second of walking: about one walker in three pauses in 30 s
LINGER_S = (15.0, 25.0)
LINGER_RADIUS_M = 1.5
FALL_S = (0.5, 1.0)
STRUGGLE_S = (3.0, 6.0)
CROSS_FRAC = 0.2  # normal walkers crossing the flow rather than going with it
# Walkers who are not labelled against_flow keep within this of the flow (people crossing it and walls turn them);
# against_flow walkers within AGAINST_CONE_DEG of the flow reversed.
FLOW_CONE_DEG = 120.0
AGAINST_CONE_DEG = 50.0
DRIFT = 0.35  # rad: how far a normal walker's course wanders from its base heading
LOOK_M = 2.0  # obstacle look-ahead
APPROACH_S = 2.0  # an anomalous person is seen walking normally at least this long first

# The people kept for EVAL scenes (sprite sources): the red-and-navy puffer jacket (all four crops, see
# tools.synthetic.SAME_PERSON), the light-blue hoodie, and the two all-black outfits. TRAIN and TUNE use the rest.
EVAL_SPRITES = ("vtest.avi#55:2", "vtest.avi#110:3", "vtest.avi#220:3", "vtest.avi#275:5",
                "vtest.avi#165:1", "vtest.avi#0:2", "vtest.avi#275:0")


# --------------------------------------------------------------------------- specs and splits


@dataclass(frozen=True)
class SceneSpec:
    """What to generate. Everything random follows from `seed`.

    `n_walkers` normal walkers, plus the anomalous people: one per anomaly, two per struggle. `anomalies` holds
    (type, how many) pairs. Events are placed one after another, `min_gap_s` apart (against_flow, a whole track,
    aside), when the sequence is long enough; otherwise at independent times, so they may overlap.
    """

    seed: int
    n_frames: int = 400
    fps: float = 10.0  # like vtest
    n_walkers: int = 10
    anomalies: tuple[tuple[str, int], ...] = ()
    sprites: str = "all"  # "train", "eval" or "all": which people of the sprite bank (see EVAL_SPRITES)
    flow_deg: float | None = None  # dominant direction on the ground; None: drawn from the seed
    min_gap_s: float = 1.0
    noise: float = 2.0  # sensor noise sigma, grey levels
    name: str = ""

    def __post_init__(self) -> None:
        for kind, count in self.anomalies:
            if kind not in ANOMALY_TYPES:
                raise ValueError(f"unknown anomaly {kind!r}; known: {', '.join(ANOMALY_TYPES)}")
            if count < 0:
                raise ValueError(f"negative count for {kind}")
        if self.sprites not in ("train", "eval", "all"):
            raise ValueError(f"sprites must be train, eval or all, not {self.sprites!r}")
        if self.n_frames < 20 or self.fps <= 0 or self.n_walkers < 0:
            raise ValueError("need n_frames >= 20, fps > 0 and n_walkers >= 0")

    @property
    def label(self) -> str:
        return self.name or f"scene_{self.seed}"


@dataclass(frozen=True)
class SeedRange:
    """A named range of seeds, first <= seed < stop."""

    name: str
    first: int
    stop: int

    def __contains__(self, seed: object) -> bool:
        return isinstance(seed, int) and self.first <= seed < self.stop


# Disjoint: a model fitted on TRAIN, with thresholds chosen on TUNE, is measured on EVAL scenes it never saw.
TRAIN = SeedRange("train", 1_000_000, 2_000_000)  # normal scenes only: fit models of normal motion here
TUNE = SeedRange("tune", 2_000_000, 2_100_000)  # with anomalies: choose thresholds here
EVAL = SeedRange("eval", 3_000_000, 3_100_000)  # with anomalies: final figures only
SPLITS = {r.name: r for r in (TRAIN, TUNE, EVAL)}
CI_SEED = 77  # the CI clip's seed: outside every split


def split_seeds(split: str, n: int, start: int = 0) -> list[int]:
    """Seeds start..start+n-1 of a split."""
    r = SPLITS[split]
    if start < 0 or r.first + start + n > r.stop:
        raise ValueError(f"{split} holds {r.stop - r.first} seeds")
    return list(range(r.first + start, r.first + start + n))


def split_of(seed: int) -> str | None:
    """The split a seed belongs to, or None."""
    return next((name for name, r in SPLITS.items() if seed in r), None)


def split_spec(split: str, index: int) -> SceneSpec:
    """The standard recipe for the index-th scene of a split: 40 s, 6-14 walkers; TUNE and EVAL scenes hold three
    anomalies each, the types taken in turn so that every 8 consecutive scenes hold each type three times."""
    seed = split_seeds(split, 1, index)[0]
    rng = np.random.default_rng([seed, 3])
    n_walkers = int(rng.integers(6, 15))
    anomalies: tuple[tuple[str, int], ...] = ()
    if split != "train":
        kinds = Counter(ANOMALY_TYPES[(3 * index + j) % len(ANOMALY_TYPES)] for j in range(3))
        anomalies = tuple(sorted(kinds.items(), key=lambda kv: ANOMALY_TYPES.index(kv[0])))
    return SceneSpec(seed=seed, n_walkers=n_walkers, anomalies=anomalies, sprites="eval" if split == "eval" else "train",
                     name=f"{split}_{seed}")


def split_specs(split: str, n: int, start: int = 0) -> list[SceneSpec]:
    return [split_spec(split, i) for i in range(start, start + n)]


def sprite_pool(bank: SpriteBank, which: str) -> list[Sprite]:
    """The people a scene may use: "eval" the EVAL_SPRITES, "train" the others, "all" every one."""
    if which == "all":
        return list(bank.people)
    pool = [s for s in bank.people if (s.source in EVAL_SPRITES) == (which == "eval")]
    if not pool:
        raise ValueError(f"the sprite bank has no {which} people")
    return pool


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Anomaly:
    type: str
    first_frame: int
    last_frame: int
    event: int  # events are numbered from 1 per scene; a struggle's two tracks share one


@dataclass
class Trajectory:
    """One track, the frames it is on screen: boxes (x1, y1, x2, y2 clipped to the frame), foot positions on the
    ground (m) and per-frame labels (0 normal, 1 + ANOMALY_TYPES index)."""

    track_id: int
    frames: np.ndarray  # [T] int, ascending (usually consecutive; a walker may leave and come back)
    boxes: np.ndarray  # [T, 4] float
    ground: np.ndarray  # [T, 2] (X, D) metres
    labels: np.ndarray  # [T] int8
    anomalies: list[Anomaly]
    sprite: str


@dataclass
class ScenePlan:
    spec: SceneSpec
    flow_deg: float
    tracks: list[Trajectory]
    events: list[dict[str, Any]]  # event, type, tracks, first_frame, last_frame and type-specific facts
    actors: list[_Actor] = field(repr=False, default_factory=list)  # what make_scene draws


# --------------------------------------------------------------------------- motion


@dataclass
class _Who:
    height_m: float
    aspect: float
    v_pref: float


class _Mover:
    """One person's ground path built step by step (one step per frame): position, body tilt (deg, + = head to the
    image right), its stretch along the body (a lying body is longer in the image than a standing one) and a facing
    code (0 from motion, +1/-1 faces image right/left, 2 keeps the last)."""

    def __init__(self, world: _World, rng: np.random.Generator, who: _Who, x: float, d: float, th: float, v: float,
                 flow: float = 0.0, cone: float = math.radians(FLOW_CONE_DEG)):
        self.world, self.rng, self.who, self.flow, self.cone = world, rng, who, flow, cone
        self.x, self.d, self.th, self.v = x, d, th, v
        self.drift = self.vn = self.stop_left = 0.0
        self.pos: list[tuple[float, float]] = [(x, d)]
        self.tilt: list[float] = [0.0]
        self.stretch: list[float] = [1.0]
        self.face: list[int] = [0]

    @property
    def k(self) -> int:
        return len(self.pos) - 1

    def emit(self, tilt: float = 0.0, stretch: float = 1.0, face: int = 0) -> None:
        self.pos.append((self.x, self.d))
        self.tilt.append(tilt)
        self.stretch.append(stretch)
        self.face.append(face)

    def unemit(self) -> None:
        for seq in (self.pos, self.tilt, self.stretch, self.face):
            seq.pop()
        self.x, self.d = self.pos[-1]

    def in_view(self) -> bool:
        return self.world.visible_at(self.x, self.d, self.who.height_m, self.who.aspect)

    def step(self, want: float, target: float, accel: float = 1.0, brake: float = 1.5, max_turn: float = 0.8,
             gain: float = 1.5, noise: float = 0.03, steer: bool = True) -> float | None:
        """Speed towards target within the accelerations; heading towards `want` within a turn rate (smooth paths),
        bent round whatever is not open ground ahead: returns the heading it was bent to, if it was."""
        dt = self.world.dt
        self.v += min(max(target - self.v, -brake * dt), accel * dt)
        bent = None
        if steer and self.v > 0.05 and not self.world.walkable(self.x + LOOK_M * math.cos(want), self.d + LOOK_M * math.sin(want)):
            want = bent = self.steer()
            max_turn = max(max_turn, 2.0)  # a wall ahead: turn in time, before walking off the ground
        turn = _wrap(want - self.th) * gain * dt + noise * math.sqrt(dt) * float(self.rng.standard_normal())
        self.th += min(max(turn, -max_turn * dt), max_turn * dt)
        off = _wrap(self.th - self.flow)
        if abs(off) > self.cone:  # never more than the cone from its flow: walls and drift cannot turn it against
            self.th = self.flow + math.copysign(self.cone, off)
        self.x += self.v * dt * math.cos(self.th)
        self.d += self.v * dt * math.sin(self.th)
        self.emit()
        return bent

    def steer(self) -> float:
        # The nearest open heading that does not turn the walker against the flow (a wall ahead must not make a
        # normal walker an unlabelled against_flow one); the nearest open one if there is no such heading.
        cands = [t for k in range(1, 13) for t in (self.th + k * math.pi / 12, self.th - k * math.pi / 12)]
        open_at = lambda t, r: self.world.walkable(self.x + r * math.cos(t), self.d + r * math.sin(t))  # noqa: E731
        along = [t for t in cands if abs(_wrap(t - self.flow)) <= self.cone]
        for t in [t for t in along if open_at(t, LOOK_M)] or [t for t in along if open_at(t, 0.4)]:  # close along a wall is fine
            return t
        return next((t for t in cands if open_at(t, LOOK_M)), self.th + math.pi)

    def walk(self, base: float, n: int, pauses: bool = True, calm: int = 0, exit_view: bool = True) -> None:
        """Normal walking on a course that wanders within DRIFT of `base`, for n steps or until out of view."""
        dt, rng = self.world.dt, self.rng
        for i in range(n):
            if self.stop_left > 0:  # a normal pause: a phone, a look round
                self.stop_left -= dt
                target = 0.0
            else:
                if pauses and i >= calm and rng.random() < PAUSE_RATE * dt:
                    self.stop_left = float(rng.uniform(*PAUSE_S))
                self.vn = float(np.clip(self.vn * (1 - dt / 2) + 0.05 * math.sqrt(dt) * rng.standard_normal(), -0.12, 0.12))
                target = self.who.v_pref + self.vn
            self.drift = float(np.clip(self.drift * (1 - dt / 8) + 0.08 * math.sqrt(dt) * rng.standard_normal(), -DRIFT, DRIFT))
            if (bent := self.step(base + self.drift, target)) is not None:
                base, self.drift = bent, 0.0  # along the wall from now on, not back into it (or round in a U)
            if cv2.pointPolygonTest(self.world.ground, (self.x, self.d), False) < 0:  # cornered by the building: goes in (or, walked backwards, came out)
                self.unemit()
                break
            if exit_view and self.v > 0.05 and not self.in_view():
                break

    def hold(self, n: int, face: int = 0) -> None:
        for _ in range(n):
            self.emit(face=face)

    def move_to(self, x: float, d: float, tilt: float = 0.0, face: int = 0) -> None:
        # A placed step (circle, shuffle, tussle): speed and heading follow from the displacement.
        dx, dd = x - self.x, d - self.d
        self.v = math.hypot(dx, dd) / self.world.dt
        if self.v > 1e-6:
            self.th = math.atan2(dd, dx)
        self.x, self.d = x, d
        self.emit(tilt=tilt, face=face)


def _approach(world: _World, rng: np.random.Generator, who: _Who, at: tuple[float, float], base: float, n: int,
              calm: int, flow: float, cone: float = math.radians(FLOW_CONE_DEG)) -> np.ndarray:
    """Positions [m, 2] of a normal walk that ends at `at` heading `base`: walked backwards, then reversed."""
    m = _Mover(world, rng, who, at[0], at[1], base + math.pi, who.v_pref, flow + math.pi, cone)  # reversed, it goes with the flow
    m.walk(base + math.pi, n, calm=calm)
    return np.array(m.pos[::-1], float)


def _image_side(world: _World, x: float, d: float, th: float) -> int:
    # Which way (image x) a ground heading points at (x, d): +1 right, -1 left, 0 straight in depth.
    u0, _ = world.cam.project(x, d)
    u1, _ = world.cam.project(x + 0.5 * math.cos(th), d + 0.5 * math.sin(th))
    du = float(u1 - u0)
    return 0 if abs(du) < 2.0 else (1 if du > 0 else -1)


def _lying_stretch(world: _World, x: float, d: float, height_m: float) -> float:
    # A body lying across the view spans f * H / depth pixels; standing it spans its projected height.
    u0, v0 = world.cam.project(x, d)
    u1, _ = world.cam.project(x + height_m, d)
    _, vt = world.cam.project(x, d, height_m)
    return float(abs(u1 - u0) / max(float(v0 - vt), 1.0))


# One function per anomaly: it drives the mover from the anomaly's first step and returns the labelled steps
# (first, last) and facts for the truth. Parameters were drawn beforehand (_draw_params), so planning knows the length.


def _do_running(m: _Mover, base: float, p: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
    fast: list[int] = []
    rng = m.rng
    for phase in ("up", "cruise", "down"):
        n = 10**6 if phase != "cruise" else p["cruise"]
        for _ in range(n):
            if phase == "up" and m.v >= p["v_run"] - 0.05 or phase == "down" and m.v <= m.who.v_pref + 0.05:
                break
            target = m.who.v_pref if phase == "down" else max(p["v_run"] + 0.1 * float(rng.standard_normal()), RUN_MPS + 0.2)
            m.step(base, target, accel=3.0, brake=2.5, max_turn=0.5, noise=0.02)
            if cv2.pointPolygonTest(m.world.ground, (m.x, m.d), False) < 0:  # into the building: the track ends there
                m.unemit()
                return fast[0] if fast else m.k, fast[-1] if fast else m.k, {"speed_mps": round(p["v_run"], 3)}
            if m.v >= RUN_MPS:  # the speed of this step is exactly m.v: the label is where it is at least 2.5 m/s
                fast.append(m.k)
            if not m.in_view():
                return fast[0] if fast else m.k, fast[-1] if fast else m.k, {"speed_mps": round(p["v_run"], 3)}
    return fast[0], fast[-1], {"speed_mps": round(p["v_run"], 3)}


def _do_reversal(m: _Mover, base: float, p: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
    first = m.k + 1
    while m.v > 1e-3:  # brake in a straight line
        m.step(m.th, 0.0, brake=p["brake"], noise=0.0, steer=False)
    m.v = 0.0
    m.hold(p["stand"])
    back = m.th + math.pi + p["offset"]
    for i in range(p["turn"]):  # turns on the spot (the sprite turns when it moves off)
        m.th = back - (1 - (i + 1) / p["turn"]) * (math.pi + p["offset"])
        m.hold(1)
    m.th = back
    new_base = base + math.pi + p["offset"]
    while m.v < 0.8 * m.who.v_pref:
        m.step(new_base, m.who.v_pref, max_turn=0.6)
    m.walk(new_base, int(2 * p["fps"]), pauses=False, exit_view=False)
    return first, m.k, {"turn_deg": round(180 + math.degrees(p["offset"]), 1)}


def _do_zigzag(m: _Mover, base: float, p: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
    first = m.k + 1
    side = p["side"]
    for leg in p["legs"]:
        for _ in range(leg):
            m.step(base + side * p["amp"], p["speed"], max_turn=4.0, gain=8.0, noise=0.02, steer=False)
        side = -side
    return first, m.k, {"amplitude_deg": round(math.degrees(p["amp"]), 1), "legs": len(p["legs"])}


def _do_circling(m: _Mover, base: float, p: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
    r, turn, speed = p["radius"], p["dir"], p["speed"]
    cx = m.x + r * math.cos(m.th + turn * math.pi / 2)
    cd = m.d + r * math.sin(m.th + turn * math.pi / 2)
    a0 = math.atan2(m.d - cd, m.x - cx)
    w = turn * speed / r * m.world.dt
    first = m.k + 1
    for i in range(1, p["steps"] + 1):
        m.move_to(cx + r * math.cos(a0 + w * i), cd + r * math.sin(a0 + w * i))
    return first, m.k, {"centre_m": [round(cx, 3), round(cd, 3)], "radius_m": round(r, 3), "turns": round(p["turns"], 3)}


def _do_lingering(m: _Mover, base: float, p: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
    rng = m.rng
    while m.v > 1e-3:
        m.step(m.th, 0.0, brake=1.2, noise=0.0, steer=False)
    m.v = 0.0
    first, cx, cd = m.k, m.x, m.d
    end = first + p["steps"]
    while m.k < end:  # stand a while, shuffle a little, stand again: always within 0.6 of the radius
        m.hold(min(int(rng.uniform(2.0, 6.0) * p["fps"]), end - m.k))
        if m.k >= end:
            break
        a, rr = rng.uniform(-math.pi, math.pi), 0.6 * LINGER_RADIUS_M * math.sqrt(rng.random())
        tx, td = cx + rr * math.cos(a), cd + rr * math.sin(a)
        n = max(1, int(math.hypot(tx - m.x, td - m.d) / rng.uniform(0.3, 0.6) * p["fps"]))
        x0, d0 = m.x, m.d
        for i in range(1, min(n, end - m.k) + 1):
            m.move_to(x0 + (tx - x0) * i / n, d0 + (td - d0) * i / n)
    m.v, m.th = 0.0, base  # standing: it turns to its course before it walks off
    return first, m.k, {"centre_m": [round(cx, 3), round(cd, 3)], "radius_m": LINGER_RADIUS_M}


def _do_fall(m: _Mover, base: float, p: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
    side = _image_side(m.world, m.x, m.d, m.th) or p["side"]
    k_lie = _lying_stretch(m.world, m.x, m.d, m.who.height_m)
    first = m.k + 1
    n = p["fall"]
    v0 = m.v
    for i in range(1, n + 1):  # topples: slow at first, fast at the end; the feet slide to a stop
        phi = 90.0 * (i / n) ** 2
        m.v = v0 * (1 - i / n)
        m.x += m.v * m.world.dt * math.cos(m.th)
        m.d += m.v * m.world.dt * math.sin(m.th)
        m.emit(tilt=side * phi, stretch=1 + (k_lie - 1) * math.sin(math.radians(phi)), face=2)
    m.v = 0.0
    for _ in range(p["down"]):
        m.emit(tilt=side * 90.0, stretch=k_lie, face=2)
    return first, m.k, {"side": "right" if side > 0 else "left"}


_DO = {"running": _do_running, "sudden_reversal": _do_reversal, "zigzag": _do_zigzag, "circling": _do_circling,
       "lingering": _do_lingering, "fall": _do_fall}


def _tussle(a: _Mover, b: _Mover, steps: int) -> None:
    """Two people grappling round a wandering centre: jerky moves, the pair's axis swinging, tilting bodies."""
    rng, dt = a.rng, a.world.dt
    cx, cd = (a.x + b.x) / 2, (a.d + b.d) / 2
    c0 = (cx, cd)
    ang = math.atan2(a.d - b.d, a.x - b.x)
    sep = math.hypot(a.x - b.x, a.d - b.d)
    vel = np.zeros(2)
    spin = 0.0
    tilts = np.zeros(2)
    tilt_to = np.zeros(2)
    for i in range(steps):
        if i % max(1, int(0.3 / dt)) == 0:  # a new shove every 0.3 s
            speed = rng.uniform(0.0, 1.3)
            heading = rng.uniform(-math.pi, math.pi)
            vel = speed * np.array([math.cos(heading), math.sin(heading)])
            pull = np.array([c0[0] - cx, c0[1] - cd])  # they stay round where they met
            vel += 0.8 * pull
            spin = rng.uniform(-1.5, 1.5)
            tilt_to = rng.uniform(-25.0, 25.0, 2)
        cx, cd = cx + vel[0] * dt, cd + vel[1] * dt
        ang += spin * dt
        sep = float(np.clip(sep + rng.normal(0, 0.05), 0.35, 0.7))
        tilts += 0.4 * (tilt_to - tilts)
        ax, ad = cx + sep / 2 * math.cos(ang), cd + sep / 2 * math.sin(ang)
        bx, bd = cx - sep / 2 * math.cos(ang), cd - sep / 2 * math.sin(ang)
        ua, _ = a.world.cam.project(ax, ad)
        ub, _ = a.world.cam.project(bx, bd)
        fa = 1 if ub >= ua else -1  # they face each other
        a.move_to(ax, ad, tilt=float(tilts[0]), face=fa)
        b.move_to(bx, bd, tilt=float(tilts[1]), face=-fa)


# --------------------------------------------------------------------------- planning


@dataclass
class _Actor:
    sprite: Sprite
    tint: np.ndarray  # per-channel gain: 1 on a crop's first use in the scene
    mirror: bool
    who: _Who
    t0: int  # frame of pos[0]
    pos: np.ndarray  # [n, 2]
    tilt: np.ndarray  # [n] degrees
    stretch: np.ndarray  # [n]
    face: np.ndarray  # [n] int8
    spans: list[tuple[int, int, int]] = field(default_factory=list)  # (event index, first step, last step)
    tid: int = 0
    flips: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # [n, 4] int-valued xyxy, unclipped
    upright: list[tuple[int, int, int, int]] = field(default_factory=list)  # [n] drawn (x, y, w, h) before any tilt
    on: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # box meets the frame


def _actor(sprite: Sprite, tint: np.ndarray, mirror: bool, who: _Who, t0: int, movers: list[_Mover | np.ndarray],
           ) -> _Actor:
    # An actor from a reversed approach (array) and/or movers driven forward from its end, joined at the anchor.
    pos, tilt, stretch, face = [], [], [], []
    for part in movers:
        if isinstance(part, np.ndarray):
            n = len(part)
            pos.append(part)
            tilt.append(np.zeros(n))
            stretch.append(np.ones(n))
            face.append(np.zeros(n, np.int8))
        else:
            pos.append(np.array(part.pos[1:], float).reshape(-1, 2))
            tilt.append(np.array(part.tilt[1:]))
            stretch.append(np.array(part.stretch[1:]))
            face.append(np.array(part.face[1:], np.int8))
    return _Actor(sprite, tint, mirror, who, t0, np.concatenate(pos).reshape(-1, 2), np.concatenate(tilt),
                  np.concatenate(stretch), np.concatenate(face))


def _draw_params(rng: np.random.Generator, kind: str, fps: float) -> tuple[dict[str, Any], int]:
    """An anomaly's parameters and about how many frames it lasts (for placing events one after another)."""
    s = lambda a, b: int(round(rng.uniform(a, b) * fps))  # noqa: E731 - seconds to frames
    p: dict[str, Any] = {"fps": fps}
    if kind == "running":
        p.update(v_run=float(rng.uniform(*RUN_CRUISE_MPS)), cruise=s(2.0, 5.0))
        return p, p["cruise"] + int(2.0 * fps)  # with the ramps
    if kind == "sudden_reversal":
        p.update(brake=float(rng.uniform(1.5, 2.5)), stand=s(0.5, 2.0), turn=s(0.5, 1.0), offset=float(rng.uniform(-0.25, 0.25)))
        return p, p["stand"] + p["turn"] + int(4.5 * fps)
    if kind == "zigzag":
        legs = [s(0.8, 1.6) for _ in range(int(rng.integers(4, 8)))]
        p.update(legs=legs, amp=float(rng.uniform(0.6, 1.0)), side=float(rng.choice([-1.0, 1.0])), speed=float(rng.uniform(1.1, 1.5)))
        return p, sum(legs)
    if kind == "circling":
        r, speed = float(rng.uniform(1.0, 2.0)), float(rng.uniform(1.1, 1.4))
        turns = 2.0 if rng.random() < 0.5 and 2 * 2 * math.pi * r / speed <= 20.0 else 1.0  # whole turns: it goes on its way after
        p.update(radius=r, turns=turns, speed=speed, dir=float(rng.choice([-1.0, 1.0])), steps=int(round(turns * 2 * math.pi * r / speed * fps)))
        return p, p["steps"]
    if kind == "lingering":
        p.update(steps=s(*LINGER_S))
        return p, p["steps"] + int(1.5 * fps)
    if kind == "fall":
        p.update(fall=s(*FALL_S), side=int(rng.choice([-1, 1])))
        return p, p["fall"] + int(2.0 * fps)  # lying at least 2 s
    if kind == "struggle":
        p.update(steps=s(*STRUGGLE_S), sep=float(rng.uniform(0.4, 0.6)))
        return p, p["steps"]
    return p, int(6.0 * fps)  # against_flow: a whole track, not held apart from the others


def _schedule(rng: np.random.Generator, durs: list[int], spaced: list[bool], n: int, t_min: int, gap: int) -> list[int]:
    """Start frames: one after another with random slack when they fit, else independent."""
    idx = [i for i in range(len(durs)) if spaced[i]]
    starts = [0] * len(durs)
    room = n - t_min - int(0.5 * gap) - sum(durs[i] for i in idx) - gap * max(len(idx) - 1, 0)
    if idx and room >= 0:
        slack = rng.dirichlet(np.ones(len(idx) + 1)) * room
        t = float(t_min)
        for j, i in enumerate(idx):
            t += slack[j]
            starts[i] = int(t)
            t += durs[i] + gap
    else:
        for i in idx:
            starts[i] = int(rng.integers(t_min, max(t_min + 1, n - durs[i])))
    for i in range(len(durs)):
        if not spaced[i]:
            starts[i] = int(rng.integers(t_min, max(t_min + 1, n - t_min)))
    return starts


def _flips(world: _World, a: _Actor) -> np.ndarray:
    """Per step: draw the sprite mirrored? It faces the way it moves in the image (with hysteresis), or the way the
    facing code says; sprites whose facing is unknown keep the identity's mirroring."""
    n = len(a.pos)
    if a.sprite.facing == 0:
        return np.full(n, a.mirror)
    u, _ = world.cam.project(a.pos[:, 0], a.pos[:, 1])
    vx = np.convolve(np.gradient(np.asarray(u, float)) if n > 1 else np.zeros(n), np.ones(5) / 5, mode="same")
    moving = (np.abs(vx) > 0.4) & (a.face == 0)
    state = int(np.sign(vx[np.argmax(moving)])) if moving.any() else a.sprite.facing * (-1 if a.mirror else 1)
    out = np.zeros(n, bool)
    for i in range(n):
        if a.face[i] in (1, -1):
            state = int(a.face[i])
        elif a.face[i] == 0 and moving[i]:
            state = int(np.sign(vx[i]))
        out[i] = state != a.sprite.facing
    return out


def _pose(img: np.ndarray | None, alpha: np.ndarray, foot: tuple[float, float], tilt: float, stretch: float
          ) -> tuple[np.ndarray | None, np.ndarray, int, int]:
    """A sized upright sprite (h x w) rotated about its feet by `tilt` degrees (+: head to the image right) and
    stretched along the body: (image, alpha, x0, y0) of the output patch; img may be None (alpha only)."""
    h, w = alpha.shape[:2]
    r = math.radians(tilt)
    A = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]]) @ np.diag([1.0, stretch])
    t = np.array(foot) - A @ np.array([w / 2, h])
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float) @ A.T + t
    x0, y0 = int(math.floor(corners[:, 0].min())), int(math.floor(corners[:, 1].min()))
    pw, ph = int(math.ceil(corners[:, 0].max())) - x0, int(math.ceil(corners[:, 1].max())) - y0
    M = np.hstack([A, (t - [x0, y0])[:, None]])
    warp = lambda src: cv2.warpAffine(src, M, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # noqa: E731
    return (warp(img) if img is not None else None), warp(alpha), x0, y0


class _Sized:
    """Sprites resized to drawn sizes, cached per (sprite, mirrored, w, h)."""

    def __init__(self) -> None:
        self.cache: dict[tuple[int, bool, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def get(self, sprite: Sprite, flip: bool, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        key = (id(sprite), flip, w, h)
        if key not in self.cache:
            img, a = sprite.image, sprite.alpha
            if flip:
                img, a = img[:, ::-1], a[:, ::-1]
            interp = cv2.INTER_AREA if h < img.shape[0] else cv2.INTER_LINEAR
            self.cache[key] = (cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=interp).astype(np.float32),
                               cv2.resize(np.ascontiguousarray(a), (w, h), interpolation=interp))
        return self.cache[key]


def _boxes(world: _World, a: _Actor, sized: _Sized) -> np.ndarray:
    """[n, 4] xyxy of what is drawn at each step: the sprite rectangle, or the tight box of a tilted sprite's mask."""
    a.upright = [_int_box(b) for b in world.boxes(a.pos, a.who.height_m, a.who.aspect)]
    out = np.zeros((len(a.pos), 4))
    for k, (bx, by, wi, hi) in enumerate(a.upright):
        if a.tilt[k] == 0.0:
            out[k] = (bx, by, bx + wi, by + hi)
            continue
        _, ra = sized.get(a.sprite, bool(a.flips[k]), wi, hi)
        _, pa, x0, y0 = _pose(None, ra, (bx + wi / 2, by + hi), float(a.tilt[k]), float(a.stretch[k]))
        ys, xs = np.nonzero(pa > 0.5)
        out[k] = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1) if len(xs) else (bx, by, bx + wi, by + hi)
    return out


def _finish(world: _World, a: _Actor, sized: _Sized) -> None:
    a.flips = _flips(world, a)
    a.boxes = _boxes(world, a, sized)
    W, H = world.size
    a.on = (a.boxes[:, 2] > 0) & (a.boxes[:, 0] < W) & (a.boxes[:, 3] > 0) & (a.boxes[:, 1] < H)


def _span_ok(world: _World, a: _Actor, k0: int, k1: int, n_frames: int, kind: str) -> bool:
    """Is the labelled part in the sequence, in full view and on open ground, after a normal approach on screen?"""
    W, H = world.size
    if kind == "against_flow":  # a whole track: seen for 3 s at least
        frames = a.t0 + np.flatnonzero(a.on)
        return int(((frames >= 0) & (frames < n_frames)).sum()) >= int(3.0 / world.dt)
    f0 = a.t0 + k0
    if f0 < int(APPROACH_S / world.dt) or k1 < k0:
        return False
    if kind != "running" and a.t0 + k1 > n_frames - 1:
        return False
    if k0 < int(APPROACH_S / world.dt) or not a.on[k0 - int(APPROACH_S / world.dt)]:
        return False
    ks = np.arange(k0, min(k1, n_frames - 1 - a.t0) + 1)
    if kind == "running":
        ks = ks[:int(1.5 / world.dt)]  # the runner may leave the frame, but is seen running 1.5 s first
        if len(ks) < int(1.5 / world.dt):
            return False
    b = a.boxes[ks]
    inside = (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= W) & (b[:, 3] <= H)
    return bool(inside.all()) and all(world.walkable(float(x), float(d)) for x, d in a.pos[ks])


def plan_scene(spec: SceneSpec, bank: SpriteBank | None = None) -> ScenePlan:
    """Every track's motion, boxes and labels, without drawing: make_scene draws exactly this."""
    bank = bank or sprite_bank()
    rng = np.random.default_rng([spec.seed, 1])
    n, fps = spec.n_frames, spec.fps
    world = _World(None, CAMPUS_SIZE, fps, bank.camera)
    for lay in bank.scene_layers:  # walkers keep clear of the lamp post, tripod and boulder
        world.add_disc(lay.base_u, lay.base_v, lay.radius_m)
    flow_deg = float(rng.uniform(-180, 180)) if spec.flow_deg is None else float(spec.flow_deg)
    flow = math.radians(flow_deg)

    pool = sprite_pool(bank, spec.sprites)
    order, fresh = _casting(rng, pool)
    cast = [0]

    def person() -> tuple[Sprite, np.ndarray, bool, _Who]:
        # Each look once before any crop repeats; repeats get another colour, every other round mirrored.
        k = cast[0]
        cast[0] += 1
        sprite = pool[order[k % len(order)]]
        tint = np.ones(3, np.float32) if k < fresh else np.clip(1.0 + rng.normal(0, 0.12, 3), 0.76, 1.24).astype(np.float32)
        who = _Who(sprite.height_m, sprite.aspect, float(rng.uniform(*WALK_MPS)))
        return sprite, tint, bool((k // len(order)) % 2 == 1), who

    def anchor(fx: tuple[float, float] = (0.2, 0.8), fy: tuple[float, float] = (0.4, 0.92)) -> tuple[float, float]:
        for _ in range(200):
            pt = world.out_point(rng.uniform(*fx), rng.uniform(*fy))
            if pt is not None:
                return pt
        raise RuntimeError("no walkable ground for an anchor")

    def course(cross: bool) -> float:
        c = flow + (float(rng.choice([-1.0, 1.0])) * math.pi / 2 if cross else 0.0)
        return c + float(rng.normal(0, 0.15))

    sized = _Sized()
    kinds = [k for k, c in spec.anomalies for _ in range(c)]
    rng.shuffle(kinds)
    kinds.sort(key=lambda k: k == "fall")  # a fall lasts to the end: last
    drawn = [_draw_params(rng, k, fps) for k in kinds]
    spaced = [k != "against_flow" for k in kinds]
    t_min = int(APPROACH_S * fps) + 2
    starts = _schedule(rng, [d for _, d in drawn], spaced, n, t_min, int(round(spec.min_gap_s * fps)))

    actors: list[_Actor] = []
    events: list[dict[str, Any]] = []
    calm = int(3.0 * fps)
    for ei, (kind, (p, _), t_a) in enumerate(zip(kinds, drawn, starts)):
        ident = [person() for _ in range(2 if kind == "struggle" else 1)]
        for attempt in range(400):
            made = _make_event(world, rng, kind, p, t_a, n, ident, flow, course, anchor, calm)
            if made is None:
                continue
            acts, facts = made
            for a in acts:
                _finish(world, a, sized)
            if all(_span_ok(world, a, a.spans[0][1], a.spans[0][2], n, kind) for a in acts):
                break
        else:
            raise RuntimeError(f"seed {spec.seed}: could not place {kind} at frame {t_a} in view (400 tries)")
        for a in acts:
            a.spans = [(ei, k0, k1) for _, k0, k1 in a.spans]
        actors += acts
        events.append({"type": kind, **facts})

    for _ in range(spec.n_walkers):  # normal walkers: anywhere, any time, with the flow or across it
        sprite, tint, mirror, who = person()
        t = int(rng.integers(0, n))
        base = course(rng.random() < CROSS_FRAC)
        pt = anchor((0.05, 0.95), (0.3, 0.97))
        back = _approach(world, rng, who, pt, base, t + 1, 0, flow)
        fwd = _Mover(world, rng, who, pt[0], pt[1], base, who.v_pref, flow)
        fwd.walk(base, n - 1 - t)
        a = _actor(sprite, tint, mirror, who, t - (len(back) - 1), [back, fwd])
        _finish(world, a, sized)
        actors.append(a)

    # Cut to the sequence; track ids in order of first appearance on screen.
    kept = []
    for a in actors:
        frames = a.t0 + np.arange(len(a.pos))
        a.on &= (frames >= 0) & (frames < n)
        if a.on.any():
            kept.append(a)
    kept.sort(key=lambda a: (a.t0 + int(np.argmax(a.on)), a.t0))
    for i, a in enumerate(kept):
        a.tid = i + 1
    tracks, out_events = _label(kept, events, n, spec, world)
    return ScenePlan(spec, flow_deg, tracks, out_events, kept)


def _make_event(world: _World, rng: np.random.Generator, kind: str, p: dict[str, Any], t_a: int, n: int,
                ident: list[tuple[Sprite, np.ndarray, bool, _Who]], flow: float, course: Callable[[bool], float],
                anchor: Callable[..., tuple[float, float]], calm: int,
                ) -> tuple[list[_Actor], dict[str, Any]] | None:
    """One try at an event's people: walk in normally, do the anomaly from frame t_a, walk on."""
    if kind == "struggle":
        (sa, ta, ma, wa), (sb, tb, mb, wb) = ident
        c = anchor((0.25, 0.75), (0.45, 0.9))
        ang = rng.uniform(-math.pi, math.pi)
        pa = (c[0] + p["sep"] / 2 * math.cos(ang), c[1] + p["sep"] / 2 * math.sin(ang))
        pb = (c[0] - p["sep"] / 2 * math.cos(ang), c[1] - p["sep"] / 2 * math.sin(ang))
        base_a, base_b = course(False), course(True)  # one with the flow, one across it: they meet at a corner
        back_a = _approach(world, rng, wa, pa, base_a, t_a + 1, calm, flow)
        back_b = _approach(world, rng, wb, pb, base_b, t_a + 1, calm, flow)
        ma_, mb_ = _Mover(world, rng, wa, *pa, base_a, 0.0, flow), _Mover(world, rng, wb, *pb, base_b, 0.0, flow)
        _tussle(ma_, mb_, p["steps"])
        k_end = ma_.k
        for mv, base in ((ma_, base_a), (mb_, base_b)):
            mv.v, mv.th = 0.0, base
            mv.walk(base, n - 1 - t_a - mv.k, pauses=False)
        acts = []
        for (spr, tnt, mir, w), back, mv in (((sa, ta, ma, wa), back_a, ma_), ((sb, tb, mb, wb), back_b, mb_)):
            a = _actor(spr, tnt, mir, w, t_a - (len(back) - 1), [back, mv])
            a.spans = [(0, len(back), len(back) - 1 + k_end)]
            acts.append(a)
        return acts, {"steps": k_end}
    sprite, tint, mirror, who = ident[0]
    if kind == "running":  # runs across the view, where a run stays longest on screen
        cands = [flow, flow + math.pi / 2, flow - math.pi / 2]
        base = max(cands, key=lambda c: abs(math.cos(c))) + float(rng.normal(0, 0.15))
    elif kind == "against_flow":
        base = flow + math.pi + float(rng.normal(0, 0.15))
    else:
        base = course(kind == "sudden_reversal")
    pt = anchor()
    own = flow + math.pi if kind == "against_flow" else flow  # walls keep the against_flow walker against it
    cone = math.radians(AGAINST_CONE_DEG if kind == "against_flow" else FLOW_CONE_DEG)
    back = _approach(world, rng, who, pt, base, t_a + 1, calm, own, cone)
    m = _Mover(world, rng, who, pt[0], pt[1], base, who.v_pref, own, cone)
    if kind == "against_flow":
        m.walk(base, n - 1 - t_a)
        a = _actor(sprite, tint, mirror, who, t_a - (len(back) - 1), [back, m])
        a.spans = [(0, 0, len(a.pos) - 1)]  # the whole track; cut to the screen when labelling
        return [a], {}
    if kind == "fall":
        p = {**p, "down": n - 1 - t_a - p["fall"]}
    k0, k1, facts = _DO[kind](m, base, p)
    if kind not in ("fall", "running") or (kind == "running" and m.in_view()):
        m.walk(base + (math.pi + p["offset"] if kind == "sudden_reversal" else 0.0), n - 1 - t_a - m.k, pauses=False)
    a = _actor(sprite, tint, mirror, who, t_a - (len(back) - 1), [back, m])
    a.spans = [(0, len(back) - 1 + k0, len(back) - 1 + k1)]
    return [a], facts


def _label(actors: list[_Actor], events: list[dict[str, Any]], n: int, spec: SceneSpec, world: _World
           ) -> tuple[list[Trajectory], list[dict[str, Any]]]:
    W, H = world.size
    tracks = []
    spans: dict[int, list[tuple[int, int, int]]] = {}
    for a in actors:
        ks = np.flatnonzero(a.on)
        frames = a.t0 + ks
        labels = np.zeros(len(ks), np.int8)
        anomalies = []
        for ei, k0, k1 in a.spans:
            kind = events[ei]["type"]
            sel = (ks >= k0) & (ks <= k1)  # labels hold on screen only
            if not sel.any():
                continue
            labels[sel] = 1 + ANOMALY_TYPES.index(kind)
            f0, f1 = int(frames[sel][0]), int(frames[sel][-1])
            anomalies.append(Anomaly(kind, f0, f1, ei + 1))
            spans.setdefault(ei, []).append((a.tid, f0, f1))
        b = a.boxes[ks]
        clipped = np.stack([np.clip(b[:, 0], 0, W), np.clip(b[:, 1], 0, H), np.clip(b[:, 2], 0, W), np.clip(b[:, 3], 0, H)], 1)
        tracks.append(Trajectory(a.tid, frames.astype(int), clipped, a.pos[ks].copy(), labels, anomalies,
                                 a.sprite.source + (" mirrored" if a.mirror else "") + (" tinted" if (a.tint != 1).any() else "")))
    out = []
    for ei, ev in enumerate(events):
        got = spans.get(ei, [])
        if not got:
            continue
        facts = {k: v for k, v in ev.items() if k not in ("type", "steps")}
        out.append({"event": ei + 1, "type": ev["type"], "tracks": sorted(t for t, _, _ in got),
                    "first_frame": min(f for _, f, _ in got), "last_frame": max(f for _, _, f in got), **facts})
    return tracks, out


def trajectories(spec: SceneSpec, bank: SpriteBank | None = None) -> list[Trajectory]:
    """The scene's tracks (boxes, ground positions, labels, anomaly intervals) without rendering a frame."""
    return plan_scene(spec, bank).tracks


def training_trajectories(n_scenes: int, start: int = 0, bank: SpriteBank | None = None) -> Iterator[list[Trajectory]]:
    """Tracks of TRAIN scenes start..start+n_scenes-1 (normal motion only), one list per scene."""
    for spec in split_specs("train", n_scenes, start):
        yield trajectories(spec, bank)


# --------------------------------------------------------------------------- rendering


def _render(plan: ScenePlan, bank: SpriteBank) -> tuple[list[np.ndarray], dict[tuple[int, int], float]]:
    """Frames, and the visible fraction of every (frame, track) after scenery, nearer people and frame edges."""
    spec = plan.spec
    rng = np.random.default_rng([spec.seed, 2])
    W, H = CAMPUS_SIZE
    bg = bank.background
    occ = []
    for lay in bank.scene_layers:  # the real lamp post, tripod and boulder stand in front of those behind them
        ys, xs = np.nonzero(lay.mask > 0.01)
        sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        occ.append((lay.base_v, sl, lay.mask[sl], bg[sl].astype(np.float32)))
    pad = 24
    noise = [np.clip(128.5 + rng.standard_normal((H + pad, W, 3), np.float32) * np.float32(spec.noise), 0, 255).astype(np.uint8)
             for _ in range(6)]  # offset by 128; picked and shifted per frame
    sized = _Sized()
    frames: list[np.ndarray] = []
    vis: dict[tuple[int, int], float] = {}
    cov = np.zeros((H, W), np.float32)
    gain = 1.0
    for f in range(spec.n_frames):
        items: list[tuple[float, int, int, Any]] = []
        for a in plan.actors:
            k = f - a.t0
            if not 0 <= k < len(a.pos) or not a.on[k]:
                continue
            bx, by, wi, hi = a.upright[k]
            rimg, ra = sized.get(a.sprite, bool(a.flips[k]), wi, hi)
            foot = (bx + wi / 2, by + hi)
            if a.tilt[k] != 0.0:
                posed, ra, x0, y0 = _pose(rimg, ra, foot, float(a.tilt[k]), float(a.stretch[k]))
                assert posed is not None
                rimg = posed
            else:
                x0, y0 = bx, by
            dst, src = _clip_boxes(x0, y0, ra.shape[1], ra.shape[0], W, H)
            if dst is None:
                continue
            items.append((float(foot[1]), 1, a.tid, (a, k, rimg, ra, dst, src, foot, wi, hi)))
        for j, (base, sl, m, pix) in enumerate(occ):
            items.append((base, 0, -j, (sl, m, pix)))
        items.sort(key=lambda it: (it[0], it[1], it[2]))
        cov[:] = 0.0
        for _, kind, tid, p in reversed(items):  # front to back: what is left uncovered is visible
            if kind == 0:
                sl, m, _ = p
                cov[sl] += m * (1.0 - cov[sl])
            else:
                a, k, rimg, ra, dst, src, foot, wi, hi = p
                al = ra[src]
                total = float(ra.sum())
                vis[(f, tid)] = float((al * (1.0 - cov[dst])).sum()) / total if total > 0 else 0.0
                cov[dst] += al * (1.0 - cov[dst])
        canvas = bg.copy()
        for _, kind, tid, p in items:
            if kind == 0:
                sl, m, pix = p
                mm = m[..., None]
                canvas[sl] = (canvas[sl] * (1.0 - mm) + pix * mm + 0.5).astype(np.uint8)
                continue
            a, k, rimg, ra, dst, src, foot, wi, hi = p
            lie = abs(math.sin(math.radians(float(a.tilt[k]))))
            reach = hi * float(a.stretch[k]) * lie  # a tilted body's shadow reaches along the ground
            side = 1.0 if a.tilt[k] > 0 else -1.0
            _shadow(canvas, foot[0] + side * reach / 2, foot[1] - 0.015 * hi, 0.42 * wi + reach / 2, 0.05 * hi + 1 + 0.1 * wi * lie, 0.25)
            jitter = float(1.0 + rng.normal(0, 0.012))  # per-frame brightness flicker
            al = ra[src][..., None]
            canvas[dst] = np.clip(canvas[dst] * (1.0 - al) + rimg[src] * (a.tint * jitter) * al + 0.5, 0, 255).astype(np.uint8)
        gain = float(np.clip(gain + rng.normal(0, 0.003), 0.97, 1.03))  # slow exposure drift
        nb = noise[int(rng.integers(len(noise)))]
        oy = int(rng.integers(pad))
        frames.append(cv2.addWeighted(canvas, gain, nb[oy:oy + H], 1.0, -128.0))
    return frames, vis


def truth_of(plan: ScenePlan, vis: dict[tuple[int, int], float] | None = None) -> dict[str, Any]:
    """The ground truth as JSON-ready data: per frame [track id, x1, y1, x2, y2, visibility]; per track its frames,
    sprite, foot positions and anomaly intervals; the events."""
    spec = plan.spec
    per_frame: list[list[list[float]]] = [[] for _ in range(spec.n_frames)]
    tracks = []
    for t in plan.tracks:
        for f, b in zip(t.frames.tolist(), t.boxes.tolist()):
            v = round(vis.get((f, t.track_id), 0.0), 4) if vis is not None else None
            per_frame[f].append([t.track_id, *[int(x) for x in b], *([] if v is None else [v])])
        tracks.append({
            "id": t.track_id, "sprite": t.sprite, "first_frame": int(t.frames[0]), "last_frame": int(t.frames[-1]),
            "anomalies": [{"type": a.type, "first_frame": a.first_frame, "last_frame": a.last_frame, "event": a.event} for a in t.anomalies],
            "ground_m": [[f, round(x, 3), round(d, 3)] for f, (x, d) in zip(t.frames.tolist(), t.ground.tolist())],
        })
    for rows in per_frame:
        rows.sort()
    return {
        "name": spec.label, "seed": spec.seed, "split": split_of(spec.seed), "fps": spec.fps, "frames": spec.n_frames,
        "size": list(CAMPUS_SIZE), "flow_deg": round(plan.flow_deg, 2), "anomaly_types": list(ANOMALY_TYPES),
        "box_columns": ["track", "x1", "y1", "x2", "y2"] + (["visibility"] if vis is not None else []),
        "events": plan.events, "tracks": tracks, "per_frame": per_frame,
    }


def make_scene(spec: SceneSpec, bank: SpriteBank | None = None) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Render a scene: (BGR frames, ground truth as truth_of gives it, with visibility); byte-identical per spec."""
    bank = bank or sprite_bank()
    plan = plan_scene(spec, bank)
    frames, vis = _render(plan, bank)
    return frames, truth_of(plan, vis)


# --------------------------------------------------------------------------- the CI clip, files and summaries


def ci_spec() -> SceneSpec:
    """14 s: four normal walkers, one runner, then one fall, at least 2 s apart."""
    return SceneSpec(seed=CI_SEED, n_frames=140, n_walkers=4, anomalies=(("running", 1), ("fall", 1)), min_gap_s=2.0, name="ci_fall_run")


def ci_clip(bank: SpriteBank | None = None) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The short generated clip for CI: normal walkers, exactly one fall and one running person, well apart in time."""
    return make_scene(ci_spec(), bank)


def write_scene(frames: list[np.ndarray], truth: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """out_dir/NAME.avi (MJPG) and out_dir/NAME_truth.json; returns their paths as video and truth."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"video": out_dir / f"{truth['name']}.avi", "truth": out_dir / f"{truth['name']}_truth.json"}
    H, W = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(paths["video"]), cv2.VideoWriter.fourcc(*"MJPG"), float(truth["fps"]), (W, H))
    if not vw.isOpened():
        raise RuntimeError(f"cannot write {paths['video']}")
    for f in frames:
        vw.write(f)
    vw.release()
    paths["truth"].write_text(truth_json({**truth, "video": paths["video"].name}))
    return paths


def summarize(truths: list[dict[str, Any]]) -> dict[str, Any]:
    """Scenes, frames, tracks, events by type and labelled track-frames by type."""
    events: Counter[str] = Counter()
    labelled: Counter[str] = Counter()
    for t in truths:
        events.update(e["type"] for e in t["events"])
        for tr in t["tracks"]:
            for a in tr["anomalies"]:
                labelled[a["type"]] += a["last_frame"] - a["first_frame"] + 1
    return {
        "scenes": len(truths),
        "frames": sum(t["frames"] for t in truths),
        "tracks": sum(len(t["tracks"]) for t in truths),
        "events": {k: events[k] for k in ANOMALY_TYPES if events[k]},
        "anomalous_track_frames": {k: labelled[k] for k in ANOMALY_TYPES if labelled[k]},
        "track_frames": sum(len(tr["ground_m"]) for t in truths for tr in t["tracks"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write abnormal-behaviour scenes (MJPG clips and truth JSON) of a split.")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--split", choices=sorted(SPLITS) + ["ci"], default="eval", help="which seeds (ci: the CI clip)")
    ap.add_argument("--n", type=int, default=5, help="how many scenes")
    ap.add_argument("--start", type=int, default=0, help="index of the first scene in the split")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    bank = sprite_bank()
    specs = [ci_spec()] if args.split == "ci" else split_specs(args.split, args.n, args.start)
    truths = []
    print(f"{'scene':16s} {'frames':>6s} {'tracks':>6s} {'sec':>5s}  events (type first-last frame, tracks)")
    for spec in specs:
        t = time.perf_counter()
        frames, truth = make_scene(spec, bank)
        write_scene(frames, truth, args.out)
        truths.append(truth)
        ev = "; ".join(f"{e['type']} {e['first_frame']}-{e['last_frame']} {e['tracks']}" for e in truth["events"]) or "-"
        print(f"{truth['name']:16s} {truth['frames']:6d} {len(truth['tracks']):6d} {time.perf_counter() - t:5.1f}  {ev}")
    summary = summarize(truths)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("events by type: " + ", ".join(f"{k} {v}" for k, v in summary["events"].items()))
    print(f"{summary['scenes']} scenes, {summary['frames']} frames, {summary['tracks']} tracks; total {time.perf_counter() - t0:.1f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
