"""Trajectory anomaly: how unlike normal motion a track's recent motion is, learnt from normal tracks only.

Each confirmed track's last WINDOW observations in full view (`track_window`: a box at the frame's edge is a
person partly out of sight) become a sequence of motion features (`features`): velocity of the foot point and its
change, speed, turn, box aspect and growth, all in units of the box's height per second, so one person walking
reads the same near and far from the camera; a per-scene model adds where in the frame the foot point is (scene
models learn the paths and the direction of flow of one camera).

Two views of the window are scored against normal motion. An LSTM autoencoder (`build_module`) squeezes the
sequence through a small state and rebuilds it: its error is high for motion unlike any it learnt (a fall, a
tussle). And `summary` measures what an autoencoder rebuilds too easily: speed, turning, how straight the path is,
how much wider than its usual the box is, how long the track has stayed put and how it turned and strayed over its
last 6 s (`Memory`, kept per track beyond the window). `Tails` turns each of these thirteen numbers (twelve summaries
and the error) into how rarely normal training windows reach it; the track's score is the rarest one's -log10
probability (of those the model uses: the generic model leaves its autoencoder out, see tools/train_anomaly.py) over
the threshold that normal tuning windows exceed at the model's false-alarm rate: above 1 is rarer than that rate on
normal motion, whichever way the track is unusual. Trained by tools/train_anomaly.py.

`AnomalyScorer` keeps the tracks' recent boxes per stream and scores every tracked row of a batch of frames in one
call through the backend layer; it writes the column `anomaly.score` (NaN for rows without a track or with too
short a history in full view).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.boxes import near_frame_edge
from pipeline.detections import Detections

WINDOW = 20  # observations per sequence: 2 s at 10 fps
MIN_OBSERVED = 10  # a track scored once it has this many observations in the window
MOTION_FEATURES = 8
POSITION_FEATURES = 2  # per-scene models only: the foot point in fractions of the frame
ANOMALY_SCORE = "anomaly.score"
CLIP = 6.0
JUMP_HEIGHT = 0.5  # log ratio of a box's height between observations: a fall changes it by ~0.2 a step, a detector's noise by ~0.1
JUMP_SPEED = 10.0  # box heights per second: a sprint is about 4, a detector's noise adds ~1
EDGE_MARGIN = 0.01  # of the frame's smaller side: a box this close to the edge may be a person partly out of view
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


def jumped(h0: np.ndarray | float, h1: np.ndarray | float, moved: np.ndarray | float, dt: np.ndarray | float) -> np.ndarray:
    """Whether a box went from height h0 to h1 with its foot point moving `moved` pixels in `dt` seconds faster than
    a person does: its height by more than JUMP_HEIGHT or its foot faster than JUMP_SPEED (arrays or numbers)."""
    return np.asarray((np.abs(np.log(np.divide(h1, h0))) > JUMP_HEIGHT) | (np.divide(moved, np.add(h0, h1) / 2) / np.maximum(dt, 1e-3) > JUMP_SPEED))


def track_window(boxes: np.ndarray, seconds: np.ndarray, frame_size: tuple[int, int], scene: bool) -> np.ndarray | None:
    """The window the model scores for a track's recent observations, or None: only the observations since the
    track last broke count, and at least MIN_OBSERVED of them. A track breaks where its box touches the frame's edge
    (a person half out of view has a box whose height and foot point follow the edge, not the person: every normal
    window in the top 0.5% of speed on the tuning scenes touched the edge) and where it jumps, its height changing by
    more than JUMP_HEIGHT or its foot point moving faster than JUMP_SPEED from one observation to the next: the
    tracker has moved the id to someone else, or the box to part of the person (occlusion), and the step is no
    motion of anyone."""
    b = np.asarray(boxes, np.float64)
    edge = near_frame_edge(b, frame_size, EDGE_MARGIN)
    hh = np.maximum(b[:, 3] - b[:, 1], 1.0)
    moved = np.hypot(np.diff(b[:, 0] + b[:, 2]) / 2, np.diff(b[:, 3]))
    jump = np.concatenate([[False], jumped(hh[:-1], hh[1:], moved, np.diff(seconds))])
    start = max(int(np.flatnonzero(edge)[-1]) + 1 if edge.any() else 0, int(np.flatnonzero(jump)[-1]) if jump.any() else 0)
    if len(b) - start < MIN_OBSERVED:
        return None
    return windows(features(b[start:], seconds[start:], frame_size if scene else None))


DWELL_RADIUS = 0.75  # box heights: a person who stays this close to where they stopped is still there
USUAL_S = 10.0  # seconds of a track's history its usual box aspect follows
MOVING = 0.4  # box heights per second: slower, a heading is mostly the box's jitter
TRAIL = 60  # observations a track's Memory keeps for its long view: 6 s at 10 fps
LONG_MOVING = 0.3  # box heights per second over a second: travelling, not shuffling
CHORD = 4  # steps: headings and speeds from the displacement over 0.4 s, not from one frame's (noisy) step
SUMMARY_NAMES = ("speed", "peak speed", "jerk", "turning", "net turning", "sharpest turn", "wandering", "wide box", "box change",
                 "dwell", "long turn", "long wandering", "rebuild error")  # fmt: skip


class Memory:
    """What a track did before its window, kept per track as it goes (a 2 s window cannot see these): how long it
    has stayed within DWELL_RADIUS of its heights of the point where it last arrived (0 while walking; since it
    stopped while standing or shuffling about: normal pauses are short, lingering is not), and its usual box aspect
    (log w/h, a moving average over about USUAL_S): people's boxes differ in shape by build, clothes and what they
    carry, so a fall shows as a box much wider than that track's own usual one. And its trail, the last TRAIL foot
    points in full view since the track last broke, for `long_view`."""

    __slots__ = ("x", "y", "t", "aspect", "last", "seen", "trail")

    def __init__(self) -> None:
        self.x = self.y = self.t = self.aspect = self.last = float("nan")
        self.seen = 0
        self.trail: deque[tuple[float, float, float, float]] = deque(maxlen=TRAIL)

    def update(self, box: np.ndarray, t: float, frame_size: tuple[int, int]) -> tuple[float, float]:
        """Add an observation; -> (dwell seconds, usual log aspect before this observation). The usual aspect is
        the mean of the first observations in full view, then a moving average: boxes at the frame's edge (a person
        walking in, half seen) are left out."""
        fx, fy, w, h = (box[0] + box[2]) / 2, box[3], max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)
        if not np.hypot(fx - self.x, fy - self.y) <= DWELL_RADIUS * h:  # NaN at the start: arrives
            self.x, self.y, self.t = fx, fy, t
        edge = bool(near_frame_edge(box, frame_size, EDGE_MARGIN)[0])
        if self.trail:  # the long view, like the window, starts over where the track breaks (see track_window)
            t0, x0, y0, h0 = self.trail[-1]
            if jumped(h0, h, np.hypot(fx - x0, fy - y0), t - t0):
                self.trail.clear()
        if edge:
            self.trail.clear()
        else:
            self.trail.append((t, fx, fy, h))
        a = float(np.log(w / h))
        usual = a if self.aspect != self.aspect else self.aspect
        if not edge:
            self.seen += 1
            k = max(1.0 / self.seen, min(1.0, max(t - self.last, 0.0) / USUAL_S))
            self.aspect, self.last = usual + k * (a - usual), t
        return t - self.t, usual

    def long_view(self) -> tuple[float, float]:
        """Over the trail (the last TRAIL observations): the turn in radians between the travel of the last second
        and the last earlier second of travel ending 2 s or more ago (a reversal across a stop, a circle's turning),
        and how far the path of 1 s steps strays from a straight line (1 - net / path, a zig-zag or a circle; 0 for
        a path under 1.5 box heights). 0, 0 for a trail under 2 s."""
        if len(self.trail) < 2:
            return 0.0, 0.0
        t, x, y, h = np.array(self.trail).T
        if t[-1] - t[0] < 2.0:
            return 0.0, 0.0
        hm = float(np.median(h))
        p = np.stack([x, y], 1) / hm
        at = np.searchsorted(t, t[-1] - np.arange(0.0, t[-1] - t[0] + 1e-9, 1.0)[::-1], side="left")  # ~1 s apart
        steps = np.diff(p[at], axis=0)  # rising in time
        lengths = np.hypot(steps[:, 0], steps[:, 1])
        speed = lengths / np.maximum(np.diff(t[at]), 1e-3)
        turn = 0.0
        if speed[-1] > LONG_MOVING:
            earlier = np.flatnonzero(speed[:-2] > LONG_MOVING)  # a second of travel ending 2 s or more before now
            if len(earlier):
                a, b = steps[earlier[-1]], steps[-1]
                turn = abs(float(np.angle(np.exp(1j * (np.arctan2(b[1], b[0]) - np.arctan2(a[1], a[0]))))))
        path = float(lengths.sum())
        wander = 1.0 - float(np.hypot(*(p[at[-1]] - p[at[0]]))) / path if path > 1.5 else 0.0
        return turn, wander


def summary(win: np.ndarray, memory: np.ndarray) -> np.ndarray:
    """What each whole window did, oriented so that larger is always more unusual: [N, WINDOW, F] motion features and
    the tracks' `Memory` at the window's end [N, 4] (dwell seconds, usual log aspect, `Memory.long_view`) ->
    [N, len(SUMMARY_NAMES) - 1]. Median and peak speed; mean change of velocity (jerk); the total, net (signed) and
    sharpest heading change between 0.4 s chords while moving; how far the path strays from a straight line
    (1 - net displacement / path); how much wider than its usual the box is over the last 0.5 s (a fallen person is
    wide), the range of its aspect; log of the dwell; the long view's turn and wandering. (Not the box's shrinking: on
    a detector's boxes a walker passing behind someone shrinks faster than a fall.) An autoencoder rebuilds a steady
    sequence at any speed or a steady turn as easily as a walk; these are what running, circling, zig-zags, reversals
    and lingering change."""
    dt = 0.1  # nominal step (10 fps): chords in box heights
    pos = np.cumsum(win[..., :2] * dt, 1)  # [N, W, 2]
    chord = pos[:, CHORD:] - pos[:, :-CHORD]  # [N, W - CHORD, 2]
    clen = np.hypot(chord[..., 0], chord[..., 1])
    cspeed = clen / (CHORD * dt)
    heading = np.arctan2(chord[..., 1], chord[..., 0])
    turn = np.angle(np.exp(1j * (heading[:, CHORD:] - heading[:, :-CHORD])))  # [N, W - 2 CHORD]
    moving = (cspeed[:, CHORD:] > MOVING) & (cspeed[:, :-CHORD] > MOVING)  # a standing person's heading is noise
    turn = np.where(moving, turn, 0.0)
    path = clen[:, ::CHORD].sum(1)
    net = np.hypot(*(pos[:, -1] - pos[:, 0]).T)
    aspect = np.log(np.maximum(win[..., 6], 1e-3))
    return np.stack(
        [
            np.log(0.05 + np.median(cspeed, 1)),
            np.log(0.05 + cspeed.max(1)),
            np.log(0.05 + win[..., 3].mean(1)),
            np.abs(turn).sum(1) / CHORD,
            np.abs(turn.sum(1)) / CHORD,
            np.abs(turn).max(1),
            np.where(path > 0.3, 1 - net / np.maximum(path, 1e-6), 0.0),  # under 0.3 heights of path: not walking anywhere
            aspect[:, -5:].mean(1) - memory[:, 1],
            aspect.max(1) - aspect.min(1),
            np.log1p(memory[:, 0]),
            memory[:, 2],
            memory[:, 3],
        ],
        1,
    ).astype(np.float32)


@dataclass
class Tails:
    """How rare each summary value (and the autoencoder's error) is among normal windows: per feature, the values that
    normal training windows exceed with probabilities `probs`. A window's raw score is -log10 of the smallest of its
    features' exceedance probabilities (beyond the table, the last decade's slope carries on): whichever way a
    window is unusual, it counts, and each feature's scale is set by normal motion itself."""

    probs: np.ndarray  # [P] falling, e.g. 0.5 .. 1e-4
    values: np.ndarray  # [P, S] rising down the rows

    @staticmethod
    def fit(x: np.ndarray, floor: float = 1e-5) -> Tails:
        smallest = max(floor, 10.0 / len(x))  # no tail probability claimed beyond what ten windows show
        probs = np.logspace(np.log10(0.5), np.log10(smallest), 40)
        values = np.quantile(x.astype(np.float64), 1 - probs, axis=0)
        values = np.maximum.accumulate(values, 0) + 1e-9 * np.arange(len(probs))[:, None]  # strictly rising for interp
        return Tails(probs, values)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """[N, S] -> [N]: -log10 of the smallest exceedance probability of each window's features."""
        lp = -np.log10(self.probs)
        out = np.zeros(len(x))
        for j in range(self.values.shape[1]):
            v = self.values[:, j]
            s = np.interp(x[:, j], v, lp, left=0.0, right=np.nan)
            k = int(np.searchsorted(lp, lp[-1] - 1.0))  # a decade back along the table
            slope = (lp[-1] - lp[k]) / max(v[-1] - v[k], 1e-9)
            s = np.where(np.isnan(s), lp[-1] + slope * (x[:, j] - v[-1]), s)
            out = np.maximum(out, s)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"probs": self.probs.tolist(), "values": self.values.tolist()}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Tails:
        return Tails(np.array(d["probs"], np.float64), np.array(d["values"], np.float64))


@dataclass
class Calibration:
    """What the weights file's sidecar JSON says: feature normalisation, the normal tails and the threshold."""

    mean: np.ndarray
    std: np.ndarray
    threshold: float  # raw tail score exceeded by normal tuning windows at `false_alarm_rate`
    false_alarm_rate: float  # per scored window, on the tuning split
    scene: bool  # per-scene model: position features used
    frame_size: tuple[int, int] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    tails: Tails | None = None
    used: tuple[str, ...] = SUMMARY_NAMES  # the features the score looks at

    def features(self, win: np.ndarray, memory: np.ndarray, errors: np.ndarray) -> np.ndarray:
        """[N, len(SUMMARY_NAMES)]: the window summaries and the autoencoder's rebuild error."""
        return np.concatenate([summary(win, memory), np.asarray(errors, np.float32)[:, None]], 1)

    def score(self, feats: np.ndarray) -> np.ndarray:
        """The score the stage writes: the tail score over the threshold, 1 being exceeded by normal windows at
        `false_alarm_rate`."""
        return (self.raw(feats) / self.threshold).astype(np.float32)

    def raw(self, feats: np.ndarray) -> np.ndarray:
        """The tail score of the features the model uses."""
        assert self.tails is not None, "an uncalibrated model"
        return self.tails.raw(np.where(np.array([n not in self.used for n in SUMMARY_NAMES]), -np.inf, feats))

    @staticmethod
    def load(weights: Path) -> Calibration:
        data = json.loads(weights.with_suffix(".json").read_text())
        if "tails" not in data:
            raise ValueError(f"{weights.with_suffix('.json')}: no 'tails' (a model from before the summary features); retrain it with tools/train_anomaly.py")
        return Calibration(np.array(data["mean"], np.float32), np.array(data["std"], np.float32), float(data["threshold"]),
                           float(data["false_alarm_rate"]), bool(data["scene"]), tuple(data["frame_size"]) if data.get("frame_size") else None,
                           data.get("info", {}), Tails.from_json(data["tails"]), tuple(data.get("used", SUMMARY_NAMES)))  # fmt: skip

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Features in units of normal motion's spread, clipped at +-CLIP: a glitch box (a box that jumps) stays a
        large error instead of dominating every other window's scale."""
        return np.clip((x - self.mean) / self.std, -CLIP, CLIP).astype(np.float32)

    def save(self, weights: Path) -> None:
        data = {"mean": self.mean.tolist(), "std": self.std.tolist(), "threshold": self.threshold, "false_alarm_rate": self.false_alarm_rate,
                "scene": self.scene, "frame_size": list(self.frame_size) if self.frame_size else None, "info": self.info,
                "tails": self.tails.to_json() if self.tails else None, "used": list(self.used)}  # fmt: skip
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

    def __init__(
        self, weights: Path | str | None = None, backend: str = "auto", device: str = "cpu", forget_frames: int = 50, classes: set[int] | None = None
    ) -> None:
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
        self.classes = classes  # category ids scored; None: every tracked row
        self._tracks: dict[str, dict[int, tuple[deque[tuple[int, float, np.ndarray]], Memory]]] = {}

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
        seqs, memories, where = [], [], []
        for fi, (stream, seq, pts, d, size) in enumerate(frames):
            tracks = self._tracks.setdefault(stream, {})
            tracked = d.track_ids >= 0
            if self.classes is not None:
                tracked &= np.isin(d.class_ids, list(self.classes))
            for row in np.flatnonzero(tracked):
                hist, memory = tracks.setdefault(int(d.track_ids[row]), (deque(maxlen=WINDOW), Memory()))
                hist.append((seq, pts, d.boxes[row].copy()))
                before = memory.update(d.boxes[row], pts, size)
                if len(hist) >= MIN_OBSERVED:
                    win = track_window(np.stack([h[2] for h in hist]), np.array([h[1] for h in hist]), size, self.cal.scene)
                    if win is not None:
                        seqs.append(win)
                        memories.append((*before, *memory.long_view()))
                        where.append((fi, row))
            for tid in [t for t, (h, _) in tracks.items() if seq - h[-1][0] > self.forget_frames]:
                del tracks[tid]
        if seqs:
            x = np.stack(seqs)
            errors = self.cal.score(self.cal.features(x, np.array(memories, np.float64), self._errors(x)))
        else:
            errors = np.zeros(0, np.float32)
        out = []
        columns = [np.full(len(f[3]), np.nan, np.float32) for f in frames]
        for (fi, row), e in zip(where, errors):
            columns[fi][row] = e
        for (_, _, _, d, _), col in zip(frames, columns):
            out.append(Detections(d.boxes, d.scores, d.class_ids, d.track_ids, {**d.extra, ANOMALY_SCORE: col}, d.labels))
        return out
