"""Constant-velocity Kalman filter over boxes, exactly as ByteTrack and DeepSORT use it.

State per track: (cx, cy, a, h, vcx, vcy, va, vh) with a = w / h, one step per frame. Process and measurement
noise are proportional to the box height (std_weight_position = 1/20, std_weight_velocity = 1/160), so the
filter is scale-invariant, like the motion LSTM it is compared with. The code mirrors ByteTrack's
`yolox/tracker/kalman_filter.py` (initiate / predict / project / update, with `multi_predict`), but keeps
all tracks in [N, 8] / [N, 8, 8] arrays so one call predicts every track and `update` corrects a subset.

`kalman_predict` has the same interface as `MotionPredictor.predict`: it runs a fresh filter through each
track's observations (predicting through the frames between them) and returns the box it predicts at the
target frame. It is both the baseline the motion LSTM is measured against and the SORT baseline's motion.
"""

from __future__ import annotations

import numpy as np

STD_WEIGHT_POSITION = 1.0 / 20
STD_WEIGHT_VELOCITY = 1.0 / 160


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """[..., 4] x1 y1 x2 y2 -> centre x, centre y, aspect w/h, height."""
    boxes = np.asarray(boxes, np.float64)
    w = boxes[..., 2] - boxes[..., 0]
    h = np.maximum(boxes[..., 3] - boxes[..., 1], 1e-6)
    return np.stack([boxes[..., 0] + w / 2, boxes[..., 1] + h / 2, w / h, h], -1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    xyah = np.asarray(xyah, np.float64)
    w = xyah[..., 2] * xyah[..., 3]
    h = xyah[..., 3]
    return np.stack([xyah[..., 0] - w / 2, xyah[..., 1] - h / 2, xyah[..., 0] + w / 2, xyah[..., 1] + h / 2], -1)


class KalmanBoxFilter:
    """A bank of constant-velocity box filters: `mean` [N, 8], `covariance` [N, 8, 8], one row per track."""

    def __init__(
        self,
        std_weight_position: float = STD_WEIGHT_POSITION,
        std_weight_velocity: float = STD_WEIGHT_VELOCITY,
    ) -> None:
        self.std_weight_position = std_weight_position
        self.std_weight_velocity = std_weight_velocity
        self._motion = np.eye(8)
        self._motion[:4, 4:] = np.eye(4)  # dt = 1 frame
        self.mean = np.zeros((0, 8))
        self.covariance = np.zeros((0, 8, 8))

    def __len__(self) -> int:
        return len(self.mean)

    @staticmethod
    def _diag(std: np.ndarray) -> np.ndarray:
        """[N, D] standard deviations -> [N, D, D] diagonal covariances."""
        out = np.zeros(std.shape + (std.shape[-1],))
        idx = np.arange(std.shape[-1])
        out[:, idx, idx] = std**2
        return out

    def initiate(self, measurements: np.ndarray) -> np.ndarray:
        """Append one track per xyah measurement [M, 4] (zero velocity); returns the new rows' indices."""
        m = np.asarray(measurements, np.float64).reshape(-1, 4)
        h = m[:, 3]
        wp, wv = self.std_weight_position, self.std_weight_velocity
        ones = np.ones_like(h)
        std = np.stack(
            [2 * wp * h, 2 * wp * h, 1e-2 * ones, 2 * wp * h, 10 * wv * h, 10 * wv * h, 1e-5 * ones, 10 * wv * h], -1
        )
        first = len(self.mean)
        self.mean = np.concatenate([self.mean, np.concatenate([m, np.zeros_like(m)], 1)])
        self.covariance = np.concatenate([self.covariance, self._diag(std)])
        return np.arange(first, first + len(m))

    def keep(self, rows: np.ndarray) -> None:
        """Keep only the given rows (a boolean mask or indices), e.g. to drop deleted tracks."""
        self.mean = self.mean[rows]
        self.covariance = self.covariance[rows]

    def predict(self, rows: np.ndarray | None = None) -> None:
        """Advance the given tracks (default: all) by one frame (ByteTrack's multi_predict)."""
        sel = slice(None) if rows is None else rows
        mean, cov = self.mean[sel], self.covariance[sel]
        if not len(mean):
            return
        h = mean[:, 3]
        wp, wv = self.std_weight_position, self.std_weight_velocity
        small = np.ones_like(h)
        std = np.stack([wp * h, wp * h, 1e-2 * small, wp * h, wv * h, wv * h, 1e-5 * small, wv * h], -1)
        self.mean[sel] = mean @ self._motion.T
        self.covariance[sel] = self._motion @ cov @ self._motion.T + self._diag(std)

    def project(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Measurement-space mean [M, 4] and covariance [M, 4, 4] of the given tracks (for gating / update)."""
        sel = slice(None) if rows is None else rows
        mean, cov = self.mean[sel], self.covariance[sel]
        h = mean[:, 3]
        wp = self.std_weight_position
        std = np.stack([wp * h, wp * h, 1e-1 * np.ones_like(h), wp * h], -1)
        return mean[:, :4].copy(), cov[:, :4, :4] + self._diag(std)

    def update(self, rows: np.ndarray, measurements: np.ndarray) -> None:
        """Correct the given tracks with one xyah measurement each ([len(rows), 4])."""
        rows = np.asarray(rows)
        z = np.asarray(measurements, np.float64).reshape(-1, 4)
        if not len(z):
            return
        mean, cov = self.mean[rows], self.covariance[rows]
        proj_mean, proj_cov = self.project(rows)
        # Kalman gain K = P H^T S^-1; S is symmetric, so solve S K^T = H P (ByteTrack uses cho_solve).
        gain = np.linalg.solve(proj_cov, cov[:, :4, :]).transpose(0, 2, 1)  # [M, 8, 4]
        innovation = z - proj_mean
        self.mean[rows] = mean + np.einsum("nij,nj->ni", gain, innovation)
        self.covariance[rows] = cov - gain @ proj_cov @ gain.transpose(0, 2, 1)

    def gating_distance(self, rows: np.ndarray | None, measurements: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance [M, D] of D xyah measurements to each selected track's projection."""
        proj_mean, proj_cov = self.project(rows)
        z = np.asarray(measurements, np.float64).reshape(-1, 4)
        d = z[None, :, :] - proj_mean[:, None, :]  # [M, D, 4]
        chol = np.linalg.cholesky(proj_cov)
        # Solve L y = d^T per track; |y|^2 is the Mahalanobis distance.
        y = np.linalg.solve(chol, d.transpose(0, 2, 1))
        return (y**2).sum(1)

    def boxes(self) -> np.ndarray:
        """[N, 4] float32 xyxy boxes of the current state."""
        return xyah_to_xyxy(self.mean[:, :4]).astype(np.float32)


def kalman_predict(
    boxes: np.ndarray,
    ages: np.ndarray,
    valid: np.ndarray,
    std_weight_position: float = STD_WEIGHT_POSITION,
    std_weight_velocity: float = STD_WEIGHT_VELOCITY,
    freeze_height_when_lost: bool = False,
) -> np.ndarray:
    """Box [N, 4] xyxy at the target frame, from each track's observations (same interface as the LSTM).

    boxes [N, K, 4] xyxy, ages [N, K] frames before the target (>= 1, rounded to whole frames), valid [N, K].
    Each track starts at its oldest valid observation, is predicted once per frame and updated at each
    observation, then predicted up to the target frame. With `freeze_height_when_lost`, frames without an
    observation first zero the height velocity, as ByteTrack's STrack.multi_predict does for lost tracks.
    """
    boxes = np.asarray(boxes, np.float64)
    n = len(boxes)
    if n == 0:
        return np.zeros((0, 4), np.float32)
    boxes = boxes.reshape(n, -1, 4)
    valid = np.asarray(valid, bool).reshape(n, -1)
    ages = np.rint(np.asarray(ages, np.float64).reshape(n, -1)).astype(np.int64)
    ages = np.where(valid, np.maximum(ages, 1), 0)
    xyah = xyxy_to_xyah(boxes)
    start = ages.max(1)  # the oldest observation starts the filter
    kf = KalmanBoxFilter(std_weight_position, std_weight_velocity)
    first = np.argmax(valid, 1)
    kf.initiate(xyah[np.arange(n), first])  # row i is track i
    # Observations after the first, as (time to target, track, measurement), in time order.
    later = valid.copy()
    later[np.arange(n), first] = False
    ti, ki = np.nonzero(later)
    obs_age = ages[ti, ki]
    for age in range(int(start.max()) - 1, -1, -1):
        active = np.flatnonzero(start > age)  # tracks already started
        if freeze_height_when_lost:
            seen = np.zeros(n, bool)
            seen[ti[obs_age == age + 1]] = True  # observed in the previous frame = still "tracked"
            lost = active[~seen[active]]
            kf.mean[lost, 7] = 0.0
        kf.predict(active)
        hit = obs_age == age
        if age > 0 and hit.any():
            kf.update(ti[hit], xyah[ti[hit], ki[hit]])
    return kf.boxes()


class KalmanState:
    """One track's filter between frames: its posterior after the observations up to `frame`."""

    __slots__ = ("mean", "covariance", "frame")

    def __init__(self, mean: np.ndarray, covariance: np.ndarray, frame: int) -> None:
        self.mean, self.covariance, self.frame = mean, covariance, frame


class KalmanTracks:
    """The Kalman filter as the tracker's motion model, kept per track between frames.

    `kalman_predict` replays a track's window of observations every frame (K predict/update steps per track);
    here each track keeps its posterior (`Track.motion_state`), takes in only the observations made since, and
    is predicted forward from it: one step per frame for a track seen in the last one. All tracks of a call go
    through each step together."""

    def __init__(self, history: int = 16, std_weight_position: float = STD_WEIGHT_POSITION,
                 std_weight_velocity: float = STD_WEIGHT_VELOCITY) -> None:
        self.history = history
        self.wp, self.wv = std_weight_position, std_weight_velocity

    def predict(self, boxes: np.ndarray, ages: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The stateless interface (windows of observations): a fresh filter through each window."""
        return kalman_predict(boxes, ages, valid, self.wp, self.wv)

    def predict_tracks(self, tracks: list, now: np.ndarray) -> np.ndarray:
        """[N, 4] each track's box at frame now[i]; brings each track's state up to its last observation."""
        n = len(tracks)
        if n == 0:
            return np.zeros((0, 4), np.float32)
        kf = KalmanBoxFilter(self.wp, self.wv)
        for t in tracks:
            if t.motion_state is None:  # a new track: start at its oldest observation
                first = int(np.argmax(t.frames >= 0))
                kf.mean, kf.covariance = np.zeros((0, 8)), np.zeros((0, 8, 8))
                kf.initiate(xyxy_to_xyah(t.boxes[first]))
                t.motion_state = KalmanState(kf.mean[0], kf.covariance[0], int(t.frames[first]))
        kf.mean = np.stack([t.motion_state.mean for t in tracks])
        kf.covariance = np.stack([t.motion_state.covariance for t in tracks])
        at = np.array([t.motion_state.frame for t in tracks], np.int64)
        # Observations not yet taken in, oldest first: usually one (last frame's), none for a lost track.
        while True:
            rows, obs_frame, obs_box = [], [], []
            for i, t in enumerate(tracks):
                newer = np.flatnonzero(t.frames > at[i])
                if len(newer):
                    rows.append(i)
                    obs_frame.append(int(t.frames[newer[0]]))
                    obs_box.append(t.boxes[newer[0]])
            if not rows:
                break
            r, f = np.array(rows), np.array(obs_frame)
            self._advance(kf, r, f - at[r])
            kf.update(r, xyxy_to_xyah(np.stack(obs_box)))
            at[r] = f
        for i, t in enumerate(tracks):
            t.motion_state = KalmanState(kf.mean[i].copy(), kf.covariance[i].copy(), int(at[i]))
        self._advance(kf, np.arange(n), np.asarray(now, np.int64) - at)
        return kf.boxes()

    @staticmethod
    def _advance(kf: KalmanBoxFilter, rows: np.ndarray, steps: np.ndarray) -> None:
        """Predict each of `rows` forward by its number of frames, all rows still to go in one step at a time."""
        for k in range(1, int(steps.max(initial=0)) + 1):
            kf.predict(rows[steps >= k])
