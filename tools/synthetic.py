"""Semi-synthetic tracking sequences with exact ground truth, made of real pixels.

Real people and vehicles, cut from the hand-labelled frames of the sample clips
(tests/data/labels), walk and drive over the real, empty campus of vtest.avi: a
per-pixel temporal median of the clip, which removes the walkers. A pinhole camera
fitted to the labelled boxes gives every object its size and its speed in pixels
from a position in metres on the ground, so perspective matches the footage.

What a sequence can hold:
- pairwise crossings, forced: two walkers meet at the same place and time, one a
  little behind the other, so the nearer one passes in front;
- static occluders cut from the background: the real lamp post with its sign, the
  tripod and the boulder stay in place; copies of the air-con stack by the building,
  of the lamp post and of the parked van can be placed on the ground, and walkers
  are routed behind them;
- camera-rate changes: segments where the camera keeps every 2nd or 4th frame;
- the ground truth of every frame: the full sprite box clipped to the frame and the
  visible fraction of the sprite after occluders, nearer objects and frame edges.

The same spec gives byte-identical frames and ground truth: one seeded numpy
Generator drives everything, with no wall-clock or hash randomness.

    python -m tools.synthetic --out DIR [--only NAME]

writes the evaluation set in MOT layout and prints a summary.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from pipeline.boxes import box_ioa
from pipeline.categories import category_id
from stages.track.association import iou_matrix

REPO_ROOT = Path(__file__).resolve().parents[1]

CAMPUS_SIZE = (768, 576)  # vtest.avi, (w, h)
# Person sprites come only from these vtest frames: later frames train the appearance network.
PERSON_FRAMES = (0, 55, 110, 165, 220, 275)
VEHICLE_VTEST_LAST_FRAME = 275
MEDIAN_FRAMES = 60
MIN_PERSON_HEIGHT = 50  # px; smaller crops are too coarse to scale up near the camera
MIN_VEHICLE_HEIGHT = 40
# Below this visible fraction an object counts as unobserved: the occlusion gaps.
UNOBSERVED_VIS = 0.3

# vtest has a small cast who walk round again and again: crops of one person, grouped by eye, so that
# a sequence shows each real person once before it re-uses anyone (re-uses get other colours).
SAME_PERSON = (
    ("vtest.avi#55:2", "vtest.avi#110:3", "vtest.avi#220:3", "vtest.avi#275:5"),  # red-and-navy puffer jacket
    ("vtest.avi#55:3", "vtest.avi#110:4", "vtest.avi#220:4", "vtest.avi#275:6"),  # blonde, long black coat
    ("vtest.avi#0:1", "vtest.avi#110:1"),  # glasses, dark jacket, jeans
)
# bikes.mp4 cars kept out of the vehicle sprites, and why (all the usable ones are seen through a fence).
VEHICLE_EXCLUDE = {
    ("bikes.mp4", 185, (410, 107, 467, 153)): "mostly hidden behind the fence bars",
    ("bikes.mp4", 185, (298, 109, 363, 151)): "motion-blurred and crossed by a fence diagonal",
    ("bikes.mp4", 185, (529, 99, 598, 156)): "the same car as bikes 160 (526,102,600,163)",
}
CAR_HEIGHT_M = 1.45  # bikes cars have no calibrated camera: a typical saloon
# The camera fit, extrapolated to the raised road by the building, makes the parked van 2.6 m tall;
# a standard-roof Transit is about 2.2 m.
VAN_HEIGHT_M = 2.2

# Campus-frame outlines of the vtest scenery (traced on the median background at 4-8x zoom).
_POLE_SHAFT = [(424, 88), (425, 200), (427, 260), (428, 300), (429, 350), (430, 393),
               (438, 393), (436, 350), (434, 300), (433, 260), (432, 200), (431, 88)]
_POLE_SIGN = [(413, 202), (445, 202), (445, 245), (413, 245)]
_POLE_HEAD = [(397, 34), (404, 28), (424, 22), (431, 16), (438, 19), (438, 30), (430, 36), (410, 38)]
_POLE_ARM = [(426, 92), (421, 78), (412, 60), (404, 45), (399, 36)]
_TRIPOD_HEAD = [(501, 338), (510, 338), (510, 356), (501, 356)]
_TRIPOD_LINES = [((505, 350), (504, 386)), ((503, 385), (461, 471)), ((505, 388), (507, 463)),
                 ((508, 385), (522, 482))]
_BOULDER = [(163, 272), (168, 262), (172, 256), (176, 251), (183, 251), (188, 256), (192, 262),
            (197, 268), (195, 275), (180, 277), (165, 276)]
_VAN = [(652, 52), (655, 47), (660, 45), (710, 45), (714, 49), (716, 57), (721, 63), (723, 70),
        (723, 90), (720, 95), (708, 100), (698, 100), (692, 97), (655, 97), (652, 92)]
_VAN_BOX = (654, 46, 722, 99)  # its label box in every vtest frame
# Base (u, v) of the scenery that stays in place, and how far (m) walkers keep from it.
_SCENE_BASES = {"lamp_post": (434.0, 393.0, 0.35), "tripod": (495.0, 472.0, 0.6), "boulder": (180.0, 276.0, 0.7)}

# Where feet may be, in campus pixels: road, car parks and grass below the buildings, running
# on past the left, right and bottom frame edges so that objects can walk in and out there.
_GROUND = [(-420, 156), (300, 150), (380, 140), (600, 130), (640, 110), (700, 102), (1190, 102),
           (1190, 1000), (-420, 1000)]
# Vehicle routes along the campus roads (campus pixels), each also driven in reverse.
_ROUTES = [
    [(1150, 470), (768, 392), (610, 335), (470, 292), (250, 249), (0, 216), (-420, 205)],
    [(1150, 470), (768, 392), (640, 320), (590, 250), (615, 175), (670, 125), (760, 100), (1190, 88)],
    [(-420, 205), (0, 216), (250, 249), (430, 272), (540, 235), (610, 170), (670, 125), (760, 100),
     (1190, 88)],
]
_AC_STACK = [(597, 34), (627, 34), (627, 111), (597, 111)]  # two air-con units on a rack, by the building
_AC_SIGN = [(585, 43), (612, 39), (614, 72), (588, 73)]  # the warning sign in front of them
_AC_POST = [(605, 72), (606, 119)]
# Placed occluders, in the order a spec's `occluders` count takes them, and their spots (campus pixels,
# centre of the base): the air-con stack as a roadside utility box (about 1.3 m wide: short gaps), a
# copy of the lamp post (its sign hides walkers' torsos), the parked van (wide: longer gaps).
OCCLUDER_KINDS = ("cabinet", "lamp", "van")
_SPOTS = {
    "cabinet": [(335, 216), (560, 178), (700, 262)],
    "lamp": [(205, 302), (120, 275), (655, 478)],
    "van": [(175, 206), (515, 186), (95, 204)],
}


# --------------------------------------------------------------------------- camera and ground


@dataclass(frozen=True)
class Camera:
    """Pinhole camera over flat ground. World: X to the right, D forward along the ground, heights up (m).

    Pitch and height were fitted to the 32 clean person boxes of vtest frames 0-275 (foot row
    against box height, people taken as 1.75 m, focal length assumed 800 px): 5 px rms error.
    """

    f: float = 800.0
    cx: float = 384.0
    cy: float = 288.0
    pitch: float = math.radians(21.5)
    height: float = 5.9

    def project(self, X: np.ndarray | float, D: np.ndarray | float, Y: np.ndarray | float = 0.0
                ) -> tuple[np.ndarray | float, np.ndarray | float]:
        """Image (u, v) in campus pixels of the world point (X, D) at height Y."""
        c, s = math.cos(self.pitch), math.sin(self.pitch)
        yc = (self.height - Y) * c - D * s
        zc = D * c + (self.height - Y) * s
        return self.cx + self.f * X / zc, self.cy + self.f * yc / zc

    def ground(self, u: np.ndarray | float, v: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """World (X, D) of the ground point seen at image (u, v); v must lie below the horizon."""
        c, s = math.cos(self.pitch), math.sin(self.pitch)
        a = (np.asarray(u, float) - self.cx) / self.f
        b = (np.asarray(v, float) - self.cy) / self.f
        t = self.height / (b * c + s)
        return t * a, t * (c - b * s)

    def height_at(self, u: float, v_foot: float, v_top: float) -> float:
        """Real height (m) of an upright object with its foot at (u, v_foot) and its top at row v_top."""
        c, s = math.cos(self.pitch), math.sin(self.pitch)
        _, D = self.ground(u, v_foot)
        r = (v_top - self.cy) / self.f
        return float(self.height - D * (s + r * c) / (c - r * s))


CAMERA = Camera()


def _rasterize(shapes: list, size: tuple[int, int] = CAMPUS_SIZE, feather: float = 0.7) -> np.ndarray:
    # Hand-traced outlines -> a soft float mask over the campus frame.
    m = np.zeros((size[1], size[0]), np.uint8)
    for kind, data, *rest in shapes:
        if kind == "poly":
            cv2.fillPoly(m, [np.array(data, np.int32)], 255, cv2.LINE_AA)
        else:  # polyline with a thickness
            cv2.polylines(m, [np.array(data, np.int32)], False, 255, rest[0], cv2.LINE_AA)
    a = m.astype(np.float32) / 255.0
    return cv2.GaussianBlur(a, (0, 0), feather) if feather > 0 else a


# --------------------------------------------------------------------------- sprites


@dataclass(frozen=True, eq=False)
class Sprite:
    """A real object crop: the labelled box of one object in one frame, with a soft mask."""

    image: np.ndarray  # h x w x 3 uint8 BGR: exactly the labelled box
    alpha: np.ndarray  # h x w float32 0..1
    cls: str  # "person" or "car"
    height_m: float  # real height: from the calibrated camera (vtest) or typical (bikes cars)
    facing: int  # +1 walks to the right in its source frame, -1 to the left, 0 unknown
    source: str  # "vtest.avi#55:3": video, frame, index among that frame's objects

    @property
    def aspect(self) -> float:
        return self.image.shape[1] / self.image.shape[0]


@dataclass(frozen=True, eq=False)
class _Layer:
    # A static occluder over the campus frame: soft mask and the row of its base (its depth).
    name: str
    mask: np.ndarray  # campus-sized float32 0..1 (zero outside the occluder)
    base_v: float
    base_u: float
    radius_m: float  # walkers keep this far from its base


@dataclass(frozen=True, eq=False)
class _Placeable:
    # A piece of the background that can stand elsewhere on the ground (scaled by perspective).
    image: np.ndarray  # BGR crop of the median background
    alpha: np.ndarray
    base: tuple[float, float]  # centre of its base, in crop pixels
    height_m: float  # real height: sets its size wherever it stands
    depth_m: float  # how far it reaches back from its base (walkers keep out)
    extra: dict = field(default_factory=dict)

    @property
    def top(self) -> int:
        # First crop row of the object: its height in pixels is base - top.
        return int(np.flatnonzero(self.alpha.max(axis=1) > 0.5)[0])


@dataclass(frozen=True, eq=False)
class SpriteBank:
    """Everything cut from the sample videos, once: background, sprites and occluder templates."""

    background: np.ndarray  # campus median, 576 x 768 x 3 uint8
    people: list[Sprite]
    vehicles: list[Sprite]
    scene_layers: list[_Layer]  # occluders standing in the real scene (lamp post, tripod, boulder)
    placeable: dict[str, _Placeable]  # occluders that can be copied elsewhere: "cabinet", "lamp", "van"
    camera: Camera = CAMERA


def _read_frames(path: Path, keep: set[int]) -> tuple[dict[int, np.ndarray], int]:
    # Sequential reads, counting them, exactly as the labels define frame numbers (no seeking).
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open {path}")
    frames: dict[int, np.ndarray] = {}
    n, last = 0, max(keep)
    try:
        while n <= last:
            if not cap.grab():  # read() is grab() + retrieve(); only kept frames need the second half
                break
            if n in keep:
                ok, img = cap.retrieve()
                if not ok:
                    break
                frames[n] = img
            n += 1
    finally:
        cap.release()
    return frames, n


def _frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def median_image(frames: list[np.ndarray]) -> np.ndarray:
    # np.median(stack, axis=0), rounded; partitioning pixel-major rows is several times faster.
    n = len(frames)
    rows = np.stack([f.reshape(-1) for f in frames], axis=1)  # (pixels, n), each row contiguous
    mid = [(n - 1) // 2, n // 2]
    part = np.partition(rows, mid, axis=1)
    med = (part[:, mid[0]].astype(np.float32) + part[:, mid[1]]) / 2
    return np.round(med).astype(np.uint8).reshape(frames[0].shape)


def person_alpha(crop: np.ndarray, bg: np.ndarray) -> np.ndarray:
    # The person is what differs from the empty background; closed, hole-filled and feathered so
    # that no box-shaped patch of the source frame travels with the sprite.
    h, w = crop.shape[:2]
    diff = np.abs(crop.astype(np.int16) - bg.astype(np.int16)).max(axis=2).astype(np.float32)
    diff = cv2.GaussianBlur(diff, (3, 3), 0)
    # Hysteresis: clearly different pixels seed the person; weaker ones join when connected to them
    # (grass texture, noise and the soft shadow round the feet stay below ~40 grey levels).
    weak = (diff > 40).astype(np.uint8)
    weak = cv2.morphologyEx(weak, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 5)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(weak, connectivity=8)
    strong = np.unique(labels[(diff > 70) & (weak > 0)])
    strong = strong[strong > 0]
    if len(strong):
        areas = stats[strong, cv2.CC_STAT_AREA]
        strong = strong[areas >= 0.1 * areas.max()]  # body, plus detached limbs or bags
    mask = np.isin(labels, strong).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    # Fill small holes (texture inside the clothes); large ones are gaps between the legs or arms.
    inv = (1 - mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    for j in range(1, n):
        x, y, bw, bh, area = stats[j]
        touches = x == 0 or y == 0 or x + bw == w or y + bh == h
        if not touches and area < 0.015 * h * w:
            mask[labels == j] = 1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ellipse = ((xx + 0.5 - w / 2) / (0.62 * w)) ** 2 + ((yy + 0.5 - h / 2) / (0.58 * h)) ** 2 <= 1.0
    frac = mask.mean()
    if not 0.2 <= frac <= 0.9:  # segmentation failed: fall back to a plain ellipse
        mask = ellipse.astype(np.uint8)
    a = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)
    return np.clip(a * 1.2, 0.0, 1.0)


def _rounded_alpha(h: int, w: int, feather: float) -> np.ndarray:
    # Edge-faded rounded rectangle: vehicle crops have no background model to cut them out.
    m = np.zeros((h, w), np.uint8)
    r = int(0.18 * min(h, w))
    cv2.rectangle(m, (r, 0), (w - 1 - r, h - 1), 255, -1)
    cv2.rectangle(m, (0, r), (w - 1, h - 1 - r // 2), 255, -1)
    for cx, cy in ((r, r), (w - 1 - r, r), (r, h - 1 - r // 2), (w - 1 - r, h - 1 - r // 2)):
        cv2.circle(m, (cx, cy), r, 255, -1)
    d = cv2.distanceTransform((m > 0).astype(np.uint8), cv2.DIST_L2, 3)
    return np.clip(d / feather, 0.0, 1.0).astype(np.float32)


def _walk_direction(f0: np.ndarray, f1: np.ndarray, box: list[int], alpha: np.ndarray, sign: int) -> int:
    # Which way the person faces: where the masked crop moved between two frames 3 apart.
    x1, y1, x2, y2 = box
    tmpl = f0[y1:y2, x1:x2]
    R = 30
    X1, Y1 = max(0, x1 - R), max(0, y1 - R)
    area = f1[Y1:min(f1.shape[0], y2 + R), X1:min(f1.shape[1], x2 + R)]
    if area.shape[0] < tmpl.shape[0] or area.shape[1] < tmpl.shape[1]:
        return 0
    m = (alpha > 0.5).astype(np.uint8)
    res = cv2.matchTemplate(area, tmpl, cv2.TM_SQDIFF, mask=np.dstack([m] * 3))
    _, _, loc, _ = cv2.minMaxLoc(res)
    dx = (X1 + loc[0] - x1) * sign
    return int(np.sign(dx)) if abs(dx) >= 3 else 0


def _overlaps(box: list[int], others: list[list[int]], frac: float) -> bool:
    x1, y1, x2, y2 = box
    area = (x2 - x1) * (y2 - y1)
    for o in others:
        iw = min(x2, o[2]) - max(x1, o[0])
        ih = min(y2, o[3]) - max(y1, o[1])
        if iw > 0 and ih > 0 and iw * ih > frac * area:
            return True
    return False


@functools.lru_cache(maxsize=2)
def _bank_cached(root: str) -> SpriteBank:
    repo = Path(root)
    videos = repo / "sample_videos"
    labels = json.loads((repo / "tests" / "data" / "labels" / "detections.json").read_text())

    # The empty campus: median of frames spread over the whole clip.
    vt = videos / "vtest.avi"
    n_total = _frame_count(vt)
    median_idx = set(np.linspace(0, max(n_total - 1, 0), MEDIAN_FRAMES).round().astype(int).tolist())
    motion_idx = {f - 3 if f >= 3 else f + 3 for f in PERSON_FRAMES}  # only to tell which way people face
    vframes, _ = _read_frames(vt, median_idx | set(PERSON_FRAMES) | motion_idx | {0})
    background = median_image([vframes[i] for i in sorted(median_idx) if i in vframes])

    scene_masks = {
        "lamp_post": _rasterize([("poly", _POLE_SHAFT), ("poly", _POLE_SIGN), ("poly", _POLE_HEAD),
                                 ("line", _POLE_ARM, 3)]),
        "tripod": _rasterize([("poly", _TRIPOD_HEAD)] + [("line", list(seg), 3) for seg in _TRIPOD_LINES]),
        "boulder": _rasterize([("poly", _BOULDER)], feather=1.2),
    }
    scene_layers = [_Layer(name, scene_masks[name], v, u, r) for name, (u, v, r) in _SCENE_BASES.items()]
    scenery = np.maximum.reduce(list(scene_masks.values()))

    people: list[Sprite] = []
    vehicles: list[Sprite] = []
    bikes_cars: list[tuple[int, list[int], str]] = []
    seen_parked: set[tuple[int, ...]] = set()
    for fr in labels["frames"]:
        video, idx, objs = fr["video"], fr["frame_index"], fr["objects"]
        for k, o in enumerate(objs):
            box = o["box"]
            x1, y1, x2, y2 = box
            at_edge = x1 <= 0 or y1 <= 0 or x2 >= fr["width"] or y2 >= fr["height"]
            if o["ignore"] or at_edge:
                continue
            src = f"{video}#{idx}:{k}"
            others = [ob["box"] for j, ob in enumerate(objs) if j != k]
            if video == "vtest.avi" and o["class"] == "person" and idx in PERSON_FRAMES:
                if y2 - y1 < MIN_PERSON_HEIGHT or _overlaps(box, others, 0.08):
                    continue  # too small to scale up, or part of someone else is in the crop
                if scenery[y1:y2, x1:x2].max() > 0.1:
                    continue  # partly behind the lamp post's sign
                img = vframes[idx][y1:y2, x1:x2].copy()
                alpha = person_alpha(img, background[y1:y2, x1:x2])
                g = idx - 3 if idx >= 3 else idx + 3
                facing = _walk_direction(vframes[idx], vframes[g], box, alpha, -1 if g < idx else 1)
                hm = float(np.clip(CAMERA.height_at((x1 + x2) / 2, y2, y1), 1.5, 2.0))
                people.append(Sprite(img, alpha, "person", hm, facing, src))
            elif video == "vtest.avi" and o["class"] == "car" and idx <= VEHICLE_VTEST_LAST_FRAME:
                if tuple(box) in seen_parked or y2 - y1 < MIN_VEHICLE_HEIGHT:
                    continue  # parked for the whole clip: the same box, and the same van, in every frame
                seen_parked.add(tuple(box))
                img = vframes[idx][y1:y2, x1:x2].copy()
                if tuple(box) == _VAN_BOX:
                    alpha = _rasterize([("poly", _VAN)], feather=0.8)[y1:y2, x1:x2].copy()
                    vehicles.append(Sprite(img, alpha, "car", VAN_HEIGHT_M, +1, src))  # its front is on the right
                else:
                    vehicles.append(Sprite(img, _rounded_alpha(y2 - y1, x2 - x1, 3.0), "car", CAR_HEIGHT_M, 0, src))
            elif video == "bikes.mp4" and o["class"] == "car":
                if (video, idx, tuple(box)) not in VEHICLE_EXCLUDE and y2 - y1 >= MIN_VEHICLE_HEIGHT:
                    bikes_cars.append((idx, box, src))
    if bikes_cars:  # rear views of street cars (no background model there: an edge-faded box)
        bframes, _ = _read_frames(videos / "bikes.mp4", {idx for idx, _, _ in bikes_cars})
        for idx, (x1, y1, x2, y2), src in bikes_cars:
            img = bframes[idx][y1:y2, x1:x2].copy()
            fade = max(3.0, 0.1 * min(x2 - x1, y2 - y1))
            vehicles.append(Sprite(img, _rounded_alpha(y2 - y1, x2 - x1, fade), "car", CAR_HEIGHT_M, 0, src))

    # Placeable copies, cut from the median: the air-con stack, the lamp post, the parked van.
    def cut(mask: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        x1, y1, x2, y2 = box
        return background[y1:y2, x1:x2].copy(), mask[y1:y2, x1:x2].copy()

    ac_mask = _rasterize([("poly", _AC_STACK), ("poly", _AC_SIGN), ("line", _AC_POST, 2)], feather=0.8)
    img, a = cut(ac_mask, (582, 30, 630, 122))
    placeable = {
        "cabinet": _Placeable(img, a, (612 - 582, 119 - 30), CAMERA.height_at(612, 119, 34), 0.8),
    }
    img, a = cut(scene_masks["lamp_post"], (394, 12, 448, 396))
    placeable["lamp"] = _Placeable(img, a, (434 - 394, 393 - 12), CAMERA.height_at(434, 393, 17), 0.0, {
        # where its sign hangs: walkers routed behind the lamp pass behind the sign
        "sign_m": (CAMERA.height_at(434, 393, 245), CAMERA.height_at(434, 393, 202))})
    img, a = cut(_rasterize([("poly", _VAN)], feather=0.8), (650, 43, 726, 102))
    placeable["van"] = _Placeable(img, a, (688 - 650, 100 - 43), VAN_HEIGHT_M, 2.8)
    return SpriteBank(background, people, vehicles, scene_layers, placeable)


def sprite_bank(repo_root: Path = REPO_ROOT) -> SpriteBank:
    """The sprites, background and occluder templates cut from the sample videos (cached per process)."""
    return _bank_cached(str(Path(repo_root).resolve()))


# --------------------------------------------------------------------------- specs and results


@dataclass(frozen=True)
class SequenceSpec:
    """What to generate. Everything random follows from `seed`."""

    name: str
    seed: int
    n_frames: int = 300
    fps: float = 10.0  # the camera's nominal rate; rate changes drop frames below it
    size: tuple[int, int] = CAMPUS_SIZE  # (w, h) of the output frames
    n_people: int = 10  # distinct walkers over the whole sequence
    n_vehicles: int = 0
    crossings: int = 0  # forced pairwise crossings between walkers
    occluders: int = 0  # placed copies of background objects, kinds taken in OCCLUDER_KINDS order
    rate_changes: bool = False
    view: tuple[int, int, int, int] | None = None  # (x, y, w, h) of the campus frame shown; None: all of it
    occluder_passes: int = 3  # walkers routed behind each placed occluder
    crossing_depth: tuple[float, float] = (0.6, 1.6)  # m, how far behind the other the rear walker passes
    scene_occluders: bool = True  # the lamp post, tripod and boulder of the real scene occlude too
    noise: float = 2.0  # sensor noise sigma, grey levels
    encoding_crf: int | None = None  # frames go through H.264 at this CRF (x264: 23 default, 35 blocky); None: raw


@dataclass
class SyntheticSequence:
    spec: SequenceSpec
    frames: list[np.ndarray]  # H x W x 3 uint8 BGR
    gt: np.ndarray  # float64 rows: frame_index (0-based), track_id (>=1), x1, y1, x2, y2, visibility, class_id
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # seconds of each frame (rate changes)
    info: dict = field(default_factory=dict)  # crossings, occluders, rate segments, sprite sources


# --------------------------------------------------------------------------- world and motion


class _World:
    """Ground, obstacles and the output view of one sequence: where feet may go, where boxes land."""

    def __init__(self, spec_view: tuple[int, int, int, int] | None, size: tuple[int, int], fps: float,
                 cam: Camera = CAMERA):
        self.cam = cam
        self.view = spec_view or (0, 0, *CAMPUS_SIZE)
        self.size = size
        self.sx = size[0] / self.view[2]
        self.sy = size[1] / self.view[3]
        self.dt = 1.0 / fps
        g = np.array(_GROUND, float)
        X, D = cam.ground(g[:, 0], g[:, 1])
        self.ground = np.stack([X, D], 1).astype(np.float32).reshape(-1, 1, 2)
        self.discs: list[tuple[float, float, float]] = []  # (X, D, r): poles, boulders
        self.rects: list[tuple[float, float, float, float]] = []  # (X0, X1, D0, D1): parked vans

    def add_disc(self, u: float, v: float, r: float) -> None:
        X, D = self.cam.ground(u, v)
        self.discs.append((float(X), float(D), r))

    def walkable(self, X: float, D: float) -> bool:
        if cv2.pointPolygonTest(self.ground, (float(X), float(D)), False) < 0:
            return False
        for cx, cd, r in self.discs:
            if (X - cx) ** 2 + (D - cd) ** 2 < r * r:
                return False
        for x0, x1, d0, d1 in self.rects:
            if x0 <= X <= x1 and d0 <= D <= d1:
                return False
        return True

    def to_out(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (u - self.view[0]) * self.sx, (v - self.view[1]) * self.sy

    def boxes(self, pos: np.ndarray, height_m: float, aspect: float) -> np.ndarray:
        """[n, 4] float output-frame boxes (x1, y1, x2, y2) of objects standing at world positions."""
        u, v = self.cam.project(pos[:, 0], pos[:, 1])
        _, vt = self.cam.project(pos[:, 0], pos[:, 1], height_m)
        u, v = self.to_out(u, v)
        h = (v - (vt - self.view[1]) * self.sy)
        w = h * aspect * self.sx / self.sy
        return np.stack([u - w / 2, v - h, u + w / 2, v], 1)

    def visible_at(self, X: float, D: float, height_m: float, aspect: float) -> bool:
        """Does any of the box of an object standing at (X, D) fall inside the output frame? (scalar, fast)"""
        cam = self.cam
        c, s = math.cos(cam.pitch), math.sin(cam.pitch)
        zc = D * c + cam.height * s
        if zc <= 0:
            return False
        u = cam.cx + cam.f * X / zc
        v = cam.cy + cam.f * (cam.height * c - D * s) / zc
        zt = D * c + (cam.height - height_m) * s
        vt = cam.cy + cam.f * ((cam.height - height_m) * c - D * s) / zt
        y2 = (v - self.view[1]) * self.sy
        y1 = (vt - self.view[1]) * self.sy
        half = 0.5 * (y2 - y1) * aspect * self.sx / self.sy
        x = (u - self.view[0]) * self.sx
        return x + half > 0 and x - half < self.size[0] and y2 > 0 and y1 < self.size[1]

    def out_point(self, fx: float, fy: float) -> tuple[float, float] | None:
        """World ground point under the output-frame point at fractions (fx, fy), if walkable."""
        u = self.view[0] + fx * self.view[2]
        v = self.view[1] + fy * self.view[3]
        X, D = self.cam.ground(u, v)
        return (float(X), float(D)) if self.walkable(float(X), float(D)) else None


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


@dataclass
class _Walker:
    v_pref: float  # preferred speed, m/s
    height_m: float
    aspect: float


def _walk_half(rng: np.random.Generator, world: _World, start: tuple[float, float], heading: float,
               who: _Walker, n_max: int) -> np.ndarray:
    """Positions [n, 2] of one walker from `start`, until its box leaves the frame or n_max steps.

    A heading that relaxes to a slowly turning preferred heading, with noise; speed noise around the
    walker's own pace; now and then a stop of a few seconds; steering around whatever is not ground.
    Run it once forward and once with the heading reversed to get a path through a chosen point.
    """
    dt = world.dt
    x, d = start
    th = th_pref = heading
    v = who.v_pref * rng.uniform(0.85, 1.05)
    vn = 0.0
    stop_left = 0.0
    out = [(x, d)]
    look = 1.2  # m: how far ahead a walker avoids obstacles
    calm = int(3.0 / dt)  # no stop within 3 s of the start: the crossing or pass there happens walking
    for step in range(n_max - 1):
        if stop_left > 0:  # standing: a chat, a phone, waiting
            stop_left -= dt
            target = 0.0
        else:
            if rng.random() < 0.02 * dt and step > calm:
                stop_left = rng.uniform(1.5, 5.0)
            vn += -vn * dt / 2.0 + 0.10 * math.sqrt(dt) * rng.standard_normal()
            target = max(0.25, who.v_pref + vn)
        v += min(max(target - v, -1.5 * dt), 1.0 * dt)  # brake faster than accelerate
        if rng.random() < 0.05 * dt:  # a gentle change of mind about where to go
            th_pref += float(rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.8))
        turn = _wrap(th_pref - th) * 0.9 * dt + 0.22 * math.sqrt(dt) * rng.standard_normal()
        th += min(max(turn, -1.2 * dt), 1.2 * dt)
        if not world.walkable(x + look * math.cos(th), d + look * math.sin(th)):
            th = _steer(world, x, d, th, th_pref, look)
            th_pref = th
        x, d = x + v * dt * math.cos(th), d + v * dt * math.sin(th)
        out.append((x, d))
        if v > 0.05 and not world.visible_at(x, d, who.height_m, who.aspect):
            break
    return np.array(out, float)


def _steer(world: _World, x: float, d: float, th: float, pref: float, look: float) -> float:
    # The nearest heading that keeps the walker on open ground, trying the side of its preference first.
    side = 1.0 if _wrap(pref - th) >= 0 else -1.0
    for k in range(1, 13):
        for sgn in (side, -side):
            t = th + sgn * k * math.pi / 12
            if world.walkable(x + look * math.cos(t), d + look * math.sin(t)):
                return t
    return th + math.pi


def _path_through(rng: np.random.Generator, world: _World, point: tuple[float, float], heading: float,
                  who: _Walker, back_max: int, fwd_max: int) -> tuple[np.ndarray, int]:
    """A walker path that passes `point` with `heading`: (positions, index of `point` in them)."""
    fwd = _walk_half(rng, world, point, heading, who, max(fwd_max, 1))
    back = _walk_half(rng, world, point, heading + math.pi, who, max(back_max, 1))
    return np.concatenate([back[::-1], fwd[1:]]), len(back) - 1


def _chaikin(pts: np.ndarray, iters: int = 3) -> np.ndarray:
    # Rounds the route corners so vehicles turn smoothly.
    for _ in range(iters):
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        pts = np.concatenate([pts[:1], np.stack([q, r], 1).reshape(-1, 2), pts[-1:]])
    return pts


def _drive(rng: np.random.Generator, world: _World, route_px: list[tuple[int, int]], n_max: int
           ) -> np.ndarray:
    """Positions [n, 2] of a vehicle along a road route, keeping left, until the route ends."""
    p = np.array(route_px, float)
    X, D = world.cam.ground(p[:, 0], p[:, 1])
    pts = _chaikin(np.stack([X, D], 1))
    seg = np.diff(pts, axis=0)
    seglen = np.hypot(seg[:, 0], seg[:, 1])
    s_cum = np.concatenate([[0.0], np.cumsum(seglen)])
    normal = np.stack([-seg[:, 1], seg[:, 0]], 1) / np.maximum(seglen, 1e-9)[:, None]  # left of travel
    lane = rng.uniform(0.5, 1.1)  # m left of the road's centre line (UK campus)
    v_pref = rng.uniform(3.5, 7.0)
    v = v_pref
    slow_left = 0.0
    s = 0.0
    dt = world.dt
    out = []
    wobble = 0.0
    for _ in range(n_max):
        i = min(int(np.searchsorted(s_cum, s, side="right")) - 1, len(seg) - 1)
        t = (s - s_cum[i]) / max(seglen[i], 1e-9)
        base = pts[i] + t * seg[i]
        out.append(base + (lane + wobble) * normal[i])
        if s >= s_cum[-1]:
            break
        if slow_left > 0:  # yielding to someone
            slow_left -= dt
            target = 1.0
        else:
            if rng.random() < 0.02 * dt:
                slow_left = rng.uniform(1.0, 3.0)
            target = v_pref
        v += min(max(target - v + 0.1 * rng.standard_normal(), -3.0 * dt), 1.5 * dt)
        wobble += -wobble * dt + 0.05 * math.sqrt(dt) * rng.standard_normal()
        s += max(v, 0.0) * dt
    return np.array(out, float)


# --------------------------------------------------------------------------- sequence assembly


@dataclass
class _Track:
    tid: int
    cls: str
    sprite: Sprite
    tint: np.ndarray  # per-channel gain: 1 for originals, a colour shift for a re-used sprite
    mirror: bool  # a re-used sprite is also mirrored
    t0: int  # world step of pos[0]
    pos: np.ndarray  # [n, 2] world positions
    height_m: float
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # [n, 4] output boxes
    flips: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def _world_steps(rng: np.random.Generator, n_frames: int, rate_changes: bool) -> tuple[np.ndarray, list]:
    """World step of each output frame, and the (first frame, stride) segments."""
    if not rate_changes:
        return np.arange(n_frames), [(0, 1)]
    steps: list[int] = []
    segments = []
    w = 0
    pattern = (1, 2, 1, 4, 1, 2, 1, 4)
    k = 0
    while len(steps) < n_frames:
        stride = pattern[k % len(pattern)]
        length = int(rng.integers(40, 80)) if stride == 1 else int(rng.integers(25, 50))
        segments.append((len(steps), stride))
        for _ in range(length):
            steps.append(w)
            w += stride
        k += 1
    return np.array(steps[:n_frames]), [s for s in segments if s[0] < n_frames]


def _place_occluders(rng: np.random.Generator, spec: SequenceSpec, bank: SpriteBank, world: _World,
                     bg: np.ndarray) -> list[tuple[_Layer, str, float]]:
    """Paste copies of background objects onto the ground of `bg` (campus pixels, in place).

    Returns (layer, kind, far depth in m) per placed occluder; their footprints become obstacles.
    """
    cam = world.cam
    placed = []
    W, H = CAMPUS_SIZE
    vx, vy, vw, vh = world.view
    spots = {k: list(v) for k, v in _SPOTS.items()}
    for k in range(spec.occluders):
        kind = OCCLUDER_KINDS[k % len(OCCLUDER_KINDS)]
        pl = bank.placeable[kind]
        inside = [(u, v) for u, v in spots[kind]
                  if vx + 0.1 * vw <= u <= vx + 0.9 * vw and vy + 0.25 * vh <= v <= vy + vh]
        if not inside:
            continue
        u, v = inside[int(rng.integers(len(inside)))]
        spots[kind].remove((u, v))
        X, D = cam.ground(u, v)
        _, v_top = cam.project(X, D, pl.height_m)
        scale = (v - v_top) / (pl.base[1] - pl.top)
        img, alpha, bx = pl.image, pl.alpha, pl.base[0]
        if kind == "van" and rng.random() < 0.5:  # parked the other way round
            img, alpha, bx = img[:, ::-1], alpha[:, ::-1], img.shape[1] - 1 - bx
        sw, sh = max(2, int(round(img.shape[1] * scale))), max(2, int(round(img.shape[0] * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        simg = cv2.resize(np.ascontiguousarray(img), (sw, sh), interpolation=interp)
        salpha = cv2.resize(np.ascontiguousarray(alpha), (sw, sh), interpolation=interp)
        x0 = int(round(u - bx * scale))
        y0 = int(round(v - pl.base[1] * scale))
        dst, src = _clip_boxes(x0, y0, sw, sh, W, H)
        if dst is None:
            continue
        mask = np.zeros((H, W), np.float32)
        mask[dst] = salpha[src]
        if kind != "lamp":  # a soft contact shadow on the ground under it
            _shadow(bg, u, v - 0.01 * sh, 0.5 * sw, 0.06 * sh + 2, 0.4)
        a = mask[dst][..., None]
        bg[dst] = (bg[dst] * (1 - a) + simg[src] * a).round().astype(np.uint8)
        ppm = cam.f / (D * math.cos(cam.pitch) + cam.height * math.sin(cam.pitch))  # px per m across
        if kind == "lamp":
            world.add_disc(u, v, 0.4)
        else:
            half = 0.5 * salpha.any(axis=0).sum() / ppm
            world.rects.append((X - half, X + half, D - 0.3, D + pl.depth_m))
        placed.append((_Layer(f"{kind}_{k}", mask, float(v), float(u), 0.0), kind, float(D + pl.depth_m)))
    return placed


def _pass_point(rng: np.random.Generator, world: _World, bank: SpriteBank, lay: _Layer, kind: str,
                far_d: float, height_m: float) -> tuple[float, float]:
    # Where a walker routed behind a placed occluder is when right behind it.
    X, D = world.cam.ground(lay.base_u, lay.base_v)
    if kind != "lamp":
        return float(X + rng.normal(0, 0.2)), far_d + float(rng.uniform(0.3, 1.2))
    # Behind the lamp post, far enough back that the sign hides the chest.
    lo, hi = bank.placeable["lamp"].extra["sign_m"]
    _, s_lo = world.cam.project(X, D, lo)
    _, s_hi = world.cam.project(X, D, hi)
    target = 0.5 * (s_lo + s_hi) + float(rng.normal(0, 0.15)) * (s_lo - s_hi)
    best, best_err = D + 1.0, 1e9
    for d in np.arange(D + 0.6, D + 40.0, 0.2):
        _, chest = world.cam.project(X, d, 0.65 * height_m)
        if abs(chest - target) < best_err:
            best, best_err = float(d), abs(chest - target)
    return float(X + rng.normal(0, 0.1)), best


def _clip_boxes(x0: int, y0: int, w: int, h: int, W: int, H: int):
    # Frame and sprite slices of a w x h patch at (x0, y0), or (None, None) when it misses the frame.
    cx1, cy1, cx2, cy2 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if cx2 <= cx1 or cy2 <= cy1:
        return None, None
    return (slice(cy1, cy2), slice(cx1, cx2)), (slice(cy1 - y0, cy2 - y0), slice(cx1 - x0, cx2 - x0))


@functools.lru_cache(maxsize=1)
def _shadow_kernel() -> np.ndarray:
    yy, xx = np.mgrid[-1:1:32j, -1:1:64j]
    return np.clip(1.0 - (xx ** 2 + yy ** 2), 0, 1).astype(np.float32) ** 1.5


def _shadow(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, strength: float) -> None:
    # Darkens a soft ellipse in place: grounds the pasted objects.
    w, h = max(2, int(round(2 * rx))), max(2, int(round(2 * ry)))
    k = cv2.resize(_shadow_kernel(), (w, h), interpolation=cv2.INTER_LINEAR) * strength
    x0, y0 = int(round(cx - rx)), int(round(cy - ry))
    dst, src = _clip_boxes(x0, y0, w, h, img.shape[1], img.shape[0])
    if dst is None:
        return
    img[dst] = (img[dst] * (1.0 - k[src][..., None])).astype(img.dtype)


def _pick_anchor(rng: np.random.Generator, world: _World, fx: tuple[float, float], fy: tuple[float, float],
                 tries: int = 200) -> tuple[float, float]:
    for _ in range(tries):
        p = world.out_point(rng.uniform(*fx), rng.uniform(*fy))
        if p is not None:
            return p
    raise RuntimeError("no walkable ground in the view for an anchor")


def _new_walker(rng: np.random.Generator, sprite: Sprite) -> _Walker:
    # Observed in vtest: 1-5 px/frame at 10 fps, i.e. about 0.5-1.2 m/s; a few stroll slower.
    return _Walker(float(np.clip(rng.normal(0.9, 0.18), 0.45, 1.4)), sprite.height_m, sprite.aspect)


def _lateral_heading(rng: np.random.Generator, spread: float = 0.45) -> float:
    # Mostly across the view (clearest crossings); the noise lets some walk diagonally in depth.
    return float(rng.choice([0.0, math.pi]) + rng.normal(0.0, spread))


def _flip_states(track: _Track) -> np.ndarray:
    """Per step: draw the sprite mirrored? It turns to face the way it moves, with hysteresis.

    Sprites whose facing is unknown (rear views, people walking towards the camera) keep the
    identity's fixed mirroring instead.
    """
    n = len(track.boxes)
    facing = track.sprite.facing
    if facing == 0 or n < 2:
        return np.full(n, track.mirror)
    cx = (track.boxes[:, 0] + track.boxes[:, 2]) / 2
    vx = np.convolve(np.gradient(cx), np.ones(5) / 5, mode="same")  # px per step, smoothed
    moving = np.abs(vx) > 0.4
    flips = np.zeros(n, bool)
    state = bool(np.sign(vx[np.argmax(moving)]) != facing) if moving.any() else track.mirror
    for i in range(n):
        if moving[i]:
            state = bool(np.sign(vx[i]) != facing)
        flips[i] = state
    return flips


def _int_box(box: np.ndarray) -> tuple[int, int, int, int]:
    # The drawn sprite rectangle (x, y, w, h) for a float box: the ground truth is exactly this.
    x1, y1, x2, y2 = box
    wi = max(2, int(round(x2 - x1)))
    hi = max(2, int(round(y2 - y1)))
    return int(round((x1 + x2) / 2 - wi / 2)), int(round(y2)) - hi, wi, hi


def _on_screen(box: np.ndarray, W: int, H: int) -> bool:
    bx, by, wi, hi = _int_box(box)
    return bx + wi > 0 and bx < W and by + hi > 0 and by < H


def _casting(rng: np.random.Generator, pool: list[Sprite]) -> tuple[list[int], int]:
    """A random order of the crops, one per real person first; and how many come before the first repeat."""
    group = {src: g for g, members in enumerate(SAME_PERSON) for src in members}
    first, later, seen = [], [], set()
    for j in rng.permutation(len(pool)).tolist():
        key = group.get(pool[j].source, pool[j].source)
        (later if key in seen else first).append(j)
        seen.add(key)
    return first + later, len(first)


def make_sequence(spec: SequenceSpec, bank: SpriteBank | None = None) -> SyntheticSequence:
    """Render one sequence with its ground truth; the same spec gives byte-identical output."""
    bank = bank or sprite_bank()
    if (spec.n_people and not bank.people) or (spec.n_vehicles and not bank.vehicles):
        raise ValueError("the sprite bank has no crops of a class this spec asks for")
    rng = np.random.default_rng(spec.seed)
    world = _World(spec.view, spec.size, spec.fps, bank.camera)
    if abs(world.sx - world.sy) > 0.02 * world.sx:
        raise ValueError(f"size {spec.size} does not keep the aspect ratio of the view {world.view}")
    steps, segments = _world_steps(rng, spec.n_frames, spec.rate_changes)
    n_world = int(steps[-1]) + 1

    # Background: the empty campus with the placed occluders pasted in.
    bg_campus = bank.background.copy()
    layers: list[_Layer] = []
    if spec.scene_occluders:
        for lay in bank.scene_layers:
            layers.append(lay)
            world.add_disc(lay.base_u, lay.base_v, lay.radius_m)
    placed = _place_occluders(rng, spec, bank, world, bg_campus)
    layers += [lay for lay, _, _ in placed]

    # Identities: each real person once while the cast lasts; then other crops of the same people and
    # re-used crops, which get other colours (and every other round, a mirror image).
    tracks: list[_Track] = []
    people_order, people_fresh = _casting(rng, bank.people)
    vehicle_order, vehicle_fresh = _casting(rng, bank.vehicles)

    def identity(k: int, pool: list[Sprite], order: list[int], fresh: int, sd: float
                 ) -> tuple[Sprite, np.ndarray, bool]:
        sprite = pool[order[k % len(order)]]
        if k < fresh:
            return sprite, np.ones(3, np.float32), False
        tint = np.clip(1.0 + rng.normal(0, sd, 3), 1 - 2 * sd, 1 + 2 * sd).astype(np.float32)
        return sprite, tint, bool((k // len(order)) % 2 == 1)

    walkers = []
    for k in range(spec.n_people):
        sprite, tint, mirror = identity(k, bank.people, people_order, people_fresh, 0.12)
        walkers.append((sprite, tint, mirror, _new_walker(rng, sprite)))

    # Anchors: (walker index, point, heading, world step). Crossings first, then occluder passes.
    anchors: dict[int, tuple[tuple[float, float], float, int]] = {}
    crossings = []
    free = list(range(spec.n_people))
    span = (0.12, 0.88)
    for c in range(spec.crossings):
        if len(free) < 2:
            break
        a, b = free.pop(0), free.pop(0)
        t_c = int(n_world * (c + 0.5 + rng.uniform(-0.3, 0.3)) / max(spec.crossings, 1))
        t_c = int(np.clip(t_c, 0.15 * n_world, 0.85 * n_world)) if n_world > 20 else n_world // 2
        for _ in range(200):
            pa = _pick_anchor(rng, world, (0.2, 0.8), (0.45, 0.9))
            gap = float(rng.uniform(*spec.crossing_depth))  # b walks this far behind a where they meet
            pb = (pa[0] + float(rng.normal(0, 0.15)), pa[1] + gap)
            if world.walkable(*pb):
                break
        th_a = _lateral_heading(rng, 0.35)
        th_b = th_a + math.pi + float(rng.normal(0, 0.35))
        anchors[a] = (pa, th_a, t_c)
        anchors[b] = (pb, th_b, t_c + int(rng.integers(-2, 3)))
        crossings.append((a, b, t_c))
    passes = []
    for lay, kind, far_d in placed:
        for p in range(spec.occluder_passes):
            if not free:
                break
            i = free[0]
            pt = _pass_point(rng, world, bank, lay, kind, far_d, walkers[i][3].height_m)
            if not world.walkable(*pt):
                continue
            free.pop(0)
            t = int(n_world * (p + 0.5 + rng.uniform(-0.3, 0.3)) / spec.occluder_passes)
            anchors[i] = (pt, _lateral_heading(rng, 0.25), t)
            passes.append((i, lay.name, t))
    for i in free:  # everyone else: a random place and moment
        t = int(rng.integers(0, n_world))
        anchors[i] = (_pick_anchor(rng, world, span, (0.2, 0.95)), float(rng.uniform(-math.pi, math.pi))
                      if rng.random() < 0.3 else _lateral_heading(rng), t)

    for i, (sprite, tint, mirror, who) in enumerate(walkers):
        pt, th, t = anchors[i]
        pos, at = _path_through(rng, world, pt, th, who, back_max=t + 1, fwd_max=n_world - t)
        tracks.append(_Track(0, "person", sprite, tint, mirror, t - at, pos, who.height_m))

    for k in range(spec.n_vehicles):
        sprite, tint, mirror = identity(k, bank.vehicles, vehicle_order, vehicle_fresh, 0.06)
        route = _ROUTES[int(rng.integers(len(_ROUTES)))]
        if rng.random() < 0.35:  # most drive away from the camera: the sprites are rear views
            route = route[::-1]
        t0 = int(rng.integers(-40, max(n_world - 20, -39)))
        pos = _drive(rng, world, route, n_world - t0 + 400)
        tracks.append(_Track(0, "car", sprite, tint, mirror, t0, pos, sprite.height_m))

    # Track ids in order of first appearance, as a detector-side tracker would number them.
    for tr in tracks:
        tr.boxes = world.boxes(tr.pos, tr.height_m, tr.sprite.aspect)
        tr.flips = _flip_states(tr)
    tracks = [tr for tr in tracks if _first_visible(tr, world, steps) is not None]
    tracks.sort(key=lambda tr: (_first_visible(tr, world, steps), tr.t0))
    for i, tr in enumerate(tracks):
        tr.tid = i + 1

    frames, gt = _render(spec, bank, world, bg_campus, layers, tracks, steps, rng)
    if spec.encoding_crf is not None:
        frames = through_h264(frames, spec.fps, spec.encoding_crf)
    times = steps / spec.fps
    info = {
        "segments": [(int(a), int(b)) for a, b in segments],
        "occluders": [lay.name for lay in layers],
        "forced_crossings": len(crossings),
        "occluder_passes": len(passes),
        "sources": {tr.tid: tr.sprite.source + (" (re-used, tinted)" if (tr.tint != 1).any() else "")
                    for tr in tracks},
    }
    return SyntheticSequence(spec, frames, gt, times, info)


def through_h264(frames: list[np.ndarray], fps: float, crf: int) -> list[np.ndarray]:
    """The frames as a viewer of an H.264 stream at this CRF sees them: blocking, ringing, smeared motion."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=round(fps))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        out.mux(stream.encode())
    buf.seek(0)
    with av.open(buf) as inp:
        decoded = [f.to_ndarray(format="bgr24") for f in inp.decode(video=0)]
    if len(decoded) != len(frames):
        raise RuntimeError(f"H.264 round trip gave {len(decoded)} frames for {len(frames)}")
    return decoded


def _first_visible(tr: _Track, world: _World, steps: np.ndarray) -> int | None:
    lo, hi = tr.t0, tr.t0 + len(tr.pos)
    idx = np.flatnonzero((steps >= lo) & (steps < hi))
    for i in idx:
        if _on_screen(tr.boxes[steps[i] - lo], *world.size):
            return int(i)
    return None


def _render(spec: SequenceSpec, bank: SpriteBank, world: _World, bg_campus: np.ndarray,
            layers: list[_Layer], tracks: list[_Track], steps: np.ndarray, rng: np.random.Generator
            ) -> tuple[list[np.ndarray], np.ndarray]:
    W, H = spec.size
    vx, vy, vw, vh = world.view

    def view_of(img: np.ndarray, interp: int) -> np.ndarray:
        crop = img[vy:vy + vh, vx:vx + vw]
        if (vw, vh) == (W, H):
            return np.ascontiguousarray(crop)
        return cv2.resize(crop, (W, H), interpolation=interp)

    bg = view_of(bg_campus, cv2.INTER_AREA)  # uint8: per-frame work stays on small float patches
    # Occluder layers in output pixels: their own pixels of the background, over their mask.
    occ = []
    for lay in layers:
        m = view_of(lay.mask, cv2.INTER_AREA)
        ys, xs = np.nonzero(m > 0.01)
        if len(ys) == 0:
            continue
        sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        base = (lay.base_v - vy) * world.sy
        occ.append((base, sl, m[sl].copy(), bg[sl].astype(np.float32)))

    # A few fields of sensor noise, picked and shifted by rows per frame: cheaper than fresh noise.
    pad = 24
    noise_bank = [np.clip(128.5 + rng.standard_normal((H + pad, W, 3), np.float32) * np.float32(spec.noise), 0, 255)
                  .astype(np.uint8) for _ in range(6)]  # offset by 128
    gain = 1.0
    cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    frames: list[np.ndarray] = []
    rows: list[tuple] = []
    cov = np.zeros((H, W), np.float32)

    for fi, w_step in enumerate(steps):
        gain = float(np.clip(gain + rng.normal(0, 0.003), 0.97, 1.03))  # slow exposure drift
        items = []  # (depth, order, kind, payload)
        for tr in tracks:
            k = int(w_step) - tr.t0
            if not 0 <= k < len(tr.boxes):
                continue
            if not _on_screen(tr.boxes[k], W, H):
                continue
            bx, by, wi, hi = _int_box(tr.boxes[k])
            items.append((tr.boxes[k][3], 1, tr.tid, ("obj", tr, k, bx, by, wi, hi)))
        for j, (base, sl, m, pix) in enumerate(occ):
            items.append((base, 0, -j, ("occ", sl, m, pix)))
        items.sort(key=lambda it: (it[0], it[1], it[2]))

        # Sprites for this frame (resized, cached by size), then visibility front to back.
        prepared = []
        for depth, _, _, p in items:
            if p[0] == "obj":
                _, tr, k, bx, by, wi, hi = p
                flip = bool(tr.flips[k])
                key = (id(tr.sprite), flip, wi, hi)
                if key not in cache:
                    img, a = tr.sprite.image, tr.sprite.alpha
                    if flip:
                        img, a = img[:, ::-1], a[:, ::-1]
                    interp = cv2.INTER_AREA if hi < img.shape[0] else cv2.INTER_LINEAR
                    rimg = cv2.resize(np.ascontiguousarray(img), (wi, hi), interpolation=interp).astype(np.float32)
                    ra = cv2.resize(np.ascontiguousarray(a), (wi, hi), interpolation=interp)
                    cache[key] = (rimg, ra)
                rimg, ra = cache[key]
                dst, src = _clip_boxes(bx, by, wi, hi, W, H)
                prepared.append(("obj", tr, bx, by, wi, hi, dst, src, rimg, ra))
            else:
                _, sl, m, pix = p
                prepared.append(("occ", sl, m, pix))
        cov[:] = 0.0
        vis = {}
        for it in reversed(prepared):
            if it[0] == "occ":
                _, sl, m, _ = it
                cov[sl] += m * (1.0 - cov[sl])
            else:
                _, tr, bx, by, wi, hi, dst, src, rimg, ra = it
                a = ra[src]
                total = float(ra.sum())
                seen = float((a * (1.0 - cov[dst])).sum())
                vis[tr.tid] = seen / total if total > 0 else 0.0
                cov[dst] += a * (1.0 - cov[dst])

        canvas = bg.copy()
        for it in prepared:
            if it[0] == "occ":
                _, sl, m, pix = it
                mm = m[..., None]
                canvas[sl] = (canvas[sl] * (1.0 - mm) + pix * mm + 0.5).astype(np.uint8)
            else:
                _, tr, bx, by, wi, hi, dst, src, rimg, ra = it
                if tr.cls == "car":
                    _shadow(canvas, bx + wi / 2, by + hi - 0.03 * hi, 0.52 * wi, 0.08 * hi + 1, 0.35)
                else:
                    _shadow(canvas, bx + wi / 2, by + hi - 0.015 * hi, 0.42 * wi, 0.05 * hi + 1, 0.25)
                jitter = float(1.0 + rng.normal(0, 0.012))  # per-frame brightness flicker of the object
                a = ra[src][..., None]
                mix = canvas[dst] * (1.0 - a) + rimg[src] * (tr.tint * jitter) * a + 0.5
                canvas[dst] = np.clip(mix, 0, 255).astype(np.uint8)
                x1c, y1c = max(bx, 0), max(by, 0)
                x2c, y2c = min(bx + wi, W), min(by + hi, H)
                cid = category_id(tr.cls)
                rows.append((fi, tr.tid, x1c, y1c, x2c, y2c, round(vis[tr.tid], 4), cid))
        nb = noise_bank[int(rng.integers(len(noise_bank)))]
        oy = int(rng.integers(pad))
        # Exposure drift and sensor noise in one saturating pass: canvas * gain + noise - 128.
        frames.append(cv2.addWeighted(canvas, gain, nb[oy:oy + H], 1.0, -128.0))

    gt = np.array(rows, np.float64).reshape(-1, 8)
    if len(gt):
        gt = gt[np.lexsort((gt[:, 1], gt[:, 0]))]
    return frames, gt


# --------------------------------------------------------------------------- trajectories only


def trajectories(seed: int, n: int, size: tuple[int, int] = CAMPUS_SIZE, fps: float = 10.0,
                 max_len: int = 300, min_len: int = 20, vehicle_frac: float = 0.15, gap_prob: float = 0.6,
                 rate_change_prob: float = 0.25, bank: SpriteBank | None = None) -> list[np.ndarray]:
    """Box trajectories with the sequences' motion model, no pixels: for training a motion model.

    Each is [T, 4] xyxy in a `size` frame showing the whole campus, clipped to the frame like the
    ground truth, one row per frame from entry to exit (or max_len). Rows where the object is
    unobserved (an occlusion gap of 3-15 frames) are NaN. Some trajectories run through a camera-rate
    drop (every 2nd or 4th frame kept), so their per-frame motion doubles or quadruples there.
    Without a bank, people and cars get plausible aspect ratios and heights instead of sprites'.
    """
    rng = np.random.default_rng(seed)
    world = _World(None, size, fps)
    for u, v, r in _SCENE_BASES.values():
        world.add_disc(u, v, r)
    out: list[np.ndarray] = []
    while len(out) < n:
        vehicle = rng.random() < vehicle_frac
        if vehicle:
            if bank is not None and bank.vehicles:
                s = bank.vehicles[int(rng.integers(len(bank.vehicles)))]
                hm, aspect = s.height_m, s.aspect
            else:
                hm, aspect = float(rng.uniform(1.4, 2.5)), float(rng.uniform(1.1, 1.9))
            route = _ROUTES[int(rng.integers(len(_ROUTES)))]
            if rng.random() < 0.5:
                route = route[::-1]
            pos = _drive(rng, world, route, 4000)
        else:
            if bank is not None and bank.people:
                s = bank.people[int(rng.integers(len(bank.people)))]
                hm, aspect = s.height_m, s.aspect
            else:
                hm, aspect = float(np.clip(rng.normal(1.74, 0.08), 1.5, 2.0)), float(rng.uniform(0.28, 0.5))
            who = _Walker(float(np.clip(rng.normal(0.9, 0.18), 0.45, 1.4)), hm, aspect)
            pt = _pick_anchor(rng, world, (0.1, 0.9), (0.2, 0.95))
            th = float(rng.uniform(-math.pi, math.pi)) if rng.random() < 0.3 else _lateral_heading(rng)
            pos, _ = _path_through(rng, world, pt, th, who, back_max=max_len, fwd_max=max_len)
        boxes = world.boxes(pos, hm, aspect)
        inside = (boxes[:, 2] > 0) & (boxes[:, 0] < size[0]) & (boxes[:, 3] > 0) & (boxes[:, 1] < size[1])
        idx = np.flatnonzero(inside)
        if len(idx) == 0:
            continue
        boxes = boxes[idx[0]:idx[-1] + 1]
        if rng.random() < rate_change_prob:  # a stretch where the camera keeps every 2nd / 4th frame
            stride = int(rng.choice([2, 4]))
            a = int(rng.integers(0, max(1, len(boxes) - 20)))
            b = a + int(rng.integers(20, 80)) * stride
            boxes = np.concatenate([boxes[:a], boxes[a:b:stride], boxes[b:]])
        boxes = boxes[:max_len]
        boxes = np.stack([np.clip(boxes[:, 0], 0, size[0]), np.clip(boxes[:, 1], 0, size[1]),
                          np.clip(boxes[:, 2], 0, size[0]), np.clip(boxes[:, 3], 0, size[1])], 1)
        if len(boxes) < min_len:
            continue
        if rng.random() < gap_prob:  # occlusion gaps, apart from each other and from the ends
            for _ in range(int(rng.integers(1, 3))):
                g = int(rng.integers(3, 16))
                if len(boxes) > g + 10:
                    a = int(rng.integers(4, len(boxes) - g - 4))
                    if not np.isnan(boxes[a - 3:a + g + 3, 0]).any():
                        boxes[a:a + g] = np.nan
        out.append(boxes)
    return out


# --------------------------------------------------------------------------- evaluation set


def evaluation_specs() -> list[SequenceSpec]:
    """The standard evaluation set."""
    return [
        SequenceSpec("campus_crossings", seed=1101, n_frames=360, n_people=12, crossings=6),
        SequenceSpec("campus_occluders", seed=2203, n_frames=360, n_people=12, crossings=2, occluders=2,
                     occluder_passes=4),
        SequenceSpec("campus_crowd", seed=3307, n_frames=300, n_people=24, crossings=8, occluders=1,
                     occluder_passes=2),
        SequenceSpec("campus_rate_change", seed=4409, n_frames=360, n_people=14, crossings=4, occluders=1,
                     rate_changes=True),
        SequenceSpec("street_vehicles", seed=5501, n_frames=320, n_people=8, n_vehicles=8, crossings=2),
        SequenceSpec("campus_h264", seed=6607, n_frames=300, n_people=14, crossings=4, occluders=1, encoding_crf=32),
        SequenceSpec("campus_25fps", seed=7703, n_frames=450, fps=25.0, n_people=10, crossings=3),
    ]


def tuning_specs(tuning_round: int = 1) -> list[SequenceSpec]:
    """The evaluation set's recipes with other seeds: for choosing the tracker's settings without
    looking at the sequences it is evaluated on. Round 2 is a second such set, with its own seeds: a change
    chosen on round 1 can be checked on sequences it was not chosen on, still without the evaluation set."""
    if tuning_round < 1:
        raise ValueError(f"tuning round {tuning_round}: rounds count from 1")
    suffix = "_tune" if tuning_round == 1 else f"_tune{tuning_round}"
    return [replace(s, name=s.name + suffix, seed=s.seed + 100_000 * tuning_round) for s in evaluation_specs()]


def training_specs(k: int) -> list[SequenceSpec]:
    """The evaluation set's recipes with seeds of their own again, for training models (set k >= 0): meant for a
    sprite bank of people from the training part of the footage, never the evaluation sprites."""
    return [replace(s, name=f"{s.name}_train{k}", seed=s.seed + 900_000 + 1000 * k) for s in evaluation_specs()]


@dataclass(frozen=True)
class BoxPeople:
    owner: int  # ground-truth id of the person the box overlaps most
    iou: float  # and by how much
    other: int | None  # the box holds a second person too: their id


def box_people(gt_frame: np.ndarray, box: np.ndarray) -> BoxPeople | None:
    """Who a (detector's) box is on, from one frame's ground-truth rows (id in column 1, xyxy in 2:6): the person
    it overlaps most (IoU >= 0.3; None: nobody) and, if it holds two people (at least 20% of each inside: people
    passing each other, boxed apart or as one), the other one with most of them inside."""
    if not len(gt_frame):
        return None
    iou = iou_matrix(box[None], gt_frame[:, 2:6])[0]
    owner = int(iou.argmax())
    if iou[owner] < 0.3:
        return None
    inside = box_ioa(gt_frame[:, 2:6], box[None])[:, 0]
    mine = float(inside[owner])
    inside[owner] = 0.0
    other = int(inside.argmax())
    two = mine > 0.2 and inside[other] > 0.2
    return BoxPeople(int(gt_frame[owner, 1]), float(iou[owner]), int(gt_frame[other, 1]) if two else None)


def crossing_spec() -> SequenceSpec:
    """Tiny and fast, for unit tests: two people walk towards each other; the nearer hides the other."""
    return SequenceSpec("crossing_pair", seed=13, n_frames=60, size=(384, 288), n_people=2, crossings=1,
                        view=(0, 230, 384, 288), scene_occluders=False)


# --------------------------------------------------------------------------- summaries and output


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    # (start, length) of the runs of True.
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return list(zip(starts.tolist(), (ends - starts).tolist()))


def summarize(seq: SyntheticSequence) -> dict:
    """Counts for the printout: objects, crossings seen in the boxes, occlusion gaps."""
    gt = seq.gt
    ids = np.unique(gt[:, 1]).astype(int)
    person, car = category_id("person"), category_id("car")
    gaps = []
    for t in ids:
        r = gt[gt[:, 1] == t]
        low = r[:, 6] < UNOBSERVED_VIS
        for s, ln in _runs(low):
            if s > 0 and s + ln < len(r):  # inside the track, not at its ends (entering / leaving)
                gaps.append(ln)
    # A crossing: two boxes overlap (IoU > 0.3) and one of the two is partly hidden then.
    pairs = set()
    for f in np.unique(gt[:, 0]):
        r = gt[gt[:, 0] == f]
        for i in range(len(r)):
            for j in range(i + 1, len(r)):
                a, b = r[i], r[j]
                iw = min(a[4], b[4]) - max(a[2], b[2])
                ih = min(a[5], b[5]) - max(a[3], b[3])
                if iw <= 0 or ih <= 0:
                    continue
                inter = iw * ih
                union = (a[4] - a[2]) * (a[5] - a[3]) + (b[4] - b[2]) * (b[5] - b[3]) - inter
                if inter / union > 0.3 and min(a[6], b[6]) < 0.9:
                    pairs.add((int(min(a[1], b[1])), int(max(a[1], b[1]))))
    cls_of = {int(t): int(gt[gt[:, 1] == t][0, 7]) for t in ids}
    return {
        "name": seq.spec.name,
        "frames": len(seq.frames),
        "people": sum(1 for c in cls_of.values() if c == person),
        "vehicles": sum(1 for c in cls_of.values() if c == car),
        "forced_crossings": seq.info.get("forced_crossings", 0),
        "crossings_seen": len(pairs),
        "occlusion_gaps": len(gaps),
        "gap_frames": (min(gaps), int(np.median(gaps)), max(gaps)) if gaps else None,  # min, median, max
        "occluders": seq.info.get("occluders", []),
        "rate_segments": seq.info.get("segments", []),
    }


def write_mot(seq: SyntheticSequence, out_dir: Path) -> None:
    """out_dir/NAME/img.avi (MJPG), gt/gt.txt (MOT: frame 1-based, id, x, y, w, h, 1, class, visibility),
    seqinfo.ini and timestamps.txt (seconds per frame: rate changes make them uneven)."""
    root = Path(out_dir) / seq.spec.name
    (root / "gt").mkdir(parents=True, exist_ok=True)
    W, H = seq.spec.size
    vw = cv2.VideoWriter(str(root / "img.avi"), cv2.VideoWriter_fourcc(*"MJPG"), float(seq.spec.fps), (W, H))
    if not vw.isOpened():
        raise RuntimeError(f"cannot write {root / 'img.avi'}")
    for f in seq.frames:
        vw.write(f)
    vw.release()
    with open(root / "gt" / "gt.txt", "w") as fh:
        for fr, tid, x1, y1, x2, y2, vis, cid in seq.gt:
            fh.write(f"{int(fr) + 1},{int(tid)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,{int(cid)},{vis:.4f}\n")
    (root / "seqinfo.ini").write_text(
        f"[Sequence]\nname={seq.spec.name}\nimDir=img.avi\nframeRate={seq.spec.fps:g}\n"
        f"seqLength={len(seq.frames)}\nimWidth={W}\nimHeight={H}\nimExt=.avi\n")
    (root / "timestamps.txt").write_text("".join(f"{t:.3f}\n" for t in seq.times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the semi-synthetic tracking evaluation set (MOT layout).")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--only", help="one sequence by name (crossing_pair: the unit-test one)")
    args = ap.parse_args(argv)
    specs = evaluation_specs() + [crossing_spec()]
    if args.only:
        specs = [s for s in specs if s.name == args.only]
        if not specs:
            ap.error(f"unknown sequence {args.only!r}; known: "
                     + ", ".join(s.name for s in evaluation_specs() + [crossing_spec()]))
    else:
        specs = evaluation_specs()
    t0 = time.perf_counter()
    bank = sprite_bank()
    print(f"sprite bank: {len(bank.people)} people, {len(bank.vehicles)} vehicles "
          f"({time.perf_counter() - t0:.1f}s)")
    print("cross: forced crossings; seen: pairs with IoU > 0.3 and one partly hidden; gaps: occlusions inside a "
          f"track with visibility < {UNOBSERVED_VIS} (length min/median/max, frames); sec: generation time")
    print(f"{'sequence':20s} {'frames':>6s} {'people':>6s} {'cars':>4s} {'cross':>5s} {'seen':>4s} "
          f"{'gaps':>4s} {'gap len':>8s} {'sec':>5s}  occluders / rate segments (first frame:stride)")
    for spec in specs:
        t = time.perf_counter()
        seq = make_sequence(spec, bank)
        dt = time.perf_counter() - t
        write_mot(seq, args.out)
        s = summarize(seq)
        gl = "/".join(str(g) for g in s["gap_frames"]) if s["gap_frames"] else "-"
        seg = " ".join(f"{a}:x{b}" for a, b in s["rate_segments"]) if spec.rate_changes else ""
        print(f"{s['name']:20s} {s['frames']:6d} {s['people']:6d} {s['vehicles']:4d} {s['forced_crossings']:5d} "
              f"{s['crossings_seen']:4d} {s['occlusion_gaps']:4d} {gl:>8s} {dt:5.1f}  "
              f"{','.join(s['occluders']) or '-'} {seg}")
    print(f"total {time.perf_counter() - t0:.1f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
