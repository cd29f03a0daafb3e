"""A street clip with a traffic light that turns red while cars cross its stop line, with exact ground truth.

Real pixels where the models look: the road is the empty campus of vtest.avi (tools/synthetic.py's median
background, seen through its fitted pinhole camera) and the cars are a real vehicle crop of its sprite bank, so
the real COCO-SSD detector finds them. Drawn: a stop line painted across the road, and a three-lamp traffic light
on a pole at the kerb that goes green -> yellow -> red -> green on a schedule. Cars drive along the road one after
another (never overlapping), each at a constant speed that takes it over the stop line at a planned time: some on
green or yellow, some on red, every crossing at least `margin_s` from a change of the light, so the colour it
crossed on is never in doubt.

A crossing is what the pipeline counts: the bottom centre of the car's box (the line counter's anchor) passing
the stop line. The ground truth gives each car's boxes, its crossing frame, the frame the analyze stage counts it
(the anchor beyond the line's hysteresis band) and the light's state then; the red_light alerts a replay must
raise are the crossings on red, one each, at their counting frame.

One seeded numpy Generator drives everything: the same spec gives byte-identical frames, video and ground truth.

    python -m tools.street_clip --out DIR [--seed N]

writes DIR/street.avi (MJPG), DIR/street_truth.json and DIR/street.yaml, the pipeline config that replays it:
`vidpipe replay --config DIR/street.yaml --out RESULTS` (alerts in RESULTS/street.jsonl and DIR/alerts/).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from stages.analyze.geometry import Line
from tools.synthetic import _ROUTES, Sprite, SpriteBank, _chaikin, _clip_boxes, _int_box, _shadow, _World, sprite_bank

LIGHT_STATES = ("red", "yellow", "green")  # the light-state column's codes 0, 1, 2 (stages.infer.lights)
STREAM = "street"  # the stream id of a replay of street.avi (named after the file)
HYSTERESIS_PX = 8.0  # the analyze stage's default line_hysteresis: a crossing counts beyond this band
# The signal head: 0.4 m wide, 2.3 m to 3.3 m above the kerb (a UK primary signal on its 2.4 m pole); at its
# distance that is about the 1:2 crop shape of the light-state model.
HEAD_M = (0.4, 2.3, 3.3)  # width, bottom, top
STOP_LINE_M = 0.3  # painted width of the stop line
# What the replay config lets COCO-SSD report: its classes but bus and truck. It labels the saloon of this clip
# car and truck at once in many frames (two boxes: its NMS is per class), and the tracker then starts a second
# track on the second label, which raises a second alert for the same crossing.
DETECTOR_CLASSES = ["person", "bicycle", "car", "motorcycle", "traffic_light", "stop_sign"]

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class StreetSpec:
    """What to generate. Everything random follows from `seed`."""

    seed: int = 7
    fps: float = 10.0
    size: tuple[int, int] = (640, 360)  # (w, h) of the output frames
    # The part of the campus shown (x, y, w, h in campus pixels; the aspect of `size`): the road near enough that
    # cars are about 105 px tall (COCO-SSD scores them 0.5-0.9 there, under 0.5 in much of a wider view), with
    # room above it for the light.
    view: tuple[int, int, int, int] = (40, 74, 364, 205)
    duration_s: float = 12.5
    # (state, from this time in seconds); the first entry starts at 0.
    schedule: tuple[tuple[str, float], ...] = (("green", 0.0), ("yellow", 3.2), ("red", 6.0), ("green", 10.0))
    crossings_s: tuple[float, ...] = (1.8, 4.6, 7.3, 8.8, 11.3)  # planned stop-line crossings, one car each
    jitter_s: float = 0.2  # each crossing moves by up to this much, at random
    margin_s: float = 1.0  # no crossing nearer than this to a change of the light or the clip's ends
    speed_mps: tuple[float, float] = (3.5, 4.5)  # cars' speeds, uniform
    stop_u: float = 250.0  # campus column where the road's centre line meets the stop line
    lane_m: tuple[float, float] = (0.9, 1.3)  # cars drive this far left of the centre line (UK: keep left)
    road_m: tuple[float, float] = (-1.6, 2.4)  # the stop line runs across the road between these offsets (m)
    # Indices into the sprite bank's vehicles: the silver saloon of bikes.mp4 (#160:2), in turn as cut and
    # mirrored, tinted after its first use. The bank's two other vehicles do not hold up: the parked van of vtest
    # (#0:3) is labelled truck more often than car, and the other bikes car (#160:1) is crossed by fence bars, so
    # COCO-SSD scores it 0.1-0.5, mostly below the tracker's new_track_score (0.6).
    sprites: tuple[int, ...] = (2,)
    noise: float = 2.0  # sensor noise sigma, grey levels


@dataclass
class StreetClip:
    spec: StreetSpec
    frames: list[np.ndarray]  # H x W x 3 uint8 BGR
    truth: dict[str, Any]  # what street_truth.json holds


@dataclass
class _Car:
    sprite: Sprite
    tint: np.ndarray  # per-channel gain: 1 on the crop's first use
    mirror: bool
    t_cross: float  # s: its ground point is on the stop line then
    speed: float  # m/s
    lane: float  # m left of the centre line
    boxes: list[Box]  # (x, y, w, h) drawn in each frame
    visible: list[bool]


# --------------------------------------------------------------------------- the light


def light_state_at(schedule: tuple[tuple[str, float], ...], t: float) -> str:
    """The light's state at time t (s)."""
    state = schedule[0][0]
    for name, start in schedule:
        if t >= start:
            state = name
    return state


# Lamp colours (BGR): lit ones bright and saturated, with a near-white core, as LED heads look in the light-state
# model's training crops (green leans to teal there); unlit ones a dark tint of their colour.
_LIT = {"red": ((40, 40, 255), (200, 200, 255)), "yellow": ((0, 170, 255), (170, 235, 255)), "green": ((170, 255, 30), (225, 255, 200))}
_DIM = {"red": (35, 35, 75), "yellow": (30, 60, 75), "green": (60, 70, 35)}
_SS = 4  # supersampling: smooth edges at the light's small size


def draw_light(img: np.ndarray, box: Box, state: str) -> None:
    """Draw a traffic light filling `box` (x1, y1, x2, y2) of `img`, in place: a dark rounded housing with red on
    top, yellow, green; the lit lamp bright with a glow that spills half the box's width round it, the others dim."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    pad = w // 2
    W, H = (w + 2 * pad) * _SS, (h + 2 * pad) * _SS
    region = (slice(y1 - pad, y2 + pad), slice(x1 - pad, x2 + pad))
    canvas = cv2.resize(img[region], (W, H), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    hx1, hy1, hx2, hy2 = pad * _SS, pad * _SS, (pad + w) * _SS - 1, (pad + h) * _SS - 1
    r = int(0.18 * w * _SS)
    housing = np.zeros((H, W), np.uint8)
    cv2.rectangle(housing, (hx1 + r, hy1), (hx2 - r, hy2), 255, -1)
    cv2.rectangle(housing, (hx1, hy1 + r), (hx2, hy2 - r), 255, -1)
    for cx, cy in ((hx1 + r, hy1 + r), (hx2 - r, hy1 + r), (hx1 + r, hy2 - r), (hx2 - r, hy2 - r)):
        cv2.circle(housing, (cx, cy), r, 255, -1)
    canvas = np.where((housing > 0)[..., None], np.float32(28), canvas)
    radius = 0.34 * w * _SS
    lit = np.zeros((H, W, 3), np.float32)
    for k, name in enumerate(LIGHT_STATES):
        centre = (int((pad + w / 2) * _SS), int((pad + h * (2 * k + 1) / 6) * _SS))
        if name == state:
            ring, core = _LIT[name]
            cv2.circle(lit, centre, int(radius), ring, -1, cv2.LINE_AA)
            cv2.circle(lit, centre, int(radius * 0.55), core, -1, cv2.LINE_AA)
        else:
            cv2.circle(canvas, centre, int(radius), _DIM[name], -1, cv2.LINE_AA)
    glow = cv2.GaussianBlur(lit, (0, 0), radius * 0.6)  # the lit lamp, blurred, added over housing and surroundings
    canvas = np.where(lit.max(axis=2, keepdims=True) > 0, lit, np.minimum(canvas + 0.8 * glow, 255))
    small = cv2.resize(canvas, (w + 2 * pad, h + 2 * pad), interpolation=cv2.INTER_AREA)
    img[region] = np.clip(small + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- the road


class _Road:
    """The campus's main road (route 0 of tools.synthetic) driven left to right, on the ground in metres."""

    def __init__(self, world: _World) -> None:
        self.world = world
        p = np.array(_ROUTES[0][::-1], float)
        X, D = world.cam.ground(p[:, 0], p[:, 1])
        self.pts = _chaikin(np.stack([X, D], 1))
        self.seg = np.diff(self.pts, axis=0)
        self.seglen = np.hypot(self.seg[:, 0], self.seg[:, 1])
        self.s_cum = np.concatenate([[0.0], np.cumsum(self.seglen)])
        self.normal = np.stack([-self.seg[:, 1], self.seg[:, 0]], 1) / self.seglen[:, None]  # left of travel

    def at(self, s: np.ndarray | float | list[float], offset: np.ndarray | float = 0.0) -> np.ndarray:
        """World (X, D) [n, 2] at arc length s (m) along the centre line, `offset` m to the left of travel."""
        s = np.atleast_1d(np.asarray(s, float))
        i = np.clip(np.searchsorted(self.s_cum, s, side="right") - 1, 0, len(self.seg) - 1)
        t = (s - self.s_cum[i]) / self.seglen[i]
        return self.pts[i] + t[:, None] * self.seg[i] + np.asarray(offset, float).reshape(-1, 1) * self.normal[i]

    def s_at_u(self, u: float) -> float:
        """Arc length where the centre line is seen at campus column u."""
        s = np.linspace(0, self.s_cum[-1], 20001)
        cu, _ = self.world.cam.project(*self.at(s).T)
        return float(s[int(np.argmin(np.abs(np.asarray(cu) - u)))])

    def to_out(self, xd: np.ndarray, height: float = 0.0) -> np.ndarray:
        """Output-frame pixels [n, 2] of world points [n, 2] at a height (m)."""
        u, v = self.world.cam.project(xd[:, 0], xd[:, 1], height)
        x, y = self.world.to_out(np.asarray(u), np.asarray(v))
        return np.stack([x, y], 1)


# --------------------------------------------------------------------------- the clip


def _check_plan(spec: StreetSpec) -> None:
    # Every crossing, wherever its jitter puts it, stays margin_s from a change of the light and from the clip's ends.
    if spec.schedule[0][1] != 0 or any(s not in LIGHT_STATES for s, _ in spec.schedule):
        raise ValueError("the schedule must start at 0 s, with states among red, yellow and green")
    for t in spec.crossings_s:
        lo, hi = t - spec.jitter_s, t + spec.jitter_s
        if lo < spec.margin_s or hi > spec.duration_s - spec.margin_s:
            raise ValueError(f"the crossing at {t} s is within {spec.margin_s} s of the clip's ends")
        for _, switch in spec.schedule[1:]:
            if lo - spec.margin_s < switch < hi + spec.margin_s:
                raise ValueError(f"the crossing at {t} s (+-{spec.jitter_s}) is within {spec.margin_s} s of the light's change at {switch} s")


def _view_of(img: np.ndarray, spec: StreetSpec) -> np.ndarray:
    vx, vy, vw, vh = spec.view
    interp = cv2.INTER_AREA if vw > spec.size[0] else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(img[vy:vy + vh, vx:vx + vw]), spec.size, interpolation=interp)


def _paint(img: np.ndarray, poly: np.ndarray, colour: tuple[int, int, int], opacity: float) -> None:
    # Road paint: anti-aliased, a little soft, not quite hiding the asphalt's texture.
    m = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    a = cv2.GaussianBlur(m.astype(np.float32) / 255.0, (0, 0), 0.6)[..., None] * opacity
    img[:] = np.clip(img * (1 - a) + np.array(colour, np.float32) * a + 0.5, 0, 255).astype(np.uint8)


def _xyxy(b: Box) -> Box:
    x, y, w, h = b
    return x, y, x + w, y + h


def _clipped(b: Box, size: tuple[int, int]) -> Box:
    # The drawn box (x, y, w, h) as x1, y1, x2, y2 clipped to the frame, as a detector would see it.
    x1, y1, x2, y2 = _xyxy(b)
    return max(x1, 0), max(y1, 0), min(x2, size[0]), min(y2, size[1])


def _overlap(a: Box, b: Box) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def make_clip(spec: StreetSpec | None = None, bank: SpriteBank | None = None) -> StreetClip:
    """Render the clip and its ground truth; the same spec gives byte-identical output. Raises ValueError for a
    spec whose cars would overlap, hide the light or cross too near a change of the light."""
    spec = spec or StreetSpec()
    bank = bank or sprite_bank()
    _check_plan(spec)
    rng = np.random.default_rng(spec.seed)
    W, H = spec.size
    world = _World(spec.view, spec.size, spec.fps, bank.camera)
    road = _Road(world)
    n_frames = int(round(spec.duration_s * spec.fps))
    times = np.arange(n_frames) / spec.fps

    # The stop line runs straight across the road at s_line: a car's ground point is on it exactly when the car is
    # at s_line, as the camera maps straight lines on the ground to straight lines in the frame.
    s_line = road.s_at_u(spec.stop_u)
    ends = road.to_out(road.at([s_line, s_line], np.array(spec.road_m)))
    band = road.at([s_line - STOP_LINE_M / 2] * 2 + [s_line + STOP_LINE_M / 2] * 2, np.array([*spec.road_m, *spec.road_m[::-1]]))
    line = Line("stop", ends[0], ends[1])

    # The light: on a pole at the left kerb just past the line, where a driver stopped at the line sees it.
    base = road.at(s_line + 1.0, spec.road_m[1] + 0.4)
    (foot_x, foot_y), = road.to_out(base)
    (head_x, head_y), = road.to_out(base, HEAD_M[1])
    (_, top_y), = road.to_out(base, HEAD_M[2])
    (left_x, _), = road.to_out(base - [HEAD_M[0] / 2, 0])
    (right_x, _), = road.to_out(base + [HEAD_M[0] / 2, 0])
    light_box = (int(round(left_x)), int(round(top_y)), int(round(right_x)), int(round(head_y)))
    glow = (light_box[2] - light_box[0]) // 2  # draw_light's margin round the housing
    glow_box = (light_box[0] - glow, light_box[1] - glow, light_box[2] + glow, light_box[3] + glow)
    if glow_box[1] < 0 or glow_box[2] > W or light_box[3] >= min(ends[:, 1]):
        raise ValueError(f"the light {light_box} must lie inside the frame, above the stop line")

    bg = _view_of(bank.background, spec)
    _paint(bg, road.to_out(band), (222, 224, 224), 0.9)
    cv2.line(bg, (int(round(foot_x * 16)), int(round(foot_y * 16))), (int(round(head_x * 16)), int(round(head_y * 16))), (95, 98, 100),
             max(2, glow // 4), cv2.LINE_AA, shift=4)
    backgrounds = {}
    for state in LIGHT_STATES:
        backgrounds[state] = bg.copy()
        draw_light(backgrounds[state], light_box, state)

    # Cars: a crop each (every crop once before any repeats), a speed, a lane and a crossing time; each drives at its
    # speed through the stop line at that time. Repeats are tinted, and mirrored every other round.
    order = [spec.sprites[i] for i in rng.permutation(len(spec.sprites)).tolist()]
    cars: list[_Car] = []
    for k, planned in enumerate(spec.crossings_s):
        sprite = bank.vehicles[order[k % len(order)]]
        reused = k >= len(order)
        tint = np.clip(1.0 + rng.normal(0, 0.06, 3), 0.88, 1.12).astype(np.float32) if reused else np.ones(3, np.float32)
        # A crop that faces a known way faces the way it drives (right); rear views (facing 0) are mirrored in turn.
        mirror = sprite.facing == -1 or (sprite.facing == 0 and (k // len(order)) % 2 == 1)
        t_cross = planned + float(rng.uniform(-spec.jitter_s, spec.jitter_s))
        speed = float(rng.uniform(*spec.speed_mps))
        lane = float(rng.uniform(*spec.lane_m))
        s = s_line + speed * (times - t_cross)
        boxes = [_int_box(b) for b in world.boxes(road.at(s, np.full(n_frames, lane)), sprite.height_m, sprite.aspect)]
        on_road = (s >= 0) & (s <= road.s_cum[-1])  # past the route's ends the projection means nothing
        visible = [bool(ok) and x + w > 0 and x < W and y + h > 0 and y < H for ok, (x, y, w, h) in zip(on_road, boxes)]
        cars.append(_Car(sprite, tint, mirror, t_cross, speed, lane, boxes, visible))

    # The real scenery that can stand in front of a car (tools.synthetic's scene layers), by the row of its base.
    layers = []
    for lay in bank.scene_layers:
        m = _view_of(lay.mask, spec)
        ys, xs = np.nonzero(m > 0.01)
        if len(ys):
            sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            layers.append(((lay.base_v - spec.view[1]) * world.sy, sl, m[sl][..., None]))
    pad = 24
    noise_bank = [np.clip(128.5 + rng.standard_normal((H + pad, W, 3), np.float32) * np.float32(spec.noise), 0, 255).astype(np.uint8)
                  for _ in range(6)]  # fields of sensor noise (offset by 128), picked and shifted per frame: cheaper than fresh
    cache: dict[tuple[int, bool, int, int], tuple[np.ndarray, np.ndarray]] = {}
    frames: list[np.ndarray] = []
    gain = 1.0
    for f in range(n_frames):
        state = light_state_at(spec.schedule, float(times[f]))
        canvas = backgrounds[state].copy()
        here = sorted((c for c in cars if c.visible[f]), key=lambda c: c.boxes[f][1] + c.boxes[f][3])  # far to near
        for i, a in enumerate(here):
            if any(_overlap(_xyxy(a.boxes[f]), _xyxy(b.boxes[f])) for b in here[i + 1:]):
                raise ValueError(f"frame {f}: two cars overlap; space their crossings further apart")
            if _overlap(_xyxy(a.boxes[f]), glow_box):
                raise ValueError(f"frame {f}: a car hides the light")
        for c in here:
            x, y, w, h = c.boxes[f]
            key = (id(c.sprite), c.mirror, w, h)
            if key not in cache:
                img, alpha = c.sprite.image, c.sprite.alpha
                if c.mirror:
                    img, alpha = img[:, ::-1], alpha[:, ::-1]
                interp = cv2.INTER_AREA if h < img.shape[0] else cv2.INTER_LINEAR
                cache[key] = (cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=interp).astype(np.float32),
                              cv2.resize(np.ascontiguousarray(alpha), (w, h), interpolation=interp))
            rimg, ra = cache[key]
            dst, src = _clip_boxes(x, y, w, h, W, H)
            if dst is None:
                continue
            _shadow(canvas, x + w / 2, y + h - 0.03 * h, 0.52 * w, 0.08 * h + 1, 0.35)
            flicker = float(1.0 + rng.normal(0, 0.012))  # per-frame brightness of the car
            a = ra[src][..., None]
            canvas[dst] = np.clip(canvas[dst] * (1 - a) + rimg[src] * (c.tint * flicker) * a + 0.5, 0, 255).astype(np.uint8)
            for depth, sl, m in layers:  # scenery nearer than this car: its own pixels back over the car
                if depth > y + h:
                    canvas[sl] = np.clip(canvas[sl] * (1 - m) + backgrounds[state][sl] * m + 0.5, 0, 255).astype(np.uint8)
        gain = float(np.clip(gain + rng.normal(0, 0.003), 0.97, 1.03))  # slow exposure drift
        noise = noise_bank[int(rng.integers(len(noise_bank)))]
        oy = int(rng.integers(pad))
        frames.append(cv2.addWeighted(canvas, gain, noise[oy:oy + H], 1.0, -128.0))  # canvas * gain + noise - 128, saturating

    return StreetClip(spec, frames, _truth(spec, cars, line, light_box, times))


def _truth(spec: StreetSpec, cars: list[_Car], line: Line, light_box: Box, times: np.ndarray) -> dict[str, Any]:
    """The ground truth: the light and its schedule, the stop line, each car's boxes and crossing, and the alerts a
    replay must raise."""
    n = len(times)
    out_cars: list[dict[str, Any]] = []
    direction = None
    for k, c in enumerate(cars):
        seen = [f for f in range(n) if c.visible[f]]
        anchors = np.array([[x + w / 2, y + h] for x, y, w, h in c.boxes], float)
        sd = line.signed_distance(anchors)
        past = np.sign(sd) != np.sign(sd[0])
        if not past.any() or int(np.argmax(past)) not in seen:
            raise ValueError(f"car {k + 1} does not cross the stop line in view")
        cross_f = int(np.argmax(past))
        count_f = int(np.argmax(past & (np.abs(sd) > HYSTERESIS_PX)))
        d = "in" if sd[count_f] > 0 else "out"
        if direction not in (None, d):
            raise ValueError("every car must cross the stop line the same way")
        direction = d
        light = light_state_at(spec.schedule, c.t_cross)
        if light_state_at(spec.schedule, float(times[count_f])) != light or count_f not in seen:
            raise ValueError(f"car {k + 1}: counted at frame {count_f}, out of view or under another light")
        out_cars.append({
            "id": k + 1,
            "sprite": c.sprite.source + (" mirrored" if c.mirror else "") + (" tinted" if (c.tint != 1).any() else ""),
            "speed_mps": round(c.speed, 3),
            "lane_m": round(c.lane, 3),
            "first_frame": seen[0],
            "last_frame": seen[-1],
            "crossing_s": round(c.t_cross, 4),  # its ground point on the stop line (between two frames)
            "crossing_frame": cross_f,  # the first frame with its box's bottom centre past the line
            "count_frame": count_f,  # the first with it beyond the hysteresis band: when analyze counts it
            "light": light,
            "boxes": [[f, *_clipped(c.boxes[f], spec.size)] for f in seen],  # frame, x1, y1, x2, y2 in the frame
        })
    schedule = []
    for i, (state, start) in enumerate(spec.schedule):
        end = spec.schedule[i + 1][1] if i + 1 < len(spec.schedule) else spec.duration_s
        frs = np.flatnonzero((times >= start) & (times < end))
        schedule.append({"state": state, "start_s": start, "end_s": end, "first_frame": int(frs[0]), "last_frame": int(frs[-1])})
    return {
        "video": "street.avi",
        "seed": spec.seed,
        "fps": spec.fps,
        "frames": n,
        "size": list(spec.size),
        "light": {"box": list(light_box), "state_codes": list(LIGHT_STATES), "schedule": schedule},
        "stop_line": {"name": "stop", "points": [[round(float(v), 2) for v in p] for p in (line.a, line.b)],
                      "direction": direction, "hysteresis_px": HYSTERESIS_PX},
        "cars": out_cars,
        "expected_alerts": [{"car": c["id"], "frame": c["count_frame"], "time_s": round(c["count_frame"] / spec.fps, 3), "light": "red"}
                            for c in out_cars if c["light"] == "red"],
    }


# --------------------------------------------------------------------------- config and files


def pipeline_config(truth: dict[str, Any], video: str = "street.avi", alerts_dir: str = "alerts") -> dict[str, Any]:
    """The pipeline config that replays the clip: COCO-SSD, the light as a fixed object read by the light-state model,
    the tracker, the stop line with a red_light rule, alerts to a JSONL file, and the record stage. `video` is
    relative to the config's folder, `alerts_dir` to the working directory (or absolute)."""
    line = truth["stop_line"]
    x1, y1, x2, y2 = truth["light"]["box"]
    m = 4  # px round the light's box
    return {
        "mode": "replay",
        "streams": [{"id": STREAM, "source": video}],
        "stages": [
            {"name": "decode", "kind": "decode"},
            {"name": "infer", "kind": "infer", "options": {
                # At 0.2 low-score boxes feed the tracker's second stage; no bus or truck (DETECTOR_CLASSES says why).
                "detector": {"type": "coco_ssd", "score_threshold": 0.2, "classes": DETECTOR_CLASSES},
                "fixed_objects": [{"category": "traffic_light", "box": truth["light"]["box"], "streams": [STREAM]}],
                "secondary": [{"name": "light", "kind": "light_state", "classes": ["traffic_light"]}],
            }},
            {"name": "track", "kind": "track"},
            {"name": "analyze", "kind": "analyze", "options": {"streams": {STREAM: {
                "frame_size": truth["size"],
                # The governing light is the one in this zone: COCO-SSD takes the traffic cones by the road for traffic
                # lights (score 0.3-0.6), and one of them is nearer the stop line than the real light.
                "zones": {"signal": {"points": [[x1 - m, y1 - m], [x2 + m, y1 - m], [x2 + m, y2 + m], [x1 - m, y2 + m]]}},
                "lines": {line["name"]: {"points": line["points"]}},
                # Only the way the cars drive: a car that the tracker takes for an earlier one of the same look (re-identified
                # across the frame) jumps back over the line, which counts as a crossing the other way.
                "rules": [{"name": "red-light", "type": "red_light", "line": line["name"], "direction": line["direction"], "light_zone": "signal"},
                          {"name": "light-changes", "type": "light_change", "zone": "signal"}],
            }}}},
            {"name": "alert", "kind": "alert", "options": {
                "outbox": f"{alerts_dir}/outbox.db",
                "sinks": {"file": {"type": "jsonl", "path": f"{alerts_dir}/alerts.jsonl", "snapshots_dir": f"{alerts_dir}/snapshots"}},
            }},
            {"name": "record", "kind": "record"},
        ],
    }


def truth_json(truth: dict[str, Any]) -> str:
    """The ground truth as street_truth.json holds it: indented, with each list of numbers on one line."""
    text = json.dumps(truth, indent=1)
    return re.sub(r"\[\s+([-\d., \n]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


def write_clip(clip: StreetClip, out_dir: Path, alerts_dir: str | None = None) -> dict[str, Path]:
    """Write out_dir/street.avi (MJPG), street_truth.json and street.yaml (alerts to `alerts_dir`, default
    out_dir/alerts); returns their paths as video, truth and config."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"video": out_dir / "street.avi", "truth": out_dir / "street_truth.json", "config": out_dir / "street.yaml"}
    W, H = clip.spec.size
    vw = cv2.VideoWriter(str(paths["video"]), cv2.VideoWriter.fourcc(*"MJPG"), float(clip.spec.fps), (W, H))
    if not vw.isOpened():
        raise RuntimeError(f"cannot write {paths['video']}")
    for f in clip.frames:
        vw.write(f)
    vw.release()
    paths["truth"].write_text(truth_json(clip.truth))
    cfg = pipeline_config(clip.truth, paths["video"].name, alerts_dir or str((out_dir / "alerts").resolve()))
    paths["config"].write_text(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=160))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the street clip (a traffic light, a stop line, cars crossing it), its ground truth and its replay config.")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=StreetSpec.seed, help="random seed (default %(default)s)")
    args = ap.parse_args(argv)
    clip = make_clip(StreetSpec(seed=args.seed))
    paths = write_clip(clip, args.out)
    t = clip.truth
    print(f"{len(clip.frames)} frames at {clip.spec.fps:g} fps -> {paths['video']}")
    for c in t["cars"]:
        print(f"car {c['id']}: over the stop line at {c['crossing_s']:.2f} s (frame {c['crossing_frame']}, counted at {c['count_frame']}) "
              f"on {c['light']}; {c['sprite']}")
    print(f"{len(t['expected_alerts'])} red_light alerts expected; ground truth {paths['truth']}; "
          f"replay: vidpipe replay --config {paths['config']} --out RESULTS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
