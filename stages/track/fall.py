"""People on the ground: MoveNet on person crops where a detector lets them down, and a learned fall classifier.

Box detectors trained on COCO find people standing and walking; a person lying on the ground is often missed
altogether (COCO-SSD loses the generated CI clip's faller once the body tilts past about 45 degrees, even at score
0.05), so the person's track simply ends. `FallWatcher` looks where such tracks were: for `search_s` after a person
track seen for MIN_SEEN_S is lost away from the frame's edge and not behind someone in view (every SEARCH_EVERY
frames until found, then every frame), and on every tracked person whose box is wider than tall, it runs the pose
network (`stages.infer.pose`, MoveNet MultiPose Lightning) on a square crop round the last box, all crops of a batch
of frames in one call through the backend layer. Each look is a `sighting`: the pose nearest the box's foot point,
its keypoints relative to the crop, its score, whether its body axis is more than LYING_DEG from upright. The fall
classifier (`build_fall_net`, a small temporal CNN over a track's last SEQ sightings, trained by tools/train_fall.py)
calls the person normal, falling or fallen; at or above the calibrated P(fallen) a lost track gets a row again (the
pose's box, the track's id), and every examined person row gets the column `pose.lying` (1 down, 0 not; NaN: not
examined). The analyze rule `fall` alerts when a track stays down for its minimum duration.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.boxes import box_ioa, near_frame_edge
from pipeline.categories import category_id
from pipeline.detections import Detections

POSE_LYING = "pose.lying"
PERSON = category_id("person")
LYING_DEG = 55.0  # body axis from vertical: a person bending or sitting stays under it
CROP_SCALE = 2.5  # crop side over the box's longer side: room for the body to have fallen either way
MIN_SEEN_S = 2.0  # a track seen for less is more likely a detector's flicker than a person who then fell
SEARCH_EVERY = 5  # frames between searches for a lost track not (yet) found lying: lying lasts; pose costs ~15 ms a crop
EDGE_FRACTION = 0.02  # of the frame's smaller side: a track last seen this near the edge may have walked out
UPPER = (0, 1, 2, 3, 4, 5, 6)  # nose, eyes, ears, shoulders
LOWER = (11, 12, 13, 14, 15, 16)  # hips, knees, ankles
KEYPOINT_MIN = 0.2
MIN_POSE_SCORE = 0.1  # the lowest MoveNet person score a sighting keeps (the classifier weighs the score itself)
SEQ = 4  # sightings the fall classifier looks at
FEATURES = 3 * 17 + 3  # per sighting: keypoints (x, y in crop sides from its centre, score), pose score, found, lying by angle
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "fall.pt"


def sighting(people: Any, crop: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
    """One look into a crop, as the fall classifier reads it: the pose nearest the reference box's foot point (within
    the box's size; none: zeros and found 0), its keypoints relative to the crop, its score, and whether its body
    axis is more than LYING_DEG from upright; with that pose's box in frame pixels (None: none) and score."""
    out = np.zeros(FEATURES, np.float32)
    size = max(ref[2] - ref[0], ref[3] - ref[1])
    foot = np.array([(ref[0] + ref[2]) / 2, ref[3]])
    side = max(crop[2] - crop[0], 1.0)
    centre = np.array([(crop[0] + crop[2]) / 2, (crop[1] + crop[3]) / 2])
    best, dist = None, float("inf")
    for kp, box, score in zip(people.keypoints, people.boxes, people.scores):
        c = np.array([(box[0] + box[2]) / 2 + crop[0], (box[1] + box[3]) / 2 + crop[1]])
        d = float(np.hypot(*(c - foot)))
        if d <= size and d < dist:
            best, dist = (kp, box, float(score)), d
    if best is None:
        return out, None, 0.0
    kp, box, score = best
    xy = (kp[:, :2] + crop[:2] - centre) / side
    out[: 3 * 17] = np.concatenate([xy, kp[:, 2:3]], 1).reshape(-1)
    out[-3], out[-2], out[-1] = score, 1.0, float(body_angle(kp) > LYING_DEG)
    return out, (box + np.array([crop[0], crop[1], crop[0], crop[1]], np.float32)).astype(np.float32), score


def build_fall_net(hidden: int = 32) -> Any:
    """The fall classifier as a torch module (imported here: the stage runs it on a CPU runtime without torch)."""
    import torch
    from torch import nn

    class FallNet(nn.Module):
        """[N, SEQ, FEATURES] sightings -> [N, 3] logits (normal, falling, fallen): two temporal convolutions, then
        the last sighting's state beside the mean over the sequence."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(nn.Conv1d(FEATURES, hidden, 3, padding=1), nn.ReLU(), nn.Conv1d(hidden, hidden, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(2 * hidden, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x.transpose(1, 2))
            return self.head(torch.cat([y[:, :, -1], y.mean(2)], 1))

    return FallNet()


@dataclass
class FallCalibration:
    """The weights file's sidecar JSON: the P(fallen) at or above which a person counts as down."""

    threshold: float
    info: dict[str, Any] = field(default_factory=dict)

    def save(self, weights: Path) -> None:
        weights.with_suffix(".json").write_text(json.dumps({"threshold": self.threshold, "info": self.info}, indent=1, sort_keys=True) + "\n")

    @staticmethod
    def load(weights: Path) -> FallCalibration:
        d = json.loads(weights.with_suffix(".json").read_text())
        return FallCalibration(float(d["threshold"]), d.get("info", {}))


def body_angle(keypoints: np.ndarray) -> float:
    """Degrees between the body's axis (mean of the visible upper keypoints to mean of the lower ones) and the
    vertical, NaN when either end has no keypoint scoring KEYPOINT_MIN."""
    up = keypoints[list(UPPER)]
    lo = keypoints[list(LOWER)]
    up, lo = up[up[:, 2] >= KEYPOINT_MIN], lo[lo[:, 2] >= KEYPOINT_MIN]
    if not len(up) or not len(lo):
        return float("nan")
    dx, dy = lo[:, 0].mean() - up[:, 0].mean(), lo[:, 1].mean() - up[:, 1].mean()
    return float(np.degrees(np.arctan2(abs(dx), abs(dy))))


@dataclass
class _Seen:
    pts: float
    box: np.ndarray
    first: float  # pts it was first seen
    lost_since: float | None = None  # pts of the first frame it was missing from
    searched: int = -(10**9)  # seq of the last search
    found: bool = False  # lying where last searched: searched on every frame while so
    looks: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=SEQ))  # the last sightings' features


class FallWatcher:
    """Keeps each stream's person tracks' last boxes and sightings; finds people down where they were."""

    def __init__(self, backend: str = "auto", device: str = "cpu", search_s: float = 5.0, min_score: float = MIN_POSE_SCORE,
                 weights: Path | str | None = None) -> None:  # fmt: skip
        from stages.infer.backend import compile_cached, file_key
        from stages.infer.pose.runner import PoseEstimator

        self.pose = PoseEstimator(backend=backend, device=device, min_score=min_score)  # type: ignore[arg-type]
        self.backend: str = self.pose.backend
        path = Path(weights or DEFAULT_WEIGHTS)
        self.cal = FallCalibration.load(path)

        def build() -> tuple[Any, list[Any]]:
            import torch

            net = build_fall_net()
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return net.eval(), [torch.zeros(2, SEQ, FEATURES)]

        key = file_key([path, Path(__file__)], f"fall seq={SEQ}")
        self.net = compile_cached(build, key=key, name="fall", backend=backend, device=device, cpu_default="onnxruntime")  # type: ignore[arg-type]
        self.search_s = search_s
        self._seen: dict[str, dict[int, _Seen]] = {}

    def end_stream(self, stream: str) -> None:
        self._seen.pop(stream, None)

    def classify(self, seqs: np.ndarray) -> np.ndarray:
        """[N, SEQ, FEATURES] sightings -> [N, 3] probabilities (normal, falling, fallen), one call."""
        if self.net.backend in ("onnxruntime", "openvino"):
            (logits,) = self.net(seqs.astype(np.float32))
            z = np.asarray(logits, np.float64)
        else:
            import torch

            (out,) = self.net(torch.from_numpy(seqs.astype(np.float32)))
            z = out.float().cpu().numpy().astype(np.float64)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def step(self, frames: list[tuple[str, int, float, np.ndarray | None, Detections]]) -> list[Detections]:
        """(stream, seq, pts, BGR image, tracked detections) per frame, in order per stream -> the detections with
        `pose.lying`, and a row for each lost track found down."""
        jobs: list[tuple[int, int | None, int, np.ndarray]] = []  # frame index, row (None: a lost track), track id, crop box
        for fi, (stream, seq, pts, image, d) in enumerate(frames):
            seen = self._seen.setdefault(stream, {})
            if image is None:  # no pixels came with it: nothing to look at
                continue
            h, w = image.shape[:2]
            present = set()
            for row in np.flatnonzero((d.track_ids >= 0) & (d.class_ids == PERSON)).tolist():
                tid = int(d.track_ids[row])
                present.add(tid)
                old = seen.get(tid)
                seen[tid] = _Seen(pts, d.boxes[row].copy(), old.first if old else pts, looks=old.looks if old else deque(maxlen=SEQ))
                bw, bh = d.boxes[row, 2] - d.boxes[row, 0], d.boxes[row, 3] - d.boxes[row, 1]
                if bw > bh:
                    jobs.append((fi, row, tid, crop_box(d.boxes[row], w, h)))
            for tid, s in list(seen.items()):
                if tid in present:
                    continue
                s.lost_since = pts if s.lost_since is None else s.lost_since
                if pts - s.lost_since > self.search_s or near_frame_edge(s.box, (w, h), EDGE_FRACTION)[0] or s.pts - s.first < MIN_SEEN_S:
                    del seen[tid]
                    continue
                if not s.found and hidden(s.box, d.boxes[d.class_ids == PERSON]):
                    continue  # behind someone in view: an occlusion, not a fall (crowds lose tracks so all the time)
                if s.found or seq - s.searched >= SEARCH_EVERY:
                    s.searched = seq
                    jobs.append((fi, None, tid, crop_box(s.box, w, h)))
        lying = [np.full(len(f[4]), np.nan, np.float32) for f in frames]
        found: list[list[tuple[int, np.ndarray, float]]] = [[] for _ in frames]
        if jobs:
            crops = [np.asarray(frames[fi][3])[int(c[1]) : int(c[3]), int(c[0]) : int(c[2])] for fi, _, _, c in jobs]
            looks = []
            for (fi, row, tid, c), people in zip(jobs, self.pose(crops)):
                s = self._seen[frames[fi][0]][tid]
                ref = frames[fi][4].boxes[row] if row is not None else s.box
                feat, box, score = sighting(people, c, ref)
                s.looks.append(feat)
                seq_ = list(s.looks)
                looks.append((np.stack([seq_[0]] * (SEQ - len(seq_)) + seq_), box, score))
            down = self.classify(np.stack([x for x, _, _ in looks]))[:, 2] >= self.cal.threshold
            for (fi, row, tid, _), (_, box, score), is_down in zip(jobs, looks, down.tolist()):
                if row is not None:
                    lying[fi][row] = float(is_down)
                    continue
                s = self._seen[frames[fi][0]][tid]
                s.found = bool(is_down and box is not None)
                if s.found and box is not None:
                    found[fi].append((tid, box, score))
                    s.lost_since = frames[fi][2]  # searched for search_s more, round the last box the detector gave
        out = []
        for (_, _, _, _, d), col, extra_rows in zip(frames, lying, found):
            d = Detections(d.boxes, d.scores, d.class_ids, d.track_ids, {**d.extra, POSE_LYING: col}, d.labels)
            if extra_rows:
                n = len(extra_rows)
                add = Detections(np.array([b for _, b, _ in extra_rows], np.float32), np.array([s for _, _, s in extra_rows], np.float32),
                                 np.full(n, PERSON, np.int32), np.array([t for t, _, _ in extra_rows], np.int64),
                                 {k: _blank(v, n) for k, v in d.extra.items() if k != POSE_LYING} | {POSE_LYING: np.ones(n, np.float32)},
                                 {k: list(v) for k, v in d.labels.items()})  # fmt: skip
                d = Detections.concat([d, add])
            out.append(d)
        return out


def crop_box(box: np.ndarray, w: int, h: int) -> np.ndarray:
    """A square of CROP_SCALE times the box's longer side round the box's foot point (a fall ends about there),
    moved inside the frame, as integers x1, y1, x2, y2."""
    side = min(CROP_SCALE * max(box[2] - box[0], box[3] - box[1], 16.0), w, h)
    cx, cy = (box[0] + box[2]) / 2, box[3]
    x1 = int(np.clip(cx - side / 2, 0, w - side))
    y1 = int(np.clip(cy - side / 2, 0, h - side))
    return np.array([x1, y1, x1 + int(side), y1 + int(side)], np.float32)


def hidden(box: np.ndarray, others: np.ndarray) -> bool:
    """Whether a third or more of the box lies under one of the other boxes."""
    return bool(len(others)) and bool(box_ioa(np.asarray(box, np.float64)[None], np.asarray(others, np.float64)).max() >= 1 / 3)


def _blank(col: np.ndarray, n: int) -> np.ndarray:
    """n rows of a column with nothing to say: NaN for floats, -1 for integer codes."""
    return np.full(n, np.nan if col.dtype.kind == "f" else -1, col.dtype)
