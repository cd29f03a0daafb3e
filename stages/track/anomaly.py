"""Trajectory anomaly: how unlike normal motion a track's last few seconds are, learnt from normal tracks only.

Each confirmed track's last WINDOW observations become a sequence of motion features (`features`): velocity of
the foot point and its change, speed, turn, box aspect and growth, all in units of the box's height per second,
so one person walking reads the same near and far from the camera; a per-scene model adds where in the frame
the foot point is (scene models learn the paths and the direction of flow of one camera). An LSTM autoencoder
(`TrajectoryAutoencoder`) squeezes the sequence through a small state and rebuilds it; the mean squared error of
the rebuild, divided by the error that normal tracks exceed only at the model's calibrated false-alarm rate, is the
track's score: above 1 is rarer than that rate on normal motion. Trained by tools/train_anomaly.py.

`AnomalyScorer` keeps the tracks' recent boxes per stream and scores every tracked row of a batch of frames in one
call through the backend layer; it writes the column `anomaly.score` (NaN for rows without a track or with too
short a history).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.detections import Detections

WINDOW = 20  # observations per sequence: 2 s at 10 fps
MIN_OBSERVED = 10  # a track scored once it has this many observations in the window
MOTION_FEATURES = 8
POSITION_FEATURES = 2  # per-scene models only: the foot point in fractions of the frame
ANOMALY_SCORE = "anomaly.score"
CLIP = 6.0
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "anomaly.pt"


def features(boxes: np.ndarray, seconds: np.ndarray, frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """Motion features [T, F] of one track's observations (boxes [T, 4] x1, y1, x2, y2; their times in s, rising).

    Per step: foot-point velocity (x, y) and speed in box heights per second, the change of velocity (its
    magnitude, per second), the turn (cos and sin of the heading change), aspect (w / h, a fallen person is wide) and
    the growth of the height (log ratio per second); with `frame_size`, the foot point in fractions of the frame.
    The first step has no velocity: it repeats the second's."""
    b = np.asarray(boxes, np.float64)
    t = np.asarray(seconds, np.float64)
    w = np.maximum(b[:, 2] - b[:, 0], 1.0)
    h = np.maximum(b[:, 3] - b[:, 1], 1.0)
    fx, fy = (b[:, 0] + b[:, 2]) / 2, b[:, 3]
    n = len(b)
    out = np.zeros((n, MOTION_FEATURES + (POSITION_FEATURES if frame_size else 0)), np.float32)
    if n >= 2:
        dt = np.maximum(np.diff(t), 1e-3)
        hm = (h[1:] + h[:-1]) / 2
        vx, vy = np.diff(fx) / hm / dt, np.diff(fy) / hm / dt
        vx, vy = np.concatenate([vx[:1], vx]), np.concatenate([vy[:1], vy])
        dts = np.concatenate([dt[:1], dt])
        speed = np.hypot(vx, vy)
        acc = np.hypot(np.diff(vx, prepend=vx[0]), np.diff(vy, prepend=vy[0])) / dts
        heading = np.arctan2(vy, vx)
        turn = np.diff(heading, prepend=heading[0])
        moving = speed > 0.1  # the heading of a standing person is noise
        growth = np.diff(np.log(h), prepend=np.log(h[0])) / dts
        out[:, 0], out[:, 1], out[:, 2], out[:, 3] = vx, vy, speed, acc
        out[:, 4] = np.where(moving, np.cos(turn), 1.0)
        out[:, 5] = np.where(moving, np.sin(turn), 0.0)
        out[:, 7] = growth
    out[:, 6] = w / h
    if frame_size:
        out[:, 8], out[:, 9] = fx / frame_size[0], fy / frame_size[1]
    return np.clip(out, -20, 20)


def windows(feats: np.ndarray) -> np.ndarray:
    """The last WINDOW steps of a track's features [WINDOW, F], front-padded by repeating its first step."""
    if len(feats) >= WINDOW:
        return feats[-WINDOW:]
    return np.concatenate([np.repeat(feats[:1], WINDOW - len(feats), 0), feats])


@dataclass
class Calibration:
    """What the weights file's sidecar JSON says: feature normalisation and the error threshold."""

    mean: np.ndarray
    std: np.ndarray
    threshold: float  # reconstruction error exceeded by normal windows at `false_alarm_rate`
    false_alarm_rate: float  # per scored window, on the tuning split
    scene: bool  # per-scene model: position features used
    frame_size: tuple[int, int] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def load(weights: Path) -> Calibration:
        data = json.loads(weights.with_suffix(".json").read_text())
        return Calibration(np.array(data["mean"], np.float32), np.array(data["std"], np.float32), float(data["threshold"]),
                           float(data["false_alarm_rate"]), bool(data["scene"]), tuple(data["frame_size"]) if data.get("frame_size") else None,
                           data.get("info", {}))  # fmt: skip

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Features in units of normal motion's spread, clipped at +-CLIP: a glitch box (a track entering at the frame
        edge, a box that jumps) stays a large error instead of dominating every other window's scale."""
        return np.clip((x - self.mean) / self.std, -CLIP, CLIP).astype(np.float32)

    def save(self, weights: Path) -> None:
        data = {"mean": self.mean.tolist(), "std": self.std.tolist(), "threshold": self.threshold, "false_alarm_rate": self.false_alarm_rate,
                "scene": self.scene, "frame_size": list(self.frame_size) if self.frame_size else None, "info": self.info}  # fmt: skip
        weights.with_suffix(".json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def build_module(n_features: int, hidden: int = 32) -> Any:
    """The autoencoder as a torch module (imported here: the stage runs it on a CPU runtime without torch)."""
    import torch
    from torch import nn

    class TrajectoryAutoencoder(nn.Module):
        """[N, WINDOW, F] normalised features -> per-window mean squared rebuild error [N].

        The encoder LSTM's last state is the whole summary; the decoder LSTM unrolls it back over WINDOW steps."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.LSTM(n_features, hidden, batch_first=True)
            self.bottleneck = nn.Linear(hidden, hidden // 2)
            self.expand = nn.Linear(hidden // 2, hidden)
            self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
            self.out = nn.Linear(hidden, n_features)

        def rebuild(self, x: torch.Tensor) -> torch.Tensor:
            _, (h, _) = self.encoder(x)
            z = torch.tanh(self.bottleneck(h[-1]))
            seq = self.expand(z)[:, None, :].expand(-1, x.shape[1], -1)
            y, _ = self.decoder(seq)
            return self.out(y)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return ((self.rebuild(x) - x) ** 2).mean(dim=(1, 2))

    return TrajectoryAutoencoder()


class AnomalyScorer:
    """Scores the tracked rows of frames, keeping each stream's tracks' recent boxes between calls."""

    def __init__(self, weights: Path | str | None = None, backend: str = "auto", device: str = "cpu", forget_frames: int = 50) -> None:
        from stages.infer.backend import compile_cached, file_key

        path = Path(weights or DEFAULT_WEIGHTS)
        self.cal = Calibration.load(path)
        n = len(self.cal.mean)
        key = file_key([path, path.with_suffix(".json"), Path(__file__)], f"anomaly window={WINDOW}")

        def build() -> tuple[Any, list[Any]]:
            import torch

            module = build_module(n)
            module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return module.eval(), [torch.zeros(2, WINDOW, n)]

        self.net = compile_cached(build, key=key, name="anomaly", backend=backend, device=device, cpu_default="onnxruntime")
        self.backend: str = self.net.backend
        self.forget_frames = forget_frames
        self._tracks: dict[str, dict[int, deque[tuple[int, float, np.ndarray]]]] = {}

    def end_stream(self, stream: str) -> None:
        self._tracks.pop(stream, None)

    def _errors(self, x: np.ndarray) -> np.ndarray:
        x = self.cal.normalise(x)
        if self.backend in ("onnxruntime", "openvino"):
            (err,) = self.net(x)
            return np.asarray(err)
        import torch

        (err,) = self.net(torch.from_numpy(x))
        return err.float().cpu().numpy()

    def score(self, frames: list[tuple[str, int, float, Detections, tuple[int, int]]]) -> list[Detections]:
        """(stream, seq, pts seconds, detections, frame size) per frame, in order per stream -> the detections with
        `anomaly.score`."""
        seqs, where = [], []
        for fi, (stream, seq, pts, d, size) in enumerate(frames):
            tracks = self._tracks.setdefault(stream, {})
            for row in np.flatnonzero(d.track_ids >= 0):
                hist = tracks.setdefault(int(d.track_ids[row]), deque(maxlen=WINDOW))
                hist.append((seq, pts, d.boxes[row].copy()))
                if len(hist) >= MIN_OBSERVED:
                    boxes = np.stack([h[2] for h in hist])
                    times = np.array([h[1] for h in hist])
                    seqs.append(windows(features(boxes, times, size if self.cal.scene else None)))
                    where.append((fi, row))
            for tid in [t for t, h in tracks.items() if seq - h[-1][0] > self.forget_frames]:
                del tracks[tid]
        errors = self._errors(np.stack(seqs)) / self.cal.threshold if seqs else np.zeros(0, np.float32)
        out = []
        columns = [np.full(len(f[3]), np.nan, np.float32) for f in frames]
        for (fi, row), e in zip(where, errors):
            columns[fi][row] = e
        for (_, _, _, d, _), col in zip(frames, columns):
            out.append(Detections(d.boxes, d.scores, d.class_ids, d.track_ids, {**d.extra, ANOMALY_SCORE: col}, d.labels))
        return out
