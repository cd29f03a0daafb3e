"""Zones and directed lines of a stream, in pixels or relative to the frame, checked when loaded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class GeometryError(ValueError):
    """A zone or line that cannot be used; the message says which and why."""


def _to_pixels(points: list[list[float]], size: tuple[int, int], relative: bool, what: str) -> np.ndarray:
    """[[x, y], ...] -> float array in pixels of a (width, height) frame; every point must lie in the frame."""
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or not np.isfinite(p).all():
        raise GeometryError(f"{what}: points must be [[x, y], ...] numbers, got {points!r}")
    w, h = size
    if relative:
        if (p < 0).any() or (p > 1).any():
            raise GeometryError(f"{what}: relative coordinates must be between 0 and 1, got {points!r}")
        p = p * [w, h]
    bad = (p[:, 0] < 0) | (p[:, 0] > w) | (p[:, 1] < 0) | (p[:, 1] > h)
    if bad.any():
        raise GeometryError(f"{what}: point {p[bad][0].tolist()} is outside the {w}x{h} frame")
    return p


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def segments_intersect(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    """Whether segments p1-p2 and q1-q2 share a point (touching counts)."""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    if ((d1 > 0) != (d2 > 0)) and d1 != 0 and d2 != 0 and ((d3 > 0) != (d4 > 0)) and d3 != 0 and d4 != 0:
        return True

    def on(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:  # c on segment a-b, given collinear
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    return (d1 == 0 and on(q1, q2, p1)) or (d2 == 0 and on(q1, q2, p2)) or (d3 == 0 and on(p1, p2, q1)) or (d4 == 0 and on(p1, p2, q2))


@dataclass(frozen=True)
class Line:
    """A directed line segment a -> b. Crossing it from its right side to its left side (as seen walking
    from a to b, image y pointing down) is direction `in`, the other way `out`."""

    name: str
    a: np.ndarray
    b: np.ndarray

    @staticmethod
    def load(name: str, points: list[list[float]], size: tuple[int, int], relative: bool = False) -> "Line":
        p = _to_pixels(points, size, relative, f"line {name}")
        if len(p) != 2:
            raise GeometryError(f"line {name}: needs exactly 2 points, got {len(p)}")
        if np.hypot(*(p[1] - p[0])) < 1.0:
            raise GeometryError(f"line {name}: zero length ({p[0].tolist()} to {p[1].tolist()})")
        return Line(name, p[0], p[1])

    @property
    def length(self) -> float:
        return float(np.hypot(*(self.b - self.a)))

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Pixels from the line's infinite extension: positive on the `in` side (left of a -> b)."""
        d = self.b - self.a
        rel = np.asarray(points, np.float64).reshape(-1, 2) - self.a
        # Image y points down, so "left of a -> b" is where the 2-D cross product is negative.
        return -(d[0] * rel[:, 1] - d[1] * rel[:, 0]) / self.length


@dataclass(frozen=True)
class Zone:
    name: str
    polygon: np.ndarray  # [K, 2] pixels

    @staticmethod
    def load(name: str, points: list[list[float]], size: tuple[int, int], relative: bool = False) -> "Zone":
        p = _to_pixels(points, size, relative, f"zone {name}")
        if len(p) < 3:
            raise GeometryError(f"zone {name}: a polygon needs at least 3 points, got {len(p)}")
        k = len(p)
        for i in range(k):
            for j in range(i + 1, k):
                if j == i + 1 or (i == 0 and j == k - 1):
                    continue  # neighbouring edges share a corner
                if segments_intersect(p[i], p[(i + 1) % k], p[j], p[(j + 1) % k]):
                    raise GeometryError(f"zone {name}: the polygon intersects itself (edges {i} and {j})")
        area = 0.5 * abs(float(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))))
        if area < 1.0:
            raise GeometryError(f"zone {name}: the polygon has no area")
        return Zone(name, p)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Even-odd rule, vectorised over points [N, 2]."""
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        x, y = pts[:, 0:1], pts[:, 1:2]
        xi, yi = self.polygon[:, 0], self.polygon[:, 1]
        xj, yj = np.roll(xi, 1), np.roll(yi, 1)
        crosses = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = (xj - xi) * (y - yi) / (yj - yi) + xi
        return ((crosses & (x < x_at)).sum(axis=1) % 2).astype(bool)
