"""Street-like scenes with traffic signs of known class and box: rendered signs (tools/sign_render.py) composited
into real frames of the sample videos, for training and evaluating the sign classifier and the finder.

A scene is a background frame (rescaled and cropped a little), 0-4 signs on poles or plates, 0-5 look-alike
distractors (red and blue disks and rings, posters with text, tail-light blobs, cones), then the camera: each
sign gets a perspective turn (yaw up to 55 degrees, pitch and roll), a light level and colour cast, blur
or motion blur matched to its size, and some are partly covered by a piece of background; the whole frame
gets sensor noise and JPEG compression. The ground truth is the sign's full box and its visible fraction.

Backgrounds come from fixed frame ranges of the sample clips: `TRAIN` ranges for training and `EVAL` ranges
(other frames, and two clips never used in training) for the synthetic evaluation, so the held-out figure is not
measured on the backgrounds the classifier has seen. The real signs of the clips are painted out of every
background first (vtest.avi's warning sign; bikes.mp4's crossing sign lies in frames no range uses): they are the
real-sign evaluation and must not be learnt as background.

Everything is drawn from one seeded numpy Generator: a seed gives the same scenes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stages.infer.signs.classes import SIGN_CLASSES
from tools.sign_render import render_sign

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIPS = REPO_ROOT / "sample_videos"

# (clip, first frame, last frame (exclusive), step)
TRAIN: tuple[tuple[str, int, int, int], ...] = (("vtest.avi", 0, 400, 4), ("bikes.mp4", 0, 100, 2), ("bikes.mp4", 135, 200, 2))
EVAL: tuple[tuple[str, int, int, int], ...] = (
    ("vtest.avi", 400, 795, 8), ("bikes.mp4", 200, 250, 2), ("Megamind.avi", 0, 270, 6), ("carphone_pristine.mp4", 0, 120, 6),
)  # fmt: skip
# The real signs, painted out of backgrounds: vtest.avi's warning sign on its plate (x1, y1, x2, y2), boxed by eye.
PAINT_OUT: dict[str, tuple[int, int, int, int]] = {"vtest.avi": (582, 38, 618, 72)}
MIN_SIGN, MAX_SIGN = 12, 120  # sign widths drawn, pixels (log-uniform)


@dataclass
class Scene:
    image: np.ndarray  # BGR uint8
    boxes: np.ndarray  # [N, 4] float32 full sign boxes (x1, y1, x2, y2)
    labels: np.ndarray  # [N] int64 index into SIGN_CLASSES
    visible: np.ndarray  # [N] float32 fraction of the sign not covered


@functools.lru_cache(maxsize=4)
def backgrounds(ranges: tuple[tuple[str, int, int, int], ...]) -> tuple[np.ndarray, ...]:
    """The frames of `ranges`, BGR, with the real signs painted out."""
    out = []
    for clip, first, last, step in ranges:
        cap = cv2.VideoCapture(str(CLIPS / clip))
        if not cap.isOpened():
            raise FileNotFoundError(f"cannot open {CLIPS / clip}")
        want = set(range(first, last, step))
        i = 0
        while i < last:
            ok = cap.grab()
            if not ok:
                break
            if i in want:
                _, frame = cap.retrieve()
                if clip in PAINT_OUT:
                    x1, y1, x2, y2 = PAINT_OUT[clip]
                    mask = np.zeros(frame.shape[:2], np.uint8)
                    mask[y1:y2, x1:x2] = 255
                    frame = cv2.inpaint(frame, mask, 5, cv2.INPAINT_TELEA)
                out.append(frame)
            i += 1
        cap.release()
    return tuple(out)


def _perspective(layers: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The images `layers` (one sign: its pixels, its own silhouette) turned in 3-D (yaw, pitch, roll) and seen by a
    pinhole camera, each on a canvas just big enough."""
    h, w = layers[0].shape[:2]
    yaw, pitch, roll = (math.radians(v) for v in (rng.uniform(-55, 55) * (rng.random() < 0.7), rng.uniform(-15, 15), rng.normal(0, 5)))
    corners = np.array([[-w / 2, -h / 2, 0], [w / 2, -h / 2, 0], [w / 2, h / 2, 0], [-w / 2, h / 2, 0]], float)
    cy, sy, cp, sp, cr, sr = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    rot = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    p = corners @ rot.T
    dist = 4.0 * max(w, h)  # a mild perspective: the camera is a few sign-widths away
    proj = p[:, :2] * dist / (dist + p[:, 2:3])
    proj -= proj.min(0)
    size = np.ceil(proj.max(0)).astype(int) + 1
    m = cv2.getPerspectiveTransform(np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32), proj.astype(np.float32))
    return [cv2.warpPerspective(x, m, (int(size[0]), int(size[1])), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            for x in layers]  # fmt: skip


def _with_mount(sign: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The sign, sometimes on a back plate (a white or grey board it is fixed to, as vtest.avi's is), and the sign's
    own silhouette on that canvas: the ground-truth box is the sign's, not the plate's."""
    h, w = sign.shape[:2]
    if rng.random() > 0.3:
        return sign, sign[:, :, 3].copy()
    m = int(max(2, rng.uniform(0.08, 0.3) * w))
    below = int(rng.uniform(0, 0.8) * h) if rng.random() < 0.5 else 0
    plate = np.zeros((h + 2 * m + below, w + 2 * m, 4), np.uint8)
    grey = int(rng.uniform(150, 250))
    plate[:, :, :3] = np.clip(np.array([grey, grey, grey]) + rng.normal(0, 8, 3), 0, 255).astype(np.uint8)
    plate[:, :, 3] = 255
    a = sign[:, :, 3:].astype(np.float32) / 255
    region = plate[m : m + h, m : m + w, :3].astype(np.float32)
    plate[m : m + h, m : m + w, :3] = (sign[:, :, :3] * a + region * (1 - a)).astype(np.uint8)
    own = np.zeros(plate.shape[:2], np.uint8)
    own[m : m + h, m : m + w] = sign[:, :, 3]
    return plate, own


def _light(patch: np.ndarray, rng: np.random.Generator, cast: np.ndarray) -> np.ndarray:
    """The scene's light on a sign: level (shade to sun), the background's colour cast, gamma."""
    x = patch.astype(np.float32) / 255
    x = x * rng.uniform(0.35, 1.25) * (0.8 + 0.2 * cast)
    x = np.clip(x, 0, 1) ** rng.uniform(0.7, 1.4)
    return np.clip(x * 255, 0, 255).astype(np.uint8)


def _blur(patch: np.ndarray, rng: np.random.Generator, size: float) -> np.ndarray:
    r = rng.random()
    if r < 0.35:
        return patch
    if r < 0.75:
        sigma = rng.uniform(0.3, 0.9) * max(1.0, size / 40)
        return cv2.GaussianBlur(patch, (0, 0), sigma)
    length = int(rng.integers(3, 4 + max(1, int(size / 15))))  # motion blur along a random direction
    k = np.zeros((length, length), np.float32)
    a = rng.uniform(0, math.pi)
    c = (length - 1) / 2
    cv2.line(k, (round(c - c * math.cos(a)), round(c - c * math.sin(a))), (round(c + c * math.cos(a)), round(c + c * math.sin(a))), 1.0, 1)
    return cv2.filter2D(patch, -1, k / k.sum())


def _paste(img: np.ndarray, rgba: np.ndarray, x: int, y: int) -> np.ndarray | None:
    """Alpha-blends rgba with its top-left at (x, y); returns the alpha placed in frame coordinates (or None if off-frame)."""
    H, W = img.shape[:2]
    h, w = rgba.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return None
    part = rgba[y0 - y : y1 - y, x0 - x : x1 - x]
    a = part[:, :, 3:].astype(np.float32) / 255
    region = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = (part[:, :, :3] * a + region * (1 - a) + 0.5).astype(np.uint8)
    full = np.zeros((H, W), np.float32)
    full[y0:y1, x0:x1] = a[:, :, 0]
    return full


def _distractor(rng: np.random.Generator, size: int) -> np.ndarray:
    """Something round, red or blue, or a poster with text: what the colour step proposes and the CNN must reject."""
    kind = rng.integers(6)
    s = max(8, size)
    img = np.zeros((s, s, 4), np.uint8)
    red = (int(rng.uniform(0, 80)), int(rng.uniform(0, 80)), int(rng.uniform(150, 255)))
    blue = (int(rng.uniform(120, 255)), int(rng.uniform(40, 120)), int(rng.uniform(0, 60)))
    colour = red if rng.random() < 0.6 else blue
    c, r = (s // 2, s // 2), s // 2 - 1
    if kind == 0:  # a disk (a ball, a balloon, a round logo)
        cv2.circle(img, c, r, (*colour, 255), -1, cv2.LINE_AA)
    elif kind == 1:  # a ring around something that is not a sign's content
        cv2.circle(img, c, r, (*colour, 255), -1, cv2.LINE_AA)
        inner = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(img, c, int(r * rng.uniform(0.5, 0.8)), (*inner, 255), -1, cv2.LINE_AA)
    elif kind == 2:  # a poster: a coloured board with text
        h = int(s * rng.uniform(0.5, 1.4))
        img = np.zeros((h, s, 4), np.uint8)
        img[:, :, :3] = colour
        img[:, :, 3] = 255
        text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(2, 7))))
        cv2.putText(img, text, (2, h // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, s / 80, tuple(int(v) for v in rng.integers(0, 255, 3)) + (255,), max(1, s // 40))
    elif kind == 3:  # tail lights: two red blobs on dark
        img = np.zeros((s // 3 + 2, s, 4), np.uint8)
        img[:, :, 3] = 255
        img[:, :, :3] = 30
        cv2.ellipse(img, (s // 5, s // 6), (s // 8, s // 10 + 1), 0, 0, 360, (*red, 255), -1)
        cv2.ellipse(img, (4 * s // 5, s // 6), (s // 8, s // 10 + 1), 0, 0, 360, (*red, 255), -1)
    elif kind == 4:  # a cone / a red triangle that is not a warning sign (no white inside)
        pts = np.array([[s // 2, 0], [s - 1, s - 1], [0, s - 1]], np.int32)
        cv2.fillPoly(img, [pts], (*colour, 255), cv2.LINE_AA)
    else:  # a red or blue square with stripes (shop sign, awning)
        img[:, :, :3] = colour
        img[:, :, 3] = 255
        for k in range(0, s, max(2, s // 5)):
            img[k : k + max(1, s // 10), :, :3] = 240
    return img


def make_scene(rng: np.random.Generator, bgs: tuple[np.ndarray, ...], max_signs: int = 4) -> Scene:
    """One scene drawn with `rng` on one of the backgrounds `bgs`."""
    bg = bgs[int(rng.integers(len(bgs)))]
    scale = rng.uniform(0.8, 1.25)
    img = cv2.resize(bg, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    H, W = img.shape[:2]
    cast = img.reshape(-1, 3).mean(0) / max(1.0, img.mean())
    boxes, labels, visible, alphas = [], [], [], []
    n_signs = int(rng.integers(0, max_signs + 1)) if rng.random() > 0.1 else 0
    for _ in range(int(rng.integers(0, 6))):
        d = _distractor(rng, int(math.exp(rng.uniform(math.log(MIN_SIGN), math.log(MAX_SIGN)))))
        if rng.random() < 0.8:
            d = np.dstack([_light(_blur(d[:, :, :3], rng, d.shape[1]), rng, cast), d[:, :, 3]])
        _paste(img, d, int(rng.integers(-5, W - 5)), int(rng.integers(-5, H - 5)))
    taken: list[tuple[int, int, int, int]] = []
    for _ in range(n_signs):
        label = int(rng.integers(len(SIGN_CLASSES)))
        width = int(math.exp(rng.uniform(math.log(MIN_SIGN), math.log(MAX_SIGN))))
        # Drawn at 2x and reduced with the turn: small signs keep their detail as a camera would see it.
        sign = render_sign(SIGN_CLASSES[label], width * 2, rng)
        sign, own = _perspective(list(_with_mount(sign, rng)), rng)
        half = (max(4, sign.shape[1] // 2), max(4, sign.shape[0] // 2))
        sign, own = (cv2.resize(x, half, interpolation=cv2.INTER_AREA) for x in (sign, own))
        rgb = _light(_blur(sign[:, :, :3], rng, width), rng, cast)
        sign = np.dstack([rgb, sign[:, :, 3]])
        h, w = sign.shape[:2]
        for _try in range(10):  # signs do not overlap each other
            x, y = int(rng.integers(-w // 4, W - 3 * w // 4)), int(rng.integers(-h // 4, H - 3 * h // 4))
            if all(x + w < a or a + c < x or y + h < b or b + d < y for a, b, c, d in taken):
                break
        else:
            continue
        if rng.random() < 0.4:  # a pole under it
            pole_w = max(1, w // 12)
            grey = int(rng.uniform(60, 180))
            px = x + w // 2 - pole_w // 2
            img[max(y + h, 0) : min(y + h + int(rng.uniform(0.5, 3) * h), H), max(px, 0) : max(min(px + pole_w, W), 0)] = grey
        if _paste(img, sign, x, y) is None:
            continue
        alpha = _paste(np.zeros_like(img), np.dstack([np.zeros_like(sign[:, :, :3]), own]), x, y)
        assert alpha is not None
        ys, xs = np.nonzero(alpha > 0.5)
        if len(xs) == 0:
            continue
        taken.append((x, y, w, h))
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(label)
        alphas.append(alpha > 0.5)
        visible.append(1.0)
    # Partial cover: a piece of the background pasted over part of a sign (a branch, a van, a lamp post).
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        if rng.random() < 0.2:
            w, h = x2 - x1, y2 - y1
            cw, ch = int(w * rng.uniform(0.2, 0.6)), int(h * rng.uniform(0.3, 1.0))
            cx = int(x1 + (rng.random() < 0.5) * (w - cw))
            sx, sy = int(rng.integers(0, max(1, W - cw))), int(rng.integers(0, max(1, H - ch)))
            src = bg[min(sy, bg.shape[0] - ch) : min(sy, bg.shape[0] - ch) + ch, min(sx, bg.shape[1] - cw) : min(sx, bg.shape[1] - cw) + cw].copy()
            y0 = int(y1 + rng.integers(0, max(1, h - ch + 1)))
            ys0, ys1, xs0, xs1 = max(y0, 0), min(y0 + ch, H), max(cx, 0), min(cx + cw, W)
            if ys1 > ys0 and xs1 > xs0 and src.size:
                img[ys0:ys1, xs0:xs1] = src[ys0 - y0 : ys1 - y0, xs0 - cx : xs1 - cx]
                covered = np.zeros((H, W), bool)
                covered[ys0:ys1, xs0:xs1] = True
                visible[k] = float((alphas[k] & ~covered).sum() / max(1, alphas[k].sum()))
    # The camera: sensor noise, then JPEG.
    noise = rng.normal(0, rng.uniform(0, 5), img.shape)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 96))])
    img = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    return Scene(img, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64), np.array(visible, np.float32))
