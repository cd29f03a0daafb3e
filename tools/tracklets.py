"""Real training material for the tracker: COCO-SSD detections of a video, linked into short, safe tracklets.

The training scripts need real crops and real trajectories but there are no identity labels to learn from.
Detections of consecutive frames that overlap strongly, with confident scores and no rival candidate, are
almost surely the same object: linking only those gives short tracklets that are nearly free of identity
errors (at the price of breaking at every ambiguity, which is fine for training data).
Detections are cached per video and frame range, because the CNN is the slow part.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from pipeline.detections import Detections
from pipeline.protocol import Frame
from stages.track.association import iou_matrix

DEFAULT_CACHE = Path.home() / ".cache" / "vidpipe" / "detections"


@dataclass
class Tracklet:
    video: str
    class_id: int
    frames: np.ndarray  # [T] int, consecutive frame indices
    boxes: np.ndarray  # [T, 4] float32 xyxy pixels
    scores: np.ndarray  # [T] float32


def read_frames(video: Path, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR frame) for frames start..stop-1, read sequentially (no seeking, so indices are exact)."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {video}")
    try:
        i = 0
        while stop is None or i < stop:
            ok, img = cap.read()
            if not ok:
                break
            if i >= start:
                yield i, img
            i += 1
    finally:
        cap.release()


def _cache_path(video: Path, start: int, stop: int | None, score: float, cache_dir: Path) -> Path:
    digest = hashlib.sha256(video.read_bytes()).hexdigest()[:16]
    return cache_dir / f"{video.stem}-{digest}-{start}-{stop}-{score:.2f}.npz"


def detect_video(
    video: Path,
    start: int = 0,
    stop: int | None = None,
    score_threshold: float = 0.3,
    cache_dir: Path | None = DEFAULT_CACHE,
    batch: int = 8,
) -> list[Detections]:
    """COCO-SSD detections (bundled weights, CPU fp32) of frames start..stop-1, one Detections per frame."""
    video = Path(video)
    path = _cache_path(video, start, stop, score_threshold, cache_dir) if cache_dir else None
    if path is not None and path.exists():
        return load_detections(path)
    out = _detect(read_frames(video, start, stop), video.name, score_threshold, None, batch)
    if path is not None:
        save_detections(path, out)
    return out


def detect_frames(
    frames: list[np.ndarray],
    score_threshold: float,
    classes: list[str] | None = None,
    cache_dir: Path | None = None,
    batch: int = 8,
    tiles: int = 1,
) -> list[Detections]:
    """detect_video for frames held in memory (rendered, re-encoded), cached in `cache_dir` by their content and
    the settings; `tiles`: the detector's tiled inference (stages/infer/tiling.py)."""
    from stages.infer.tiling import SAME_OBJECT

    digest = hashlib.sha256(f"{score_threshold:.3f} {classes}".encode() + (f" tiles {tiles} same {SAME_OBJECT}".encode() if tiles > 1 else b""))
    for f in frames:
        digest.update(f.tobytes())
    path = cache_dir / f"frames-{digest.hexdigest()[:16]}.npz" if cache_dir else None
    if path is not None and path.exists():
        return load_detections(path)
    out = _detect(enumerate(frames), "frames", score_threshold, classes, batch, tiles)
    if path is not None:
        save_detections(path, out)
    return out


def _detect(
    frames: Iterable[tuple[int, np.ndarray]], name: str, score_threshold: float, classes: list[str] | None, batch: int, tiles: int = 1
) -> list[Detections]:
    from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions  # torch: only when detecting

    detector = CocoSsdDetector(CocoSsdOptions(device="cpu", precision="fp32", score_threshold=score_threshold, classes=classes, tiles=tiles))
    out: list[Detections] = []
    pending: list[Frame] = []

    def flush() -> None:
        out.extend(detector.detect(pending))
        pending.clear()

    for i, img in frames:
        pending.append(Frame(name, i, 0.0, 0.0, img.shape[1], img.shape[0], img))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return out


def save_detections(path: Path, dets: list[Detections]) -> None:
    """Per-frame detections (boxes, scores, classes) in one .npz, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = np.array([len(d) for d in dets], np.int64)
    joined = Detections.concat(dets)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, counts=counts, boxes=joined.boxes, scores=joined.scores, class_ids=joined.class_ids)
    tmp.replace(path)


def load_detections(path: Path) -> list[Detections]:
    z = np.load(path)
    ends = np.cumsum(z["counts"])
    starts = ends - z["counts"]
    return [Detections(z["boxes"][a:b], z["scores"][a:b], z["class_ids"][a:b]) for a, b in zip(starts, ends)]


def link_tracklets(
    dets: list[Detections],
    video: str = "",
    first_frame: int = 0,
    iou_min: float = 0.5,
    score_min: float = 0.6,
    margin: float = 0.2,
    min_length: int = 5,
    classes: tuple[int, ...] | None = None,
) -> list[Tracklet]:
    """Link confident detections of consecutive frames that are each other's unrivalled best IoU match.

    A link needs IoU >= iou_min, the same class, and no second candidate on either side within `margin`
    of the best IoU: where two objects could be confused the tracklet simply ends.
    """
    open_: dict[int, list[tuple[int, np.ndarray, float]]] = {}  # detection row in prev frame -> tracklet so far
    done: list[tuple[int, list[tuple[int, np.ndarray, float]]]] = []
    prev: Detections | None = None
    prev_rows = np.zeros(0, np.int64)
    for k, d in enumerate(dets):
        keep = d.scores >= score_min
        if classes is not None:
            keep &= np.isin(d.class_ids, classes)
        rows = np.flatnonzero(keep)
        cur_open: dict[int, list[tuple[int, np.ndarray, float]]] = {}
        linked_prev: set[int] = set()
        if prev is not None and len(prev_rows) and len(rows):
            iou = iou_matrix(prev.boxes[prev_rows], d.boxes[rows])
            same = prev.class_ids[prev_rows][:, None] == d.class_ids[rows][None, :]
            iou = np.where(same, iou, 0.0)
            for j in range(len(rows)):
                i = int(np.argmax(iou[:, j]))
                best = iou[i, j]
                if best < iou_min:
                    continue
                col = np.sort(iou[:, j])[::-1]
                row = np.sort(iou[i, :])[::-1]
                if (len(col) > 1 and col[1] > best - margin) or (len(row) > 1 and row[1] > best - margin):
                    continue  # ambiguous: end here rather than risk a swap
                pi = int(prev_rows[i])
                if pi in open_ and pi not in linked_prev:
                    linked_prev.add(pi)
                    cur_open[int(rows[j])] = open_[pi]
        for pi, track in open_.items():
            if pi not in linked_prev:
                done.append((int(prev.class_ids[pi]), track))  # type: ignore[union-attr]
        for r in rows:
            r = int(r)
            track = cur_open.setdefault(r, [])
            track.append((first_frame + k, d.boxes[r].copy(), float(d.scores[r])))
        open_ = cur_open
        prev, prev_rows = d, rows
    for pi, track in open_.items():
        done.append((int(prev.class_ids[pi]), track))  # type: ignore[union-attr]
    out = []
    for cid, track in done:
        if len(track) >= min_length:
            out.append(
                Tracklet(
                    video,
                    cid,
                    np.array([t[0] for t in track]),
                    np.stack([t[1] for t in track]).astype(np.float32),
                    np.array([t[2] for t in track], np.float32),
                )
            )
    out.sort(key=lambda t: (int(t.frames[0]), float(t.boxes[0, 0])))
    return out
