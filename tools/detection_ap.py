"""Detection quality against hand-labelled frames: AP at IoU 0.5 (AP50), PASCAL VOC 2010+ style.

The labels are `tests/data/labels/detections.json` (format and labelling rules in the README next to it).

How a detection is scored, per class group (e.g. "vehicles" = bicycle, car, motorcycle, bus, truck,
class-agnostic inside the group: a car detected as a truck is still a vehicle found):

1. Per frame, detections are visited in decreasing score order. Each one takes the *unmatched, not
   ignored* ground-truth box of the group with the highest IoU, if that IoU is >= 0.5: a true positive.
2. Otherwise, if its IoU with any *ignored* ground-truth box of the group is >= 0.5, it is ignored:
   neither TP nor FP, and it is left out of the curve (like VOC's "difficult" objects). An ignored
   box can absorb any number of detections, and a detection prefers a real box to an ignored one
   (COCO's order), so a second detection on the occluded person behind a labelled one costs nothing.
3. Otherwise it is a false positive (this includes a second detection of an already matched box).

Ignored boxes are matched by IoU, not by intersection over the detection's area (the rule COCO keeps for
"crowd" boxes), because every ignored box in this label set is one object (the labels have no group
boxes): with intersection-over-detection a large ignored box (the out-of-focus cars filling bikes.mp4
frame 60) would also excuse any small spurious box inside it. A crowd box would need that rule.

AP is the area under the precision/recall curve with all-point interpolation (VOC 2010+, not VOC2007's
11 points and not COCO's 101 points): detections of all frames are ranked by score, precision is replaced
by its monotone envelope (the best precision at this recall or any higher one), and the envelope is
integrated over every recall step. Detections scoring the same are ranked in frame order (a stable sort).
A detector that never reaches some recall gets precision 0 there, so AP also counts what it misses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.boxes import box_iou
from pipeline.categories import GROUPS as CATEGORY_GROUPS
from pipeline.categories import category_id
from pipeline.detections import Detections
from pipeline.protocol import Frame
from stages.infer.detector import Detector

IOU_THRESHOLD = 0.5

# Class groups scored class-agnostically; per-class AP is the same with a one-class group.
GROUPS: dict[str, frozenset[str]] = {name: frozenset(names) for name, names in CATEGORY_GROUPS.items()}

# Outcome of each detection.
TP, FP, IGNORED = 1, 0, -1


class LabelMismatchError(ValueError):
    """A labelled frame does not decode to the image the labels were drawn on."""


@dataclass(frozen=True)
class LabelledFrame:
    video: str  # file name, e.g. "vtest.avi"
    frame_index: int  # 0-based count of cv2.VideoCapture.read() calls
    image: np.ndarray  # HxWx3 uint8 BGR, as decoded (sha256-checked against the labels)
    boxes: np.ndarray  # [N, 4] float32 x1, y1, x2, y2 in pixels (x2, y2 exclusive)
    classes: tuple[str, ...]  # [N] class name of each box
    ignore: np.ndarray  # [N] bool

    def ground_truth(self, classes: Collection[str]) -> "GroundTruth":
        """The boxes of these classes (one group)."""
        mask = np.array([c in classes for c in self.classes], dtype=bool).reshape(-1)
        return GroundTruth(self.boxes[mask], self.ignore[mask])


@dataclass(frozen=True)
class GroundTruth:
    """Ground-truth boxes of one frame and one class group."""

    boxes: np.ndarray  # [M, 4] x1, y1, x2, y2
    ignore: np.ndarray  # [M] bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", np.asarray(self.boxes, np.float64).reshape(-1, 4))
        object.__setattr__(self, "ignore", np.asarray(self.ignore, bool).reshape(-1))
        if len(self.ignore) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.ignore)} ignore flags")


@dataclass(frozen=True)
class Scored:
    """Detections of one frame and one class group."""

    boxes: np.ndarray  # [N, 4] x1, y1, x2, y2
    scores: np.ndarray  # [N]

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", np.asarray(self.boxes, np.float64).reshape(-1, 4))
        object.__setattr__(self, "scores", np.asarray(self.scores, np.float64).reshape(-1))
        if len(self.scores) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")


@dataclass(frozen=True)
class APResult:
    """AP50 of one class group, with the ranked curve it came from."""

    ap: float  # area under the interpolated precision/recall curve; nan when there is no ground truth
    n_gt: int  # ground-truth boxes that are not ignored
    n_dets: int  # detections counted (TP or FP)
    n_ignored: int  # detections that matched an ignored box
    best_f1: float  # the best F1 over all score thresholds
    best_f1_threshold: float  # the lowest score kept at that point (nan if no detection)
    best_f1_tp: int
    best_f1_fp: int
    recall_at_05: float  # recall of the detections scoring >= 0.5 (the pipeline's default threshold)
    precision_at_05: float  # nan when no detection scores >= 0.5
    # The ranked curve: scores (descending), cumulative TP and FP after each detection.
    scores: np.ndarray
    tp_cum: np.ndarray
    fp_cum: np.ndarray

    def at_threshold(self, threshold: float) -> tuple[int, int]:
        """(TP, FP) of the detections scoring >= threshold."""
        return _counts_at(self.scores, self.tp_cum, self.fp_cum, threshold)


def _counts_at(scores: np.ndarray, tp_cum: np.ndarray, fp_cum: np.ndarray, threshold: float) -> tuple[int, int]:
    k = int(np.searchsorted(-scores, -threshold, side="right"))  # scores are descending: >= threshold first
    return (int(tp_cum[k - 1]), int(fp_cum[k - 1])) if k else (0, 0)


def match_frame(dets: Scored, gt: GroundTruth, iou_threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """Outcome (TP, FP or IGNORED) of each detection of one frame, in the detections' order."""
    outcome = np.full(len(dets.scores), FP, dtype=np.int8)
    if not len(gt.boxes):
        return outcome
    iou = box_iou(dets.boxes, gt.boxes)
    ignored_hit = (iou[:, gt.ignore] >= iou_threshold).any(axis=1)
    iou = np.where(gt.ignore[None, :], -1.0, iou)  # real boxes only from here on
    taken = np.zeros(len(gt.boxes), dtype=bool)
    for d in np.argsort(-dets.scores, kind="stable"):  # greedy: the best detections choose first
        candidates = np.where(taken, -1.0, iou[d])
        g = int(np.argmax(candidates))
        if candidates[g] >= iou_threshold:
            outcome[d] = TP
            taken[g] = True
        elif ignored_hit[d]:
            outcome[d] = IGNORED
    return outcome


def average_precision(
    dets: Sequence[Scored], gts: Sequence[GroundTruth], iou_threshold: float = IOU_THRESHOLD
) -> APResult:
    """AP of one class group over frames: dets[i] and gts[i] belong to the same frame."""
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} frames of detections but {len(gts)} frames of ground truth")
    n_gt = int(sum((~g.ignore).sum() for g in gts))
    outcomes = np.concatenate([match_frame(d, g, iou_threshold) for d, g in zip(dets, gts)] + [np.zeros(0, np.int8)])
    scores = np.concatenate([d.scores for d in dets] + [np.zeros(0)])
    counted = outcomes != IGNORED
    order = np.argsort(-scores[counted], kind="stable")
    scores, is_tp = scores[counted][order], outcomes[counted][order] == TP
    tp_cum, fp_cum = np.cumsum(is_tp), np.cumsum(~is_tp)

    # Only the last detection of a run of equal scores is a point a threshold can select.
    cut = np.append(scores[1:] != scores[:-1], True) if len(scores) else np.zeros(0, bool)
    recall = tp_cum / max(n_gt, 1)
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
    f1 = np.where(cut, 2 * tp_cum / np.maximum(tp_cum + fp_cum + n_gt, 1), -1.0)
    best = int(np.argmax(f1)) if len(f1) else -1

    tp05, fp05 = _counts_at(scores, tp_cum, fp_cum, 0.5)
    return APResult(
        ap=_all_point_ap(recall, precision) if n_gt else float("nan"),
        n_gt=n_gt,
        n_dets=int(counted.sum()),
        n_ignored=int((~counted).sum()),
        best_f1=float(f1[best]) if best >= 0 else 0.0,
        best_f1_threshold=float(scores[best]) if best >= 0 else float("nan"),
        best_f1_tp=int(tp_cum[best]) if best >= 0 else 0,
        best_f1_fp=int(fp_cum[best]) if best >= 0 else 0,
        recall_at_05=tp05 / n_gt if n_gt else float("nan"),
        precision_at_05=tp05 / (tp05 + fp05) if tp05 + fp05 else float("nan"),
        scores=scores,
        tp_cum=tp_cum,
        fp_cum=fp_cum,
    )


def _all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope, summed over every recall step (VOC 2010+)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # envelope: best precision at this recall or beyond
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def select(det: Detections, classes: Collection[str]) -> Scored:
    """The detections of one frame whose category is in `classes`."""
    ids = np.array(sorted(category_id(c) for c in classes), dtype=np.int32)
    keep = np.isin(det.class_ids, ids)
    return Scored(det.boxes[keep], det.scores[keep])


def evaluate(
    frames: Sequence[LabelledFrame], detections: Sequence[Detections], classes: Collection[str]
) -> APResult:
    """AP50 of `detections` (one per labelled frame, in order) for one class group."""
    if len(frames) != len(detections):
        raise ValueError(f"{len(frames)} labelled frames but {len(detections)} detection results")
    return average_precision([select(d, classes) for d in detections], [f.ground_truth(classes) for f in frames])


def frame_sha256(image: np.ndarray) -> str:
    """What the labels store as frame_sha256: SHA-256 of the decoded BGR frame's bytes."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def read_frames(path: Path, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """Frames by 0-based index: cv2.VideoCapture.read() from the start, counting reads (never seeking)."""
    wanted = set(indices)
    last = max(wanted, default=-1)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    out: dict[int, np.ndarray] = {}
    try:
        for index in range(last + 1):
            ok, image = capture.read()
            if not ok:
                raise LabelMismatchError(f"{path.name} ends after {index} frames; the labels ask for frame {last}")
            if index in wanted:
                out[index] = image
    finally:
        capture.release()
    return out


def load_labels(path: str | Path, videos_dir: str | Path | None = None) -> list[LabelledFrame]:
    """The labelled frames of `path`, in file order, each with its decoded image.

    Every frame is decoded by sequential reads and its SHA-256 and size checked against the labels
    (LabelMismatchError otherwise), so boxes and frames cannot drift apart. Videos are looked up in
    `videos_dir`, by default in the first `sample_videos/` folder found above the labels file.
    """
    path = Path(path)
    data = json.loads(path.read_text())
    if data.get("version") != 1:
        raise ValueError(f"{path}: unsupported labels version {data.get('version')!r}")
    videos = Path(videos_dir) if videos_dir is not None else _find_videos_dir(path)

    wanted: dict[str, list[int]] = {}
    for entry in data["frames"]:
        wanted.setdefault(entry["video"], []).append(int(entry["frame_index"]))
    images = {video: read_frames(videos / video, indices) for video, indices in wanted.items()}

    frames = []
    for entry in data["frames"]:
        video, index = entry["video"], int(entry["frame_index"])
        image = images[video][index]
        where = f"{video} frame {index}"
        if image.shape[:2] != (entry["height"], entry["width"]):
            raise LabelMismatchError(
                f"{where}: decodes to {image.shape[1]}x{image.shape[0]}, labelled {entry['width']}x{entry['height']}"
            )
        if frame_sha256(image) != entry["frame_sha256"]:
            raise LabelMismatchError(
                f"{where}: the decoded frame's sha256 differs from the labelled frame's "
                f"(another decoder or OpenCV build?); its boxes may not line up"
            )
        objects = entry["objects"]
        for o in objects:
            category_id(o["class"])  # a typo in a class name fails here, not as a silently empty group
        image.setflags(write=False)
        frames.append(
            LabelledFrame(
                video=video,
                frame_index=index,
                image=image,
                boxes=np.array([o["box"] for o in objects], np.float32).reshape(-1, 4),
                classes=tuple(o["class"] for o in objects),
                ignore=np.array([bool(o.get("ignore", False)) for o in objects], bool),
            )
        )
    return frames


def _find_videos_dir(labels: Path) -> Path:
    for parent in labels.resolve().parents:
        if (parent / "sample_videos").is_dir():
            return parent / "sample_videos"
    raise FileNotFoundError(f"no sample_videos/ folder above {labels}; pass videos_dir")


def detect_frames(detector: Detector, frames: Sequence[LabelledFrame], batch_size: int = 8) -> list[Detections]:
    """Run a primary detector on the labelled frames, as the infer stage would (pipeline Frames, in batches)."""
    out: list[Detections] = []
    for start in range(0, len(frames), batch_size):
        batch = [
            Frame(
                stream=Path(f.video).stem,
                seq=f.frame_index,
                pts=0.0,
                capture_ts=0.0,
                width=f.image.shape[1],
                height=f.image.shape[0],
                image=f.image,
            )
            for f in frames[start : start + batch_size]
        ]
        out.extend(detector.detect(batch))
    return out
