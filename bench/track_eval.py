"""Tracking quality: this project's CNN-LSTM tracker against ByteTrack and SORT, all fed the same detections.

    pip install --no-deps trackers==2.6.1 && pip install supervision==0.31.2 rich pydeprecate   # the baselines + TrackEval's metrics
    python bench/track_eval.py [--only NAME] [--out DIR]

Sequences:
  (a) semi-synthetic: real person and vehicle crops from the sample videos moving over real backgrounds,
      with crossings, occlusions, frame-rate changes, 10 and 25 fps, raw and H.264-encoded frames, and exact
      ground truth (tools/synthetic.py);
  (b) vtest.avi frames 0-N, every person boxed by hand with an identity (tests/data/tracks/);
  (c) all of vtest.avi for the line count only: every crossing of its line seen by eye (tests/data/analytics/).
Every sequence has a counting line with exact crossings: (a) the ground-truth tracks through the analyze
stage's counter, (b)/(c) the hand-labelled ones. Counts: our tracks through the same counter, the baselines'
through supervision's LineZone (what their users count with); scored as the count error per direction and as
crossings missed and extra, each counted crossing paired with a true one (`match_events`). A crossing the labeller
judged either way ((c)'s `optional_crossings`: one at the line's very end) is neither required nor forbidden.
Detections: the bundled COCO-SSD on every frame at score >= 0.1 (so ByteTrack's low-score stage has
something to work with), persons only (the ground truth of (b) has persons only, and the backgrounds of (a)
contain real parked vehicles that are not in its ground truth); `--tiles 2` runs the detector tiled
(`detector.tiles`, stages/infer/tiling.py: the whole frame and 2x2 overlapping tiles, for small people). Metrics: HOTA, IDF1, MOTA and ID switches
from `trackers.eval` (Roboflow's re-implementation of TrackEval, checked to match it). Ground-truth boxes
marked as ignored (visibility below 0.25: mostly hidden) neither count as misses, nor make a tracker box
that covers them count as a false positive (TrackEval's MOT17 distractor rule, which trackers.eval applies).
`--headroom` adds diagnoses, not trackers: ours with some boxes' appearance taken from the ground truth
(`ours_with_true_looks`), to show what a better appearance model could give, and on which boxes; and how often
stage 1 gives a box two tracks could take to the track of the person it shows, and what doing so always gives
(`SharedBoxes`, `ours_with_true_owners`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.categories import category_id  # noqa: E402
from pipeline.detections import Detections  # noqa: E402
from pipeline.protocol import Frame  # noqa: E402
from stages.analyze.geometry import Line  # noqa: E402
from stages.analyze.line_counter import LineCounter, anchors  # noqa: E402
from tools.tracklets import detect_frames  # noqa: E402

if TYPE_CHECKING:
    from stages.track.tracker import Stage1

PERSON = category_id("person")
MIN_VISIBILITY = 0.25
CACHE = Path.home() / ".cache" / "vidpipe" / "track_eval"
TILES = 1  # the detector's tiled inference (--tiles): 1, the whole frame only, as the pipeline by default
OVERRIDES: dict[str, Any] = {}  # --set KEY=VALUE: track options to try
TRACKS_DIR = ROOT / "tests" / "data" / "tracks"


def vtest_gt_path() -> Path:
    """The hand-labelled range that is there (vtest_0-N_gt.txt), the longest if several."""
    found = sorted(TRACKS_DIR.glob("vtest_0-*_gt.txt"), key=lambda p: int(p.stem.split("-")[1].split("_")[0]))
    if not found:
        raise FileNotFoundError(f"no vtest_0-N_gt.txt in {TRACKS_DIR}")
    return found[-1]


Crossing = tuple[int, str, float]  # frame, direction, where on the line (pixels from its start)


def _along(line: Line, points: np.ndarray) -> np.ndarray:
    """[N] pixels along `line` from its start of the points' projections onto it."""
    a, b = np.asarray(line.a, np.float64), np.asarray(line.b, np.float64)
    u = (b - a) / max(float(np.hypot(*(b - a))), 1e-9)
    return (np.asarray(points, np.float64).reshape(-1, 2) - a) @ u


@dataclass
class Sequence:
    name: str
    kind: str  # "synthetic" or "real"
    fps: float
    frames: list[np.ndarray]
    gt: np.ndarray | None  # rows: frame (0-based), id, x1, y1, x2, y2, visibility; None: counts only
    times: np.ndarray  # seconds of each frame
    line: Line
    crossings: dict[str, int]  # true crossings of `line` per direction
    events: list[Crossing]  # each true crossing
    optional: list[Crossing] = field(default_factory=list)  # crossings judged either way (at a line's end): never missed, never extra


def centre_line(size: tuple[int, int]) -> Line:
    """The synthetic sequences' counting line: down the middle of the picture, top to bottom. Its ends lie where
    nobody walks: a line ending on a path (it used to end at the far path) makes a walker's crossing hang on a pixel
    of their foot point, in the ground truth as in any tracker's boxes."""
    w, h = size
    return Line.load("centre", [[w / 2, 0], [w / 2, h]], size)


def line_events(rows: np.ndarray, times: np.ndarray, line: Line, frame_size: tuple[int, int] | None = None) -> list[Crossing]:
    """The analyze stage's line counter over track rows (frame, id, x1, y1, x2, y2): each crossing it counts, with
    where the track's feet are along the line then. On the ground-truth tracks (exact positions, hidden or not)
    they are the true crossings."""
    counter = LineCounter(line, frame_size=frame_size)
    events = []
    for f in range(len(times)):
        r = rows[rows[:, 0] == f]
        for tid, d in counter.update(f, float(times[f]), r[:, 1].astype(np.int64), r[:, 2:6]):
            box = r[r[:, 1] == tid][0, 2:6]
            events.append((f, d, float(_along(line, anchors(box[None]))[0])))
    return events


def _tally(events: list[Crossing]) -> dict[str, int]:
    return {d: sum(1 for _, e, _ in events if e == d) for d in ("in", "out")}


def _pair(a: np.ndarray, b: np.ndarray, fps: float, window_s: float, reach: float) -> np.ndarray:
    """[len(a)] which events (frame, place) of `a` pair one-to-one with one of `b` within `window_s` and `reach`."""
    from scipy.optimize import linear_sum_assignment

    hit = np.zeros(len(a), bool)
    if len(a) and len(b):
        dt = np.abs(a[:, None, 0] - b[None, :, 0]) / fps / window_s
        dx = np.abs(a[:, None, 1] - b[None, :, 1]) / reach
        ok = (dt <= 1) & (dx <= 1)
        rows, cols = linear_sum_assignment(np.where(ok, dt + dx, 1e6))
        hit[rows[ok[rows, cols]]] = True
    return hit


def match_events(found: list[Crossing], truth: list[Crossing], fps: float, window_s: float = 3.0, reach: float = 100.0,
                 optional: list[Crossing] | None = None) -> dict[str, int]:
    """Crossings missed and extra per direction, event by event: a counted crossing is right only if it pairs with a
    true crossing of the same direction within `window_s` (a crossing counted once its track is found again comes
    late) and `reach` pixels along the line (about a person's height in these scenes: someone else crossing
    elsewhere meanwhile is not it). Unlike the count difference, a missed crossing and an extra one in the same
    direction do not cancel. A counted crossing left over that pairs with an `optional` one (judged either way by
    whoever labelled it) is not extra; an optional crossing is never missed."""
    out = {}
    for d in ("in", "out"):
        a = np.array([(f, x) for f, e, x in found if e == d], np.float64).reshape(-1, 2)
        b = np.array([(f, x) for f, e, x in truth if e == d], np.float64).reshape(-1, 2)
        c = np.array([(f, x) for f, e, x in optional or [] if e == d], np.float64).reshape(-1, 2)
        right = _pair(a, b, fps, window_s, reach)
        either = _pair(a[~right], c, fps, window_s, reach)
        out[f"{d}_missed"], out[f"{d}_extra"] = len(b) - int(right.sum()), int((~either).sum())
    return out


def count_off(counted: dict[str, int], truth: dict[str, int], optional: list[Crossing] | None = None) -> dict[str, int]:
    """Per direction, how many crossings the count is over (+) or under (-) the true ones; a count anywhere from the
    sure crossings to the sure plus the `optional` ones is exact (0)."""
    off = {}
    for d in ("in", "out"):
        most = truth[d] + sum(1 for _, e, _ in optional or [] if e == d)
        off[d] = counted[d] - most if counted[d] > most else min(counted[d] - truth[d], 0)
    return off


def synthetic_sequences(only: str | None, tuning: bool | int = False) -> list[Sequence]:
    """The evaluation sequences, or with `tuning` (True or a round number) a tuning set."""
    from tools.synthetic import evaluation_specs, make_sequence, sprite_bank, tuning_specs

    bank = sprite_bank(ROOT)
    out = []
    for spec in tuning_specs(int(tuning)) if tuning else evaluation_specs():
        if only and only != spec.name:
            continue
        seq = make_sequence(spec, bank)
        gt = seq.gt[seq.gt[:, 7] == PERSON][:, :7]
        line = centre_line(spec.size)
        events = line_events(gt[:, :6], seq.times, line)
        out.append(Sequence(spec.name, "synthetic", spec.fps, seq.frames, gt, seq.times, line, _tally(events), events))
    return out


def _vtest_line() -> tuple[Line, list[dict], list[dict]]:
    """The hand-labelled line of vtest.avi, every crossing of it seen by eye, and those judged either way (at the
    line's end: `optional_crossings`) (tests/data/analytics/)."""
    events = json.loads((ROOT / "tests" / "data" / "analytics" / "vtest_events.json").read_text())
    g = events["geometry"]["lines"][0]
    return Line.load(g["name"], [g["a"], g["b"]], (768, 576)), events["crossings"], events.get("optional_crossings", [])


def _seen_events(line: Line, seen: list[dict], frames: int) -> list[Crossing]:
    """The crossings seen by eye before frame `frames`; each is labelled with the height where it passed the (upright) line."""
    x = float(line.a[0])
    return [(int(c["frame"]), str(c["direction"]), float(_along(line, np.array([x, c["y_at_line"]]))[0])) for c in seen if c["frame"] < frames]


def vtest_sequence() -> Sequence:
    from tools.tracklets import read_frames

    path = vtest_gt_path()
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    n = int(rows[:, 0].max())
    frames = [img for _, img in read_frames(ROOT / "sample_videos" / "vtest.avi", 0, n)]
    gt = np.column_stack([rows[:, 0] - 1, rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4], rows[:, 3] + rows[:, 5], rows[:, 8]])
    line, seen, either = _vtest_line()
    events = _seen_events(line, seen, len(frames))
    return Sequence(path.stem.removesuffix("_gt"), "real", 10.0, frames, gt, np.arange(len(frames)) / 10.0, line, _tally(events), events,
                    _seen_events(line, either, len(frames)))


def vtest_line_sequence() -> Sequence:
    """All of vtest.avi, for the line count only (identities are labelled for 0-299 only)."""
    from tools.tracklets import read_frames

    frames = [img for _, img in read_frames(ROOT / "sample_videos" / "vtest.avi", 0, 10_000)]
    line, seen, either = _vtest_line()
    events = _seen_events(line, seen, len(frames))
    return Sequence("vtest_line", "real", 10.0, frames, None, np.arange(len(frames)) / 10.0, line, _tally(events), events,
                    _seen_events(line, either, len(frames)))


def detect(seq: Sequence) -> tuple[list[Detections], float]:
    """COCO-SSD persons at score >= 0.1 on every frame (cached by the frames' content: the detector is the slow
    part of a run); also the detector's mean ms per frame (batch 1)."""
    from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions

    out = detect_frames(seq.frames, 0.1, ["person"], CACHE, tiles=TILES)
    det = CocoSsdDetector(CocoSsdOptions(device="cpu", score_threshold=0.1, classes=["person"], tiles=TILES))
    timed = seq.frames[:: max(1, len(seq.frames) // 20)]
    t0 = time.perf_counter()
    for i, f in enumerate(timed):
        det.detect([Frame(seq.name, i, 0.0, 0.0, f.shape[1], f.shape[0], f)])
    return out, (time.perf_counter() - t0) / len(timed) * 1000


# -- the trackers, each: (frames, detections, fps) -> rows (frame, id, x1, y1, x2, y2) -----------

TrackFn = Callable[[Sequence, list[Detections]], np.ndarray]


def _rows(tracked: list[Detections]) -> np.ndarray:
    """Tracked frames as rows (frame, id, x1, y1, x2, y2) of their confirmed tracks."""
    rows = [(i, t, *b) for i, d in enumerate(tracked) for b, t in zip(d.boxes, d.track_ids) if t >= 0]
    return np.array(rows, np.float64).reshape(-1, 6)


def ours(motion: str = "lstm", appearance: bool = True) -> TrackFn:
    def run(seq: Sequence, dets: list[Detections]) -> np.ndarray:
        from stages.track.stage import TrackOptions
        from tools.track_sequence import track_sequence

        options = TrackOptions(motion=motion, appearance=appearance, classes=["person"], **OVERRIDES)
        return _rows(track_sequence(seq.frames, dets, options))

    return run


def true_looks(seq: Sequence, encoder: Any) -> dict[int, np.ndarray]:
    """How each ground-truth person looks when nobody else is near: the mean embedding of up to 10 of their boxes
    that touch no other person's, at visibility >= 0.9 (persons never so seen have none)."""
    from stages.track.association import iou_matrix

    gt = seq.gt
    assert gt is not None
    looks: dict[int, np.ndarray] = {}
    for pid in np.unique(gt[:, 1]).astype(int):
        alone = []
        for row in gt[(gt[:, 1] == pid) & (gt[:, 6] >= 0.9)]:
            others = gt[(gt[:, 0] == row[0]) & (gt[:, 1] != pid), 2:6]
            if not len(others) or iou_matrix(row[None, 2:6], others).max() == 0:
                alone.append(row)
        if alone:
            pick = alone[:: max(1, len(alone) // 10)][:10]
            e = np.concatenate(encoder.embed([seq.frames[int(r[0])] for r in pick], [r[None, 2:6] for r in pick])).mean(0)
            looks[pid] = (e / np.linalg.norm(e)).astype(np.float32)
    return looks


def ours_with_true_looks(boxes: str) -> TrackFn:
    """A diagnosis, not a tracker: ours with the appearance of some boxes taken from the ground truth, to show how
    much a better appearance model could give and where. Each such box is embedded as the person it overlaps most
    looks alone (`true_looks`). `boxes`: "pairs", the boxes that hold two people (`box_people`), or "all"."""

    def run(seq: Sequence, dets: list[Detections]) -> np.ndarray:
        from stages.track.stage import TrackOptions, embed_rows
        from tools.synthetic import box_people
        from tools.track_sequence import track_sequence

        gt = seq.gt
        assert gt is not None
        looks: dict[int, np.ndarray] = {}

        def embed(tracker: Any, encoder: Any, images: list, detections: list[Detections], frames: list) -> list:
            if not looks:
                looks.update(true_looks(seq, encoder))
            out = embed_rows(tracker, encoder, images, detections, frames)
            for e, d, (_, f) in zip(out, detections, frames):
                if e is None:
                    continue
                g = gt[gt[:, 0] == f]
                for r in np.flatnonzero(~np.isnan(e).any(axis=1)):
                    who = box_people(g, d.boxes[r])
                    if who is not None and who.owner in looks and (boxes == "all" or who.other is not None):
                        e[r] = looks[who.owner]
            return out

        return _rows(track_sequence(seq.frames, dets, TrackOptions(classes=["person"], **OVERRIDES), embed=embed))

    return run


def pair_looks(seq: Sequence, dets: list[Detections]) -> tuple[int, int]:
    """Of the detections (score >= 0.3) that hold two people, how many embed nearer the look of the one they overlap
    most than the other's (`true_looks`), and of how many: what `ours_with_true_looks("pairs")` makes perfect."""
    from stages.track.stage import TrackOptions, build_tracker
    from tools.synthetic import box_people

    encoder = build_tracker(TrackOptions(classes=["person"], **OVERRIDES), "cpu")[1]
    looks = true_looks(seq, encoder)
    gt = seq.gt
    assert gt is not None
    right = total = 0
    for f, d in enumerate(dets):
        g = gt[gt[:, 0] == f]
        pairs = [(r, who.owner, who.other) for r in np.flatnonzero(d.scores >= 0.3) if (who := box_people(g, d.boxes[r])) is not None
                 and who.other is not None and who.owner in looks and who.other in looks]
        if not pairs:
            continue
        emb = encoder.embed([seq.frames[f]], [d.boxes[[r for r, _, _ in pairs]]])[0]
        for e, (_, owner, other) in zip(emb, pairs):
            right += int(e @ looks[owner] > e @ looks[int(other)])
            total += 1
    return right, total


class SharedBoxes:
    """A diagnosis of stage 1 from the ground truth: the confident boxes two or more tracks could take (a shared box),
    whose owner (`box_people`: the person it overlaps most) is followed by one of those tracks; a track follows the
    person of its last box that held nobody else. Counts how often the owner's track is the one the tracker's costs,
    the IoU with the predicted boxes alone, or the appearance distance alone would pick; with `force`, it also hands
    every such box to the owner's track (the others may not take it), to show what right decisions there would give."""

    def __init__(self, gt: np.ndarray, force: bool = False) -> None:
        self.gt, self.force = gt, force
        self.follows: dict[int, int] = {}  # track id -> the person it follows
        self.counts = {"boxes": 0, "cost": 0, "iou": 0, "appearance": 0}

    def stage1(self, view: Stage1) -> np.ndarray | None:
        from stages.track.association import INFEASIBLE
        from tools.synthetic import box_people

        g = self.gt[self.gt[:, 0] == view.frame]
        cost = view.cost.copy() if self.force else view.cost  # only a forced run changes the costs
        for j in range(len(view.rows)):
            cand = np.flatnonzero(view.cost[:, j] < INFEASIBLE)
            who = box_people(g, view.boxes[j]) if len(cand) >= 2 else None
            people = [self.person(view.tracks[i].track_id) for i in cand]
            if who is None or people.count(who.owner) != 1:
                continue
            right = cand[people.index(who.owner)]
            dist = np.inf if view.distance is None else np.where(np.isnan(view.distance[cand, j]), np.inf, view.distance[cand, j])
            self.counts["boxes"] += 1
            self.counts["cost"] += int(cand[np.argmin(view.cost[cand, j])] == right)
            self.counts["iou"] += int(cand[np.argmax(view.iou[cand, j])] == right)
            self.counts["appearance"] += int(view.distance is not None and cand[np.argmin(dist)] == right)
            if self.force:
                cost[cand[cand != right], j] = INFEASIBLE
        return cost if self.force else None

    def person(self, track_id: int) -> int | None:
        """Whom a track follows."""
        return self.follows.get(track_id)

    def frame(self, f: int, tracked: Detections) -> None:
        from tools.synthetic import box_people

        g = self.gt[self.gt[:, 0] == f]
        for box, tid in zip(tracked.boxes, tracked.track_ids):
            who = box_people(g, box) if tid >= 0 else None
            if who is not None and who.other is None:
                self.follows[int(tid)] = who.owner


def shared_boxes(seq: Sequence, dets: list[Detections], force: bool = False) -> tuple[np.ndarray, dict[str, int]]:
    """Our default tracker run under `SharedBoxes`: its rows and the diagnosis's counts."""
    from stages.track.stage import TrackOptions
    from tools.track_sequence import track_sequence

    assert seq.gt is not None
    diag = SharedBoxes(seq.gt, force)
    tracked = track_sequence(seq.frames, dets, TrackOptions(classes=["person"], **OVERRIDES), stage1_hook=diag.stage1, on_frame=diag.frame)
    return _rows(tracked), diag.counts


def ours_with_true_owners(seq: Sequence, dets: list[Detections]) -> np.ndarray:
    """A diagnosis, not a tracker: ours with every shared box handed to its owner's track (`SharedBoxes`)."""
    return shared_boxes(seq, dets, force=True)[0]


def baseline(name: str) -> TrackFn:
    def run(seq: Sequence, dets: list[Detections]) -> np.ndarray:
        import supervision as sv
        from trackers import ByteTrackTracker, SORTTracker

        # Same life span as ours: a lost track is kept 30 frames (frame_rate 30 means no rescaling).
        tracker: Any = ByteTrackTracker(lost_track_buffer=30, frame_rate=30.0) if name == "bytetrack" else SORTTracker(lost_track_buffer=30, frame_rate=30.0)
        rows = []
        for i, d in enumerate(dets):
            sd = sv.Detections(xyxy=d.boxes.astype(np.float32), confidence=d.scores.astype(np.float32), class_id=d.class_ids.astype(int))
            out = tracker.update(sd)
            for b, t in zip(out.xyxy, out.tracker_id):
                if t >= 0:
                    rows.append((i, t, *b))
        return np.array(rows, np.float64).reshape(-1, 6)

    return run


TRACKERS: dict[str, TrackFn] = {
    "ours, LSTM + appearance": ours(),
    "ours, LSTM only": ours(appearance=False),
    "ours, Kalman + appearance": ours(motion="kalman"),
    "ours, Kalman only": ours(motion="kalman", appearance=False),
    "ByteTrack (trackers 2.6.1)": baseline("bytetrack"),
    "SORT (trackers 2.6.1)": baseline("sort"),
}


def default_name() -> str:
    """The row of the tracker as configured by default (TrackOptions' own motion default)."""
    from stages.track.stage import TrackOptions

    return {"lstm": "ours, LSTM + appearance", "kalman": "ours, Kalman + appearance"}[TrackOptions().motion]


# -- scoring ----------------------------------------------------------------------------------


def linezone_events(seq: Sequence, rows: np.ndarray) -> list[Crossing]:
    """supervision's LineZone (the feet: bottom centre), what a supervision user counts with: each crossing it
    counts, (frame, direction)."""
    import supervision as sv

    zone = sv.LineZone(start=sv.Point(*seq.line.a), end=sv.Point(*seq.line.b), triggering_anchors=[sv.Position.BOTTOM_CENTER])
    events = []
    for f in range(len(seq.frames)):
        r = rows[rows[:, 0] == f]
        if len(r):
            came_in, went_out = zone.trigger(sv.Detections(xyxy=r[:, 2:6].astype(np.float32), tracker_id=r[:, 1].astype(int), class_id=np.zeros(len(r), int)))
            # LineZone's `in` is ours: crossing from the right of start -> end to its left.
            at = _along(seq.line, anchors(r[:, 2:6]))
            events += [(f, "in", float(x)) for x in at[came_in]] + [(f, "out", float(x)) for x in at[went_out]]
    return events


def _mot_lines(rows: np.ndarray, classes: np.ndarray | None = None) -> str:
    classes = np.full(len(rows), -1) if classes is None else classes
    return "".join(
        f"{int(f) + 1},{int(i)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,{int(c)},-1,-1\n"
        for (f, i, x1, y1, x2, y2), c in zip(rows, classes)
    )


def switch_kinds(gt: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """ID switches by kind, from a CLEAR-style matching (IoU >= 0.5, a person's previous id kept while it still
    matches): `swap near` (the id was last on another person who overlaps this one now: a crossing), `swap far`
    (that person is elsewhere or gone: a re-identification or a drift), `back` (an id this person had before: the
    other half of an excursion) and `new` (a track born within 3 frames: the old one was lost)."""
    from scipy.optimize import linear_sum_assignment

    from stages.track.association import iou_matrix

    last: dict[int, int] = {}
    owner: dict[int, int] = {}
    born: dict[int, int] = {}
    for f, tid in pred[:, :2].astype(int):
        born.setdefault(int(tid), int(f))
    kinds = {"swap near": 0, "swap far": 0, "back": 0, "new": 0}
    for f in range(int(gt[:, 0].max()) + 1):
        g = gt[(gt[:, 0] == f) & (gt[:, 6] >= MIN_VISIBILITY)]
        p = pred[pred[:, 0] == f]
        if not len(g) or not len(p):
            continue
        iou = iou_matrix(g[:, 2:6], p[:, 2:6])
        kept = np.array([[last.get(int(a)) == int(b) for b in p[:, 1]] for a in g[:, 1]])
        rows, cols = linear_sum_assignment(-np.where(iou >= 0.5, iou + 1000.0 * kept, 0.0))
        for i, j in zip(rows, cols):
            if iou[i, j] < 0.5:
                continue
            gid, pid = int(g[i, 1]), int(p[j, 1])
            if gid in last and last[gid] != pid:
                if pid in owner and owner[pid] != gid:
                    other = g[g[:, 1] == owner[pid]]
                    near = len(other) and iou_matrix(g[i : i + 1, 2:6], other[:, 2:6])[0, 0] > 0.1
                    kinds["swap near" if near else "swap far"] += 1
                else:
                    kinds["new" if pid not in owner and f - born[pid] <= 3 else "back"] += 1
            last[gid], owner[pid] = pid, gid
    return kinds


def score(gt: np.ndarray, pred: np.ndarray, work: Path, name: str) -> dict[str, float]:
    from trackers.eval import evaluate_mot_sequence

    # Ignored ground truth goes in as MOT class 8 (distractor): not scored, and a tracker box on it is
    # removed before scoring, as TrackEval does for MOT17.
    classes = np.where(gt[:, 6] < MIN_VISIBILITY, 8, 1)
    g, p = work / f"{name}-gt.txt", work / f"{name}-pred.txt"
    g.write_text(_mot_lines(gt[:, :6], classes))
    p.write_text(_mot_lines(pred))
    if not pred.size:
        return {"HOTA": 0.0, "IDF1": 0.0, "MOTA": 0.0, "IDSW": 0}
    r = evaluate_mot_sequence(g, p, metrics=["CLEAR", "HOTA", "Identity"])
    return {"HOTA": 100 * r.HOTA.HOTA, "IDF1": 100 * r.Identity.IDF1, "MOTA": 100 * r.CLEAR.MOTA, "IDSW": int(r.CLEAR.IDSW)}


def _shared_line(c: dict[str, int]) -> str:
    n = max(c["boxes"], 1)
    return (f"shared boxes (stage 1, 2+ tracks could take them, their owner followed by one): {c['boxes']}; the owner's track "
            f"picked by the costs {100 * c['cost'] / n:.1f}%, by IoU alone {100 * c['iou'] / n:.1f}%, by appearance alone {100 * c['appearance'] / n:.1f}%")


def _missed_extra(rs: list[dict[str, float]]) -> str:
    """Crossings missed and extra per direction, matched event by event (`match_events`), e.g. 'in -2+1 out -0+0'."""
    return " ".join(f"{d} -{sum(int(r[d + '_missed']) for r in rs)}+{sum(int(r[d + '_extra']) for r in rs)}" for d in ("in", "out"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="one sequence by name")
    ap.add_argument("--trackers", help="comma-separated substrings of tracker names to run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tuning", nargs="?", type=int, const=1, default=0, metavar="ROUND",
                    help="the tuning sequences (other seeds; no vtest) instead; ROUND 2: a second set with its own seeds")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a track option for our tracker (YAML value)")
    ap.add_argument("--tiles", type=int, default=1, help="the detector's tiles (detector.tiles): 2 also detects on 2x2 overlapping tiles")
    ap.add_argument("--switches", action="store_true", help="also print each tracker's ID switches by kind (see switch_kinds)")
    ap.add_argument("--headroom", action="store_true", help="also run ours with the appearance of two-person boxes, then of "
                    "all boxes, from the ground truth: a diagnosis of what a better appearance model could give (ours_with_true_looks); "
                    "and with every box two tracks could take handed to its owner's, after counting how often each cue gets it right (SharedBoxes)")
    args = ap.parse_args()
    import torch
    import yaml

    for item in args.set:
        key, _, value = item.partition("=")
        OVERRIDES[key] = yaml.safe_load(value)

    torch.set_num_threads(args.threads)
    global TILES
    TILES = args.tiles
    seqs = synthetic_sequences(args.only, args.tuning)
    if not args.tuning and (not args.only or args.only.startswith("vtest")):
        seqs += [vtest_sequence(), vtest_line_sequence()]
    # Diagnoses from the ground truth: run only where a sequence has it.
    diagnoses = {"ours + true looks of pairs": ours_with_true_looks("pairs"), "ours + true looks of all": ours_with_true_looks("all"),
                 "ours + true owners of shared": ours_with_true_owners} if args.headroom else {}
    trackers = TRACKERS | diagnoses
    chosen = {k: v for k, v in trackers.items() if not args.trackers or any(s in k for s in args.trackers.split(","))}
    default = default_name()
    results: dict[tuple[str, str], dict[str, float]] = {}
    pair_counts: list[tuple[int, int]] = []  # --headroom: two-person boxes embedded nearer their own person, of all
    shared_counts: list[dict[str, int]] = []  # --headroom: shared boxes, and how often each cue picks the owner's track
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seq in seqs:
            dets, det_ms = detect(seq)
            people = f"{len(np.unique(seq.gt[seq.gt[:, 6] >= MIN_VISIBILITY, 1]))} people, " if seq.gt is not None else "line count only, "
            truth = seq.crossings
            print(f"\n{seq.name} ({seq.kind}): {len(seq.frames)} frames, {people}"
                  f"{sum(len(d) for d in dets)} detections; detector {det_ms:.1f} ms/frame; line crossings in/out {truth['in']}/{truth['out']}"
                  + (f" (and {_tally(seq.optional)['in']}/{_tally(seq.optional)['out']} judged either way: counted or not, no error)" if seq.optional else ""))
            print(f"  {'tracker':30s} {'HOTA':>6s} {'IDF1':>6s} {'MOTA':>6s} {'IDSW':>5s} {'ms/frame':>9s}  {'count in/out':>12s} {'error':>5s} {'in/out':>7s}  missed-extra")
            if args.headroom and seq.gt is not None:
                right, total = pair_looks(seq, dets)
                pair_counts.append((right, total))
                print(f"  two-person boxes: {right} of {total} ({100 * right / max(total, 1):.1f}%) embed nearer the person they overlap most than the other")
                shared_counts.append(shared_boxes(seq, dets)[1])
                print("  " + _shared_line(shared_counts[-1]))
            for name, fn in chosen.items():
                if seq.gt is None and name in diagnoses:
                    continue
                t0 = time.perf_counter()
                pred = fn(seq, dets)
                ms = (time.perf_counter() - t0) / len(seq.frames) * 1000
                r: dict[str, float] = score(seq.gt, pred, work, f"{seq.name}-{len(results)}") if seq.gt is not None else {}
                found = (line_events(pred, seq.times, seq.line, (seq.frames[0].shape[1], seq.frames[0].shape[0])) if name.startswith("ours")
                         else linezone_events(seq, pred))
                counted = _tally(found)
                r["in"], r["out"] = counted["in"], counted["out"]
                off = count_off(counted, truth, seq.optional)
                r["count_error"] = abs(off["in"]) + abs(off["out"])
                r.update(match_events(found, seq.events, seq.fps, optional=seq.optional))
                results[(seq.name, "truth")] = {"in": truth["in"], "out": truth["out"]}
                results[(seq.name, name)] = r
                mark = " *" if name == default else ""
                metrics = f"{r['HOTA']:6.1f} {r['IDF1']:6.1f} {r['MOTA']:6.1f} {int(r['IDSW']):5d}" if seq.gt is not None else f"{'':6s} {'':6s} {'':6s} {'':5s}"
                signed = f"{off['in']:+d}/{off['out']:+d}"
                print(f"  {name + mark:30s} {metrics} {ms:9.2f}  {int(r['in']):5d}/{int(r['out']):<6d} {int(r['count_error']):5d} {signed:>7s}  {_missed_extra([r])}")
                if args.switches and seq.gt is not None:
                    print("      ID switches: " + ", ".join(f"{k} {v}" for k, v in switch_kinds(seq.gt, pred).items()))
    synth = [s.name for s in seqs if s.kind == "synthetic"]
    if len(synth) > 1:
        print(f"\nmean over the {len(synth)} synthetic sequences (IDSW and count errors summed; missed-extra: crossings"
              f" missed and extra per direction, matched event by event within 3 s); * the default")
        for name in chosen:
            rs = [results[(s, name)] for s in synth]
            mark = " *" if name == default else ""
            print(f"  {name + mark:30s} {np.mean([r['HOTA'] for r in rs]):6.1f} {np.mean([r['IDF1'] for r in rs]):6.1f} "
                  f"{np.mean([r['MOTA'] for r in rs]):6.1f} {sum(int(r['IDSW']) for r in rs):5d} {'':9s}  {'':12s} {sum(int(r['count_error']) for r in rs):5d}"
                  f"          {_missed_extra(rs)}")
    if pair_counts:
        right, total = (sum(c[i] for c in pair_counts) for i in (0, 1))
        print(f"\ntwo-person boxes, all sequences: {right} of {total} ({100 * right / max(total, 1):.1f}%) embed nearer the person they overlap most")
        print("all sequences: " + _shared_line({k: sum(c[k] for c in shared_counts) for k in shared_counts[0]}))
    print("\ncount: the analyze stage's LineCounter on our tracks; supervision's LineZone (bottom centre) on the baselines'")

if __name__ == "__main__":
    main()
