"""People on the ground: MoveNet on person crops where a detector lets them down.

Box detectors trained on COCO find people standing and walking; a person lying on the ground is often missed
altogether (COCO-SSD loses the generated CI clip's faller once the body tilts past about 45 degrees, even at score
0.05), so the person's track simply ends. `FallWatcher` looks where such tracks were: for `search_s` after a person
track seen for MIN_SEEN_S is lost away from the frame's edge and not behind someone in view (every SEARCH_EVERY
frames until found, then every frame) (a person who walked out of view is not searched), and on every tracked
person whose box is wider than tall, it runs the pose network (`stages.infer.pose`, MoveNet MultiPose Lightning)
on a square crop around the last box, all crops of a batch of frames in one call through the backend layer. A pose
found there, its body axis (head and shoulders to hips, knees and ankles) more than LYING_DEG from upright, is a
person lying: a lost track gets a row again (the pose's box, the track's id) and every examined person row gets the
column `pose.lying` (1 lying, 0 not; NaN: not examined). The analyze rule `fall` alerts when a track stays lying
for its minimum duration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    seq: int
    pts: float
    box: np.ndarray
    first: float  # pts it was first seen
    lost_since: float | None = None  # pts of the first frame it was missing from
    searched: int = -(10**9)  # seq of the last search
    found: bool = False  # lying where last searched: searched on every frame while so


class FallWatcher:
    """Keeps each stream's person tracks' last boxes; finds lying people where they were."""

    def __init__(self, backend: str = "auto", device: str = "cpu", search_s: float = 5.0, min_score: float = 0.25) -> None:
        from stages.infer.pose.runner import PoseEstimator

        self.pose = PoseEstimator(backend=backend, device=device, min_score=min_score)  # type: ignore[arg-type]
        self.backend: str = self.pose.backend
        self.search_s = search_s
        self._seen: dict[str, dict[int, _Seen]] = {}

    def end_stream(self, stream: str) -> None:
        self._seen.pop(stream, None)

    def step(self, frames: list[tuple[str, int, float, np.ndarray | None, Detections]]) -> list[Detections]:
        """(stream, seq, pts, BGR image, tracked detections) per frame, in order per stream -> the detections with
        `pose.lying`, and a row for each lost track found lying."""
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
                first = seen[tid].first if tid in seen else pts
                seen[tid] = _Seen(seq, pts, d.boxes[row].copy(), first)
                bw, bh = d.boxes[row, 2] - d.boxes[row, 0], d.boxes[row, 3] - d.boxes[row, 1]
                if bw > bh:
                    jobs.append((fi, row, tid, crop_box(d.boxes[row], w, h)))
            for tid, s in list(seen.items()):
                if tid in present:
                    continue
                s.lost_since = pts if s.lost_since is None else s.lost_since
                if pts - s.lost_since > self.search_s or near_edge(s.box, w, h) or s.pts - s.first < MIN_SEEN_S:
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
            for (fi, row, tid, c), people in zip(jobs, self.pose(crops)):
                hit = self._lying_person(people, c, frames[fi][4].boxes[row] if row is not None else self._seen[frames[fi][0]][tid].box)
                if row is not None:
                    lying[fi][row] = 0.0 if hit is None else 1.0
                    continue
                s = self._seen[frames[fi][0]][tid]
                s.found = hit is not None
                if hit is not None:
                    box, score = hit
                    found[fi].append((tid, box, score))
                    s.box, s.lost_since = box, frames[fi][2]  # searched from here on, for search_s more
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

    @staticmethod
    def _lying_person(people: object, crop: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, float] | None:
        """The strongest pose in the crop that lies near where the track was, if it is lying: (box in frame pixels,
        score)."""
        from stages.infer.pose.runner import Poses

        assert isinstance(people, Poses)
        size = max(last[2] - last[0], last[3] - last[1])
        foot = np.array([(last[0] + last[2]) / 2, last[3]])
        for kp, box, score in zip(people.keypoints, people.boxes, people.scores):
            b = box + np.array([crop[0], crop[1], crop[0], crop[1]], np.float32)
            centre = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
            if np.hypot(*(centre - foot)) > size:  # someone else in the crop
                continue
            if body_angle(kp) > LYING_DEG:
                return b, float(score)
        return None


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
    if not len(others):
        return False
    iw = np.clip(np.minimum(others[:, 2], box[2]) - np.maximum(others[:, 0], box[0]), 0, None)
    ih = np.clip(np.minimum(others[:, 3], box[3]) - np.maximum(others[:, 1], box[1]), 0, None)
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1.0)
    return bool((iw * ih / area).max() >= 1 / 3)


def near_edge(box: np.ndarray, w: int, h: int) -> bool:
    m = EDGE_FRACTION * min(w, h)
    return bool(box[0] <= m or box[1] <= m or box[2] >= w - m or box[3] >= h - m)


def _blank(col: np.ndarray, n: int) -> np.ndarray:
    """n rows of a column with nothing to say: NaN for floats, -1 for integer codes."""
    return np.full(n, np.nan if col.dtype.kind == "f" else -1, col.dtype)
