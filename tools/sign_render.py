"""Traffic-sign templates drawn from their published geometry and colours (Vienna convention shapes, the US yield):
no copied artwork. Each sign is drawn with OpenCV at four times its size and reduced (area), so edges are
anti-aliased, and comes back as BGRA with the sign's silhouette in alpha.

Every drawing takes a numpy Generator: colours (faded, dirty, off-white), stroke widths, the font and small
offsets vary from one instance to the next, as they do between real signs of one class.

    python -m tools.sign_render --out sheet.png   # one row of instances per class, to look at
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from stages.infer.signs.classes import SIGN_CLASSES, SPEED_LIMITS

SS = 4  # supersampling factor

Color = tuple[int, int, int]
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def _jitter(rng: np.random.Generator, bgr: tuple[float, float, float], amount: float) -> Color:
    c = np.array(bgr, float) * rng.uniform(1 - amount, 1 + amount * 0.5) + rng.normal(0, amount * 40, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))  # type: ignore[return-value]


class _Palette:
    """One sign's colours: the standard ones, faded or dirtied a little."""

    def __init__(self, rng: np.random.Generator) -> None:
        fade = rng.uniform(0, 0.35)  # sun-bleached signs lose saturation
        self.red = _jitter(rng, self._fade((35, 25, 200), fade), 0.15)
        self.blue = _jitter(rng, self._fade((165, 85, 10), fade), 0.15)
        self.white = _jitter(rng, (240, 240, 238), 0.08)
        self.black = _jitter(rng, (25, 25, 25), 0.3)

    @staticmethod
    def _fade(bgr: tuple[float, float, float], f: float) -> tuple[float, float, float]:
        grey = sum(bgr) / 3
        return tuple(v + (grey - v) * f + 40 * f for v in bgr)  # type: ignore[return-value]


class _Canvas:
    """A BGR image and an alpha mask at SS times the output size, drawn in output-pixel units."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.img = np.zeros((h * SS, w * SS, 3), np.uint8)
        self.alpha = np.zeros((h * SS, w * SS), np.uint8)

    def pts(self, xy: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(xy, float) * SS).astype(np.int32).reshape(-1, 1, 2)

    def poly(self, xy: np.ndarray, color: Color, silhouette: bool = False) -> None:
        cv2.fillPoly(self.img, [self.pts(xy)], color, cv2.LINE_AA)
        if silhouette:
            cv2.fillPoly(self.alpha, [self.pts(xy)], 255, cv2.LINE_AA)

    def disk(self, c: tuple[float, float], r: float, color: Color, silhouette: bool = False) -> None:
        cc = (round(c[0] * SS), round(c[1] * SS))
        cv2.circle(self.img, cc, round(r * SS), color, -1, cv2.LINE_AA)
        if silhouette:
            cv2.circle(self.alpha, cc, round(r * SS), 255, -1, cv2.LINE_AA)

    def line(self, a: tuple[float, float], b: tuple[float, float], width: float, color: Color) -> None:
        cv2.line(self.img, (round(a[0] * SS), round(a[1] * SS)), (round(b[0] * SS), round(b[1] * SS)), color,
                 max(1, round(width * SS)), cv2.LINE_AA)  # fmt: skip

    def arc(self, c: tuple[float, float], r: float, a0: float, a1: float, width: float, color: Color) -> None:
        cv2.ellipse(self.img, (round(c[0] * SS), round(c[1] * SS)), (round(r * SS), round(r * SS)), 0, a0, a1, color,
                    max(1, round(width * SS)), cv2.LINE_AA)  # fmt: skip

    def text(self, s: str, c: tuple[float, float], width: float, color: Color, rng: np.random.Generator,
             max_height: float | None = None) -> None:  # fmt: skip
        """`s` centred on c, scaled to `width` (and at most `max_height` tall)."""
        font = _FONTS[int(rng.integers(len(_FONTS)))]
        thick_rel = rng.uniform(0.09, 0.16)  # stroke width relative to the glyph height
        (tw, th), _ = cv2.getTextSize(s, font, 1.0, 1)
        scale = width * SS / tw
        if max_height is not None:
            scale = min(scale, max_height * SS / th)
        thick = max(1, round(th * scale * thick_rel))
        (tw, th), _ = cv2.getTextSize(s, font, scale, thick)
        org = (round(c[0] * SS - tw / 2), round(c[1] * SS + th / 2))
        cv2.putText(self.img, s, org, font, scale, color, thick, cv2.LINE_AA)

    def result(self) -> np.ndarray:
        out = np.dstack([self.img, self.alpha])
        return cv2.resize(out, (self.w, self.h), interpolation=cv2.INTER_AREA)


def _regular(n: int, c: tuple[float, float], r: float, start_deg: float) -> np.ndarray:
    a = np.deg2rad(start_deg + 360 / n * np.arange(n))
    return np.stack([c[0] + r * np.cos(a), c[1] + r * np.sin(a)], 1)


def _triangle(c: tuple[float, float], r: float, up: bool) -> np.ndarray:
    return _regular(3, c, r, -90 if up else 90)


def _shrink(poly: np.ndarray, c: tuple[float, float], f: float) -> np.ndarray:
    return (poly - np.array(c)) * f + np.array(c)


def _arrow(cv: _Canvas, a: tuple[float, float], b: tuple[float, float], width: float, head: float, color: Color) -> None:
    """A straight arrow from a to b with a triangular head at b."""
    d = np.subtract(b, a).astype(float)
    d /= np.linalg.norm(d) + 1e-9
    n = np.array([-d[1], d[0]])
    base = np.array(b) - d * head
    cv.line(a, tuple(base), width, color)  # type: ignore[arg-type]
    cv.poly(np.array([b, base + n * head * 0.8, base - n * head * 0.8]), color)


def _ring_sign(s: int, rng: np.random.Generator, p: _Palette, inner: Color, ring: Color, ring_frac: float) -> tuple[_Canvas, tuple[float, float], float]:
    cv = _Canvas(s, s)
    c, r = (s / 2, s / 2), s / 2 - 0.5
    cv.disk(c, r, p.white if rng.random() < 0.5 else _jitter(rng, (200, 200, 200), 0.1), silhouette=True)  # thin rim
    cv.disk(c, r * 0.96, ring)
    cv.disk(c, r * (0.96 - ring_frac), inner)
    return cv, c, r


def draw_stop(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
    cv = _Canvas(s, s)
    c, r = (s / 2, s / 2), s / 2 / math.cos(math.pi / 8) - 0.5
    octagon = _regular(8, c, r, 22.5)
    cv.poly(octagon, p.white, silhouette=True)
    cv.poly(_shrink(octagon, c, 0.93), p.red)
    cv.text("STOP", (c[0], c[1]), s * rng.uniform(0.62, 0.74), p.white, rng)
    return cv.result()


def _inverted(s: int, rng: np.random.Generator, p: _Palette, text: str | None) -> np.ndarray:
    h = round(s * math.sqrt(3) / 2)
    cv = _Canvas(s, h)
    c, r = (s / 2, h / 3), s / math.sqrt(3)
    tri = _triangle(c, r, up=False)
    cv.poly(tri, p.red, silhouette=True)
    cv.poly(_shrink(tri, c, rng.uniform(0.55, 0.65)), p.white)
    if text:
        cv.text(text, (c[0], c[1] - s * 0.04), s * 0.34, p.red, rng)
    return cv.result()


def draw_give_way(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
    return _inverted(s, rng, p, None)


def draw_yield(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
    return _inverted(s, rng, p, "YIELD")


def draw_no_entry(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
    cv = _Canvas(s, s)
    c, r = (s / 2, s / 2), s / 2 - 0.5
    cv.disk(c, r, p.red, silhouette=True)
    bw, bh = r * rng.uniform(1.45, 1.6), r * rng.uniform(0.3, 0.4)
    cv.poly(np.array([(c[0] - bw / 2, c[1] - bh / 2), (c[0] + bw / 2, c[1] - bh / 2), (c[0] + bw / 2, c[1] + bh / 2), (c[0] - bw / 2, c[1] + bh / 2)]), p.white)
    return cv.result()


def _speed(limit: int) -> Callable[[int, np.random.Generator, _Palette], np.ndarray]:
    def draw(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
        cv, c, r = _ring_sign(s, rng, p, p.white, p.red, rng.uniform(0.14, 0.2))
        text = str(limit)
        cv.text(text, c, r * (0.95 if len(text) == 2 else 1.2), p.black, rng, max_height=r * 0.8)
        return cv.result()

    return draw


def draw_no_parking(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
    cv, c, r = _ring_sign(s, rng, p, p.blue, p.red, rng.uniform(0.14, 0.2))
    d = r * 0.62
    cv.line((c[0] - d, c[1] - d), (c[0] + d, c[1] + d), r * 0.2, p.red)
    return cv.result()


def draw_no_stopping(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
    cv, c, r = _ring_sign(s, rng, p, p.blue, p.red, rng.uniform(0.14, 0.2))
    d = r * 0.62
    cv.line((c[0] - d, c[1] - d), (c[0] + d, c[1] + d), r * 0.2, p.red)
    cv.line((c[0] + d, c[1] - d), (c[0] - d, c[1] + d), r * 0.2, p.red)
    return cv.result()


def _walker(cv: _Canvas, x: float, y: float, h: float, color: Color) -> None:
    """A walking figure of height h standing on (x, y): head, torso, arms and legs in stride."""
    w = h * 0.11
    cv.disk((x + h * 0.05, y - h * 0.9), h * 0.1, color)
    hip, neck = (x, y - h * 0.42), (x + h * 0.04, y - h * 0.76)
    cv.line(neck, hip, w * 1.3, color)
    cv.line(hip, (x - h * 0.2, y), w, color)
    cv.line(hip, (x + h * 0.22, y - h * 0.02), w, color)
    cv.line((neck[0], neck[1] + h * 0.06), (x - h * 0.2, y - h * 0.45), w * 0.8, color)
    cv.line((neck[0], neck[1] + h * 0.06), (x + h * 0.22, y - h * 0.5), w * 0.8, color)


def draw_pedestrian_crossing(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
    cv = _Canvas(s, s)
    m = s * 0.03
    cv.poly(np.array([(0, 0), (s, 0), (s, s), (0, s)], float), p.white, silhouette=True)
    cv.poly(np.array([(m, m), (s - m, m), (s - m, s - m), (m, s - m)], float), p.blue)
    c = (s / 2, s * 0.56)
    tri = _triangle(c, s * 0.42, up=True)
    cv.poly(tri, p.white)
    base_y = c[1] + s * 0.42 / 2 - s * 0.06
    for k in range(4):  # zebra stripes under the walker
        x0 = s * (0.33 + 0.1 * k)
        cv.poly(np.array([(x0, base_y - s * 0.03), (x0 + s * 0.06, base_y - s * 0.03), (x0 + s * 0.05, base_y), (x0 - s * 0.01, base_y)]), p.black)
    _walker(cv, s / 2, base_y - s * 0.04, s * 0.4, p.black)
    return cv.result()


def draw_one_way(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
    h = round(s * rng.uniform(0.4, 0.55))
    cv = _Canvas(s, h)
    m = h * 0.06
    cv.poly(np.array([(0, 0), (s, 0), (s, h), (0, h)], float), p.white, silhouette=True)
    cv.poly(np.array([(m, m), (s - m, m), (s - m, h - m), (m, h - m)], float), p.blue)
    a, b = (s * 0.15, h / 2), (s * 0.87, h / 2)
    if rng.random() < 0.5:
        a, b = b, a
    _arrow(cv, a, b, h * 0.2, h * 0.3, p.white)
    return cv.result()


def draw_roundabout(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
    cv, c, r = _ring_sign(s, rng, p, p.blue, p.blue, 0.0)
    rr, w = r * 0.5, r * 0.16
    for k in range(3):  # three arrows chasing each other anticlockwise
        a0 = 120 * k + 20
        a1 = a0 + 75
        cv.arc(c, rr, a0, a1, w, p.white)
        t = math.radians(a0)
        tip = (c[0] + rr * math.cos(t) + w * 0.3 * math.sin(t), c[1] + rr * math.sin(t) - w * 0.3 * math.cos(t))
        d = np.array([math.sin(t), -math.cos(t)])  # tangent, anticlockwise on screen
        n = np.array([math.cos(t), math.sin(t)])
        base = np.array(tip) - d * w * 1.6
        cv.poly(np.array([tip, base + n * w * 1.3, base - n * w * 1.3]), p.white)
    return cv.result()


def draw_keep_right(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
    cv, c, r = _ring_sign(s, rng, p, p.blue, p.blue, 0.0)
    d = r * 0.5
    _arrow(cv, (c[0] - d, c[1] - d), (c[0] + d * 0.9, c[1] + d * 0.9), r * 0.22, r * 0.45, p.white)
    return cv.result()


def draw_danger(s: int, rng: np.random.Generator, p: _Palette) -> np.ndarray:
    h = round(s * math.sqrt(3) / 2)
    cv = _Canvas(s, h)
    c, r = (s / 2, h * 2 / 3), s / math.sqrt(3)
    tri = _triangle(c, r, up=True)
    cv.poly(tri, p.red, silhouette=True)
    cv.poly(_shrink(tri, c, rng.uniform(0.62, 0.72)), p.white)
    x, top, bottom = s / 2, h * 0.36, h * 0.72
    cv.poly(np.array([(x - s * 0.04, top), (x + s * 0.04, top), (x + s * 0.025, bottom), (x - s * 0.025, bottom)]), p.black)
    cv.disk((x, h * 0.8), s * 0.035, p.black)
    return cv.result()


DRAW: dict[str, Callable[[int, np.random.Generator, _Palette], np.ndarray]] = {
    "stop": draw_stop,
    "give_way": draw_give_way,
    "yield": draw_yield,
    "no_entry": draw_no_entry,
    **{f"speed_limit_{v}": _speed(v) for v in SPEED_LIMITS},
    "no_parking": draw_no_parking,
    "no_stopping": draw_no_stopping,
    "pedestrian_crossing": draw_pedestrian_crossing,
    "one_way": draw_one_way,
    "roundabout": draw_roundabout,
    "keep_right": draw_keep_right,
    "danger": draw_danger,
}
assert tuple(DRAW) == SIGN_CLASSES, "one drawing per class, in SIGN_CLASSES order"


def render_sign(name: str, width: int, rng: np.random.Generator) -> np.ndarray:
    """One instance of sign `name`, `width` pixels wide: BGRA uint8 (alpha: the sign's silhouette)."""
    if name not in DRAW:
        raise ValueError(f"unknown sign {name!r}; known: {', '.join(SIGN_CLASSES)}")
    return DRAW[name](max(8, int(width)), rng, _Palette(rng))


def contact_sheet(rng: np.random.Generator, per_class: int = 6, size: int = 64) -> np.ndarray:
    """Instances of every class on grey, one row per class: a sheet to check the drawings by eye."""
    rows = []
    for name in SIGN_CLASSES:
        row = np.full((size + 8, (size + 8) * per_class, 3), 128, np.uint8)
        for k in range(per_class):
            sign = render_sign(name, size, rng)
            h, w = sign.shape[:2]
            a = sign[:, :, 3:].astype(np.float32) / 255
            x0 = k * (size + 8) + 4
            patch = row[4 : 4 + h, x0 : x0 + w].astype(np.float32)
            row[4 : 4 + h, x0 : x0 + w] = (sign[:, :, :3] * a + patch * (1 - a)).astype(np.uint8)
        rows.append(row)
    return np.vstack(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Draw a contact sheet of the sign templates.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cv2.imwrite(str(args.out), contact_sheet(np.random.default_rng(args.seed)))


if __name__ == "__main__":
    main()
