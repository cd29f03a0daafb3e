"""A ground-plane homography: image pixels to metres on the ground, from four point pairs."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stages.analyze.geometry import GeometryError, _cross


@dataclass(frozen=True)
class GroundPlane:
    matrix: np.ndarray  # 3x3, image -> ground

    @staticmethod
    def load(image: list[tuple[float, float]], ground: list[tuple[float, float]], size: tuple[int, int]) -> "GroundPlane":
        src = np.asarray(image, np.float64)
        dst = np.asarray(ground, np.float64)
        if src.shape != (4, 2) or dst.shape != (4, 2):
            raise GeometryError(f"needs exactly 4 image points and 4 ground points, got {len(src)} and {len(dst)}")
        w, h = size
        if (src[:, 0] < 0).any() or (src[:, 0] > w).any() or (src[:, 1] < 0).any() or (src[:, 1] > h).any():
            raise GeometryError(f"image points must lie in the {w}x{h} frame")
        for what, pts in (("image", src), ("ground", dst)):
            # Three collinear points leave the homography undetermined.
            for i in range(4):
                o, a, b = (pts[j] for j in range(4) if j != i)
                scale = max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1e-9) ** 2
                if abs(_cross(o, a, b)) < 1e-6 * scale:
                    raise GeometryError(f"three of the {what} points lie on one line")
        m = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)
        if not np.isfinite(m).all():
            raise GeometryError("the point pairs give no usable homography")
        return GroundPlane(m)

    def to_ground(self, points: np.ndarray) -> np.ndarray:
        """[N, 2] pixels -> [N, 2] metres."""
        p = np.asarray(points, np.float64).reshape(-1, 2)
        q = np.hstack([p, np.ones((len(p), 1))]) @ self.matrix.T
        return q[:, :2] / q[:, 2:3]
