"""The multi-object tracker: per-stream track sets, associated frame by frame.

Association follows ByteTrack's two stages and adds what BoT-SORT/DeepSORT add, with this project's
own models: the motion LSTM predicts each track's box (instead of a Kalman filter) and the appearance
CNN's embeddings both sharpen the first-stage cost and re-identify lost tracks.

1. confident detections vs confirmed and lost tracks: IoU with the predicted box, fused with
   appearance distance; pairs whose appearance is clearly different are gated out (no swaps at crossings),
   and a pair pays for looking less alike than the best rival pair of its detection or its track;
2. the tracks still unmatched that were seen in the previous frame vs the low-score detections, by IoU
   and appearance (a partly hidden object scores low: this is what keeps it tracked; a low box that looks
   like someone else is often theirs);
3. re-identification: lost tracks vs the confident detections left, by appearance within a spatial
   window that grows with the time lost; a track lost where tracks leave the picture (the scene's exit
   zones, learned from its tracks) only by a detection where they come in, and only for `exit_lost_frames`;
4. tentative tracks vs the confident detections left, by the IoU of boxes grown by half their size (a new
   track has no speed yet: someone moving most of their width a frame still gets one), then by IoU vs the
   low-score ones left from `tentative_low_score` (a person the detector sees at 0.2-0.5 most of the time still
   gets a track);
5. confident detections still left start tentative tracks, unless one overlaps an object tracked in this frame
   and looks like its track (the detector boxed that object twice).

A box that holds two or more boxes of its kind whole (the detector boxed a crowd as one person) takes part in
no stage: it is shown, untracked.

Frames of one stream must be given in order; `Tracker.step` takes at most one frame per stream so that
all streams' tracks share one motion-model forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from pipeline.boxes import box_ioa
from pipeline.categories import LOOKALIKES, category_id
from pipeline.detections import Detections
from pipeline.scene_zones import SceneZones
from stages.track.association import INFEASIBLE, cosine_distance, iou_matrix, linear_assignment
from stages.track.track import Track, TrackState

# Detections of one group may continue each other's tracks: detectors flicker between these labels.
_GROUP_OF = {category_id(name): gi for gi, names in enumerate(LOOKALIKES) for name in names}


def class_group(class_id: int) -> int:
    return _GROUP_OF.get(class_id, 100 + class_id)


def _apart(boxes: np.ndarray, max_iou: float) -> np.ndarray:
    """[N] which boxes overlap no other box of the set by more than `max_iou`."""
    if len(boxes) < 2:
        return np.ones(len(boxes), bool)
    iou = iou_matrix(boxes, boxes)
    np.fill_diagonal(iou, 0.0)
    return iou.max(axis=1) <= max_iou


def _crowd_boxes(boxes: np.ndarray, groups: np.ndarray, confident: np.ndarray, min_inside: int) -> np.ndarray:
    """[N] which boxes hold at least `min_inside` other confident boxes of their class group whole (at least 90% of
    each inside, each under half its area): a detector's box around a crowd, not an object. Unconfident boxes inside
    do not count: detectors box parts of one object (a head, the legs) at low scores."""
    if min_inside <= 0 or len(boxes) <= min_inside:
        return np.zeros(len(boxes), bool)
    b = np.asarray(boxes, np.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inside = box_ioa(b, b).T >= 0.9  # [i, j]: box j lies within box i
    inside &= (area[None, :] < 0.5 * area[:, None]) & (groups[:, None] == groups[None, :]) & confident[None, :]
    return inside.sum(axis=1) >= min_inside


def _buffered(boxes: np.ndarray, b: float) -> np.ndarray:
    """xyxy boxes grown by `b` times their width and height on each side."""
    w = boxes[:, 2:3] - boxes[:, 0:1]
    h = boxes[:, 3:4] - boxes[:, 1:2]
    return boxes + b * np.concatenate([-w, -h, w, h], 1)


def _centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[A, B] pixels between the centres of xyxy boxes."""
    ca, cb = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    return np.linalg.norm(ca[:, None] - cb[None], axis=-1)


class MotionModel(Protocol):
    history: int

    def predict(self, boxes: np.ndarray, ages: np.ndarray, valid: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class TrackerSettings:
    high_score: float = 0.5  # detections at or above this take part in stage 1 and may start tracks
    low_score: float = 0.1  # detections between this and high_score only keep existing tracks alive
    new_track_score: float = 0.6
    confirm_hits: int = 2  # matches in a row before a track is confirmed (ByteTrack: 2)
    max_lost_frames: int = 30  # a lost track is removed after this many frames
    exit_lost_frames: int = 10  # one lost where tracks leave the picture (its edge, an exit zone), after this many: it left
    match_cost: float = 0.8  # stage-1 cost above which a pair is not matched
    low_match_iou: float = 0.5  # stage-2 IoU needed
    tentative_match_iou: float = 0.3  # stage-3 IoU needed
    tentative_buffer: float = 0.5  # stage 4 compares boxes grown by this share of their size on each side (C-BIoU):
    # a tentative track has one box and no speed yet: one moving most of its width a frame barely overlaps
    appearance_weight: float = 0.5  # share of appearance in the stage-1 cost (the rest is 1 - IoU)
    appearance_gate: float = 0.5  # cosine distance above which a pair is never matched
    min_iou: float = 0.1  # stage 1 needs this much overlap with the predicted box (lost tracks: see reid)
    reid_distance: float = 0.15  # cosine distance under which a lost track is re-identified
    reid_radius: float = 1.0  # re-identification window around the predicted box: this many box heights,
    reid_spread: float = 0.1  # plus this many box heights per frame lost
    reid_scale: float = 1.5  # and a box height within this factor of the track's last
    reid_sigmas: float = 3.0  # with a motion model's uncertainty: the re-identification window in its standard deviations
    gate_sigmas: float = 4.0  # with a motion model's uncertainty: stage 1 only within this many standard deviations (0: off)
    crop_refresh: int = 0  # every this many frames all crops; between, none for boxes that can only be one object (0: all, always)
    reid_ratio: float = 0.8  # appearance distance at most this times that of the next-best candidate
    embedding_momentum: float = 0.9
    appearance_rivalry: float = 1.5  # stage 1: cost added per unit of appearance distance above the best rival pair's
    rivalry_gap: int = 10  # tracks unseen longer than this frames neither pay nor impose the rivalry (their box has drifted)
    clean_crop_iou: float = 0.3  # a crop overlapping another detection more than this does not update the embedding
    duplicate_iou: float = 0.3  # a confident unmatched box overlapping a tracked object's box this much (IoU) and
    duplicate_distance: float = 0.2  # looking this much like its track (cosine distance) starts no track: it is a second box on it
    crowd_of: int = 2  # a box that holds this many confident boxes of its class group whole is a crowd, not one object (0: off)
    tentative_low_score: float = 0.3  # low-score detections from this score continue tentative tracks too (1: never)
    low_appearance_gate: float = 0.3  # stage 2: cosine distance above which a low-score pair is never matched (2: off,
    # and low-score boxes are not embedded)
    low_appearance_weight: float = 0.5  # stage 2: cost per unit of cosine distance; a pair that looks alike may overlap less
    scene_zones: bool = True  # learn where tracks enter and leave the picture, and re-identify only through them


@dataclass
class StepInput:
    stream: str
    frame: int  # frame index in the stream (seq); gaps are frames that never came
    detections: Detections
    embeddings: np.ndarray | None  # [N, D] for the rows of `detections`, NaN rows where none was computed
    frame_size: tuple[int, int] | None = None  # (width, height); None: the scene's entry and exit zones are not learned


@dataclass
class Stage1:
    """One frame's stage-1 association as the tracker is about to solve it: confirmed and lost tracks (rows) against
    confident detections (columns)."""

    stream: str
    frame: int
    tracks: list[Track]
    rows: np.ndarray  # [D] the detections' rows in the frame's Detections
    boxes: np.ndarray  # [D, 4] their boxes
    iou: np.ndarray  # [T, D] with the tracks' predicted boxes
    distance: np.ndarray | None  # [T, D] appearance (cosine) distance, NaN where either has no embedding; None: appearance off
    cost: np.ndarray  # [T, D] the costs matched on (INFEASIBLE: never)


class StreamTracks:
    """The tracks of one stream."""

    def __init__(self) -> None:
        self.tracks: list[Track] = []
        self.next_key = 0
        self.next_id = 1
        self.first_frame: int | None = None
        self.last_frame: int | None = None
        self.zones: SceneZones | None = None  # where tracks enter and leave, learned from its confirmed tracks (in frames)

    def active(self) -> list[Track]:
        return [t for t in self.tracks if t.state != TrackState.REMOVED]

    def counts(self) -> dict[str, int]:
        out = {s.name.lower(): 0 for s in TrackState if s != TrackState.REMOVED}
        for t in self.tracks:
            if t.state != TrackState.REMOVED:
                out[t.state.name.lower()] += 1
        return out


class Tracker:
    def __init__(
        self,
        motion: MotionModel,
        settings: TrackerSettings = TrackerSettings(),
        classes: set[int] | None = None,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self.motion = motion
        self.s = settings
        self.classes = classes  # None: every class is tracked
        self.streams: dict[str, StreamTracks] = {}
        self.next_ids: dict[str, int] = {}  # per stream, the first id after its last ended epoch
        self.on_event = on_event or (lambda stream, event: None)  # metrics: created, confirmed, reidentified, removed
        self._previous: dict[str, tuple[int, np.ndarray]] = {}  # per stream: the last frame asked about, its boxes
        self._low_looks = settings.low_appearance_gate < 2.0  # stage 2 uses appearance: low-score boxes are embedded too
        # Diagnoses (bench/track_eval.py): sees each frame's stage-1 costs; what it returns, if anything, replaces them.
        self.stage1_hook: Callable[[Stage1], np.ndarray | None] | None = None

    def wants_embedding(self, det: Detections, stream: str | None = None, frame: int | None = None) -> np.ndarray:
        """Rows whose appearance the tracker uses: tracked classes (only those at or above the high score where
        stage 2 goes by IoU alone). Given the stream and frame (asked in frame order per stream), not those that
        can only be one object (DeepSORT's observation: appearance matters where objects are close): a box alone
        in its frame on exactly one box, alone too, of the stream's previous frame, except every
        `crop_refresh`-th frame. Decided from the detections alone, so the result does not depend on how frames
        were batched (a live run and a replay of the same file track alike)."""
        tracked = self._tracked_rows(det)
        want = tracked if self._low_looks else tracked & (det.scores >= self.s.high_score)
        if stream is None or frame is None or self.s.crop_refresh <= 0:
            return want
        boxes = det.boxes[tracked]
        prev = self._previous.get(stream)
        self._previous[stream] = (frame, boxes)
        if prev is None or prev[0] != frame - 1 or frame % self.s.crop_refresh == 0 or not want.any() or not len(prev[1]):
            return want
        before = prev[1]
        to_prev = iou_matrix(det.boxes, before)
        single = ((to_prev > 0.05).sum(1) == 1) & (to_prev.max(1) > 0.5)
        sure = _apart(det.boxes, 0.05) & single & _apart(before, 0.05)[to_prev.argmax(1)]
        return want & ~sure

    def _tracked_rows(self, det: Detections) -> np.ndarray:
        keep = det.scores >= self.s.low_score
        if self.classes is not None:
            keep &= np.isin(det.class_ids, list(self.classes))
        return keep

    def start_stream(self, stream: str, continue_ids: bool = True) -> None:
        """A stream (or a new epoch of it: its source restarted, numbering from 0) begins: what was tracked
        is gone from view as far as frame numbers can tell. Ids go on from where they were, never reused,
        unless `continue_ids` is off (a file read again from its start gets the ids of its first reading)."""
        fresh = self.streams[stream] = StreamTracks()
        self._previous.pop(stream, None)
        if continue_ids and stream in self.next_ids:
            fresh.next_id = self.next_ids[stream]
            self.on_event(stream, "restarted")

    def end_stream(self, stream: str) -> None:
        """The stream's epoch ended: its tracks are freed; its next id is kept, so ids are never reused."""
        st = self.streams.pop(stream, None)
        self._previous.pop(stream, None)
        if st is not None:
            self.next_ids[stream] = st.next_id

    # -- one frame per stream ----------------------------------------------------------

    def step(self, inputs: list[StepInput]) -> list[Detections]:
        """Track one frame of each given stream; returns each frame's detections with track ids.

        Rows matched to confirmed tracks get their id; other confident rows keep -1; low-score rows that
        kept no confirmed track alive are dropped (they were only candidates for stage 2).
        """
        if len({i.stream for i in inputs}) != len(inputs):
            raise ValueError("Tracker.step takes at most one frame per stream")
        per_stream = []
        for inp in inputs:
            st = self.streams.setdefault(inp.stream, StreamTracks())
            if st.last_frame is not None and inp.frame <= st.last_frame:
                raise ValueError(f"stream {inp.stream}: frame {inp.frame} is not after frame {st.last_frame} (a restarted source needs start_stream)")
            if st.first_frame is None:
                st.first_frame = inp.frame
            if self.s.scene_zones and inp.frame_size is not None and (st.zones is None or st.zones.size != inp.frame_size):
                st.zones = SceneZones(inp.frame_size, end_after=self.s.max_lost_frames, link=self.s.max_lost_frames)
            st.last_frame = inp.frame
            self._expire(inp.stream, st, inp.frame)
            per_stream.append((inp, st, st.active()))
        predicted = self._predict([(tracks, inp.frame) for inp, _, tracks in per_stream])
        spread = getattr(self.motion, "spread", None)  # [N] pixels, if the motion model has an uncertainty
        spreads = np.split(spread, np.cumsum([len(t) for _, _, t in per_stream])[:-1]) if spread is not None else [None] * len(per_stream)
        return [self._associate(inp, st, tracks, pred, sp) for (inp, st, tracks), pred, sp in zip(per_stream, predicted, spreads)]

    def _expire(self, stream: str, st: StreamTracks, frame: int) -> None:
        for t in st.tracks:
            if t.state == TrackState.CONFIRMED and frame - t.last_frame > 1:
                t.state = TrackState.LOST  # frames in between never came (shed upstream): it was not seen
        # A track lost where tracks leave the picture is kept only briefly (the detector missed it for a few
        # frames at the edge); after that it went out of view, and whoever comes in there later is someone else.
        lost = [t for t in st.tracks if t.state == TrackState.LOST and frame - t.last_frame > self.s.exit_lost_frames]
        gone = st.zones.exit_at(np.stack([t.last_box for t in lost])) if lost and st.zones is not None else np.zeros(len(lost), bool)
        left = {id(t) for t, g in zip(lost, gone.tolist()) if g}
        for t in st.tracks:
            if t.state == TrackState.LOST and (frame - t.last_frame > self.s.max_lost_frames or id(t) in left):
                t.state = TrackState.REMOVED
                self.on_event(stream, "removed")
        st.tracks = [t for t in st.tracks if t.state != TrackState.REMOVED]

    def _predict(self, groups: list[tuple[list[Track], int]]) -> list[np.ndarray]:
        """Every active track of every stream in one motion-model forward."""
        tracks = [t for ts, _ in groups for t in ts]
        ends = np.cumsum([len(ts) for ts, _ in groups])
        # A motion model may keep state on each track (Track.motion_state) instead of re-reading its window.
        predict_tracks = getattr(self.motion, "predict_tracks", None)
        if predict_tracks is not None:
            now = np.concatenate([np.full(len(ts), f, np.int64) for ts, f in groups]) if groups else np.zeros(0, np.int64)
            pred = predict_tracks(tracks, now)
            return np.split(pred, ends[:-1]) if groups else []
        if tracks:
            frames = np.stack([t.frames for t in tracks])  # [N, K], -1 before a track's first observation
            now = np.concatenate([np.full(len(ts), f, np.int64) for ts, f in groups])
            boxes = np.stack([t.boxes for t in tracks])
            valid = frames >= 0
            ages = np.where(valid, now[:, None] - frames, 1).astype(np.float32)
        pred = self.motion.predict(boxes, ages, valid) if tracks else np.zeros((0, 4), np.float32)
        return np.split(pred, ends[:-1]) if groups else []

    def _associate(self, inp: StepInput, st: StreamTracks, tracks: list[Track], pred: np.ndarray, spread: np.ndarray | None = None) -> Detections:
        s, det, frame = self.s, inp.detections, inp.frame
        n = len(det)
        track_of_row = np.full(n, -1, np.int64)  # index into `tracks`
        groups = np.array([class_group(int(c)) for c in det.class_ids], np.int64)
        candidates = self._tracked_rows(det)
        candidates &= ~_crowd_boxes(det.boxes, np.where(candidates, groups, -1), det.scores >= s.high_score, s.crowd_of)
        high = np.flatnonzero(candidates & (det.scores >= s.high_score))
        low = np.flatnonzero(candidates & (det.scores < s.high_score))
        emb = inp.embeddings
        t_groups = np.array([t.group for t in tracks], np.int64)

        def match(t_idx: np.ndarray, d_idx: np.ndarray, cost: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
            cost = np.where(t_groups[t_idx][:, None] == groups[d_idx][None, :], cost, INFEASIBLE)
            pairs, un_t, un_d = linear_assignment(cost, threshold)
            for ti, di in pairs:
                track_of_row[d_idx[di]] = t_idx[ti]
            return t_idx[un_t], d_idx[un_d]

        def app_dist(t_idx: np.ndarray, d_idx: np.ndarray) -> np.ndarray | None:
            if emb is None:
                return None
            t_emb = [tracks[i].embedding for i in t_idx]
            d_emb = emb[d_idx]
            dist = np.full((len(t_idx), len(d_idx)), np.nan, np.float32)
            have_t = np.array([e is not None for e in t_emb], bool)
            have_d = ~np.isnan(d_emb).any(axis=1) if len(d_idx) else np.zeros(0, bool)
            if have_t.any() and have_d.any():
                sub = cosine_distance(np.stack([e for e in t_emb if e is not None]), d_emb[have_d])
                dist[np.ix_(np.flatnonzero(have_t), np.flatnonzero(have_d))] = sub
            return dist

        # Stage 1: confident detections vs confirmed and lost tracks.
        main = np.array([i for i, t in enumerate(tracks) if t.state in (TrackState.CONFIRMED, TrackState.LOST)], np.int64)
        iou = iou_matrix(pred[main], det.boxes[high])
        cost = 1.0 - iou
        dist = app_dist(main, high)
        if dist is not None:
            known = ~np.isnan(dist)
            fused = s.appearance_weight * np.nan_to_num(dist) + (1 - s.appearance_weight) * cost
            cost = np.where(known, fused, cost)
            cost = np.where(known & (dist > s.appearance_gate), INFEASIBLE, cost)
        cost = np.where(iou < s.min_iou, INFEASIBLE, cost)
        if spread is not None and s.gate_sigmas > 0 and len(main) and len(high):
            # The motion model's own uncertainty bounds where the track can be (never below a tenth of its height).
            height = np.maximum(pred[main, 3] - pred[main, 1], 1.0)
            reach = s.gate_sigmas * np.maximum(spread[main], 0.1 * height)
            cost = np.where(_centre_distance(pred[main], det.boxes[high]) > reach[:, None], INFEASIBLE, cost)
        if dist is not None and s.appearance_rivalry > 0 and len(main) and len(high):
            fresh = np.array([frame - tracks[i].last_frame <= s.rivalry_gap for i in main], bool)
            cost = self._rivalry(cost, dist, fresh)
        if self.stage1_hook is not None and len(main) and len(high):
            changed = self.stage1_hook(Stage1(inp.stream, frame, [tracks[i] for i in main], high, det.boxes[high], iou, dist, cost))
            cost = cost if changed is None else changed
        rest_t, rest_high = match(main, high, cost, s.match_cost)

        # Stage 2: tracks seen in the previous frame vs low-score detections, by IoU and, unlike ByteTrack, by
        # appearance: a half-hidden person's low box is often the neighbour's, and IoU alone hands the track over.
        recent = np.array([i for i in rest_t if tracks[i].last_frame >= frame - 1], np.int64)
        if len(recent) and len(low):
            iou = iou_matrix(pred[recent], det.boxes[low])
            cost, threshold = 1.0 - iou, 1.0 - s.low_match_iou
            dist = app_dist(recent, low) if self._low_looks else None
            if dist is not None:
                known = ~np.isnan(dist)
                cost = np.where(known, cost + s.low_appearance_weight * np.nan_to_num(dist), cost)
                cost = np.where(known & (dist > s.low_appearance_gate), INFEASIBLE, cost)
                # A pair at the gate needs the IoU of a pair without appearance; one that looks alike, less.
                threshold += s.low_appearance_weight * s.low_appearance_gate
            match(recent, low, cost, threshold)

        # Stage 3: re-identify lost tracks by appearance, where the track could plausibly be by now, and only
        # when the pair is clearly better than the other candidates of both (a ratio test: in a crowd of
        # look-alikes the nearest embedding is no evidence). Before the tentative tracks: a person back from an
        # occlusion whose first sighting started a tentative track (no id yet) gets the old id back.
        matched_tracks = set(track_of_row[track_of_row >= 0].tolist())
        lost = np.array([i for i, t in enumerate(tracks) if t.state == TrackState.LOST and i not in matched_tracks], np.int64)
        if emb is not None and len(lost) and len(rest_high):
            dist = app_dist(lost, rest_high)
            assert dist is not None
            boxes = det.boxes[rest_high]
            far = ~self._plausible(tracks, lost, pred[lost], boxes, frame, None if spread is None else spread[lost])
            known = np.where(np.isnan(dist), np.inf, dist)
            if st.zones is not None:
                # A track lost where tracks leave the picture left it: whoever appears now is someone else,
                # unless they appear where tracks come in (it came back).
                gone = st.zones.exit_at(np.stack([tracks[i].last_box for i in lost]))
                far |= gone[:, None] & ~st.zones.entry_at(boxes)[None, :]
            cost = np.where(np.isinf(known) | far, INFEASIBLE, known)
            cost = np.where(self._distinct(known, cost < INFEASIBLE), cost, INFEASIBLE)
            before = int((track_of_row >= 0).sum())
            rest_high = match(lost, rest_high, cost, s.reid_distance)[1]
            for _ in range(int((track_of_row >= 0).sum()) - before):
                self.on_event(inp.stream, "reidentified")

        # Stage 4: tentative tracks vs the confident detections left.
        tentative = np.array([i for i, t in enumerate(tracks) if t.state == TrackState.TENTATIVE], np.int64)
        if len(tentative) and len(rest_high):
            iou = iou_matrix(_buffered(pred[tentative], s.tentative_buffer), _buffered(det.boxes[rest_high], s.tentative_buffer))
            rest_high = match(tentative, rest_high, 1.0 - iou, 1.0 - s.tentative_match_iou)[1]
        if len(tentative) and s.tentative_low_score < s.high_score:
            # A person the detector sees at 0.2-0.5 most of the time is confirmed from one confident sighting.
            matched_now = set(track_of_row[track_of_row >= 0].tolist())
            tent = np.array([i for i in tentative if i not in matched_now], np.int64)
            lows = np.array([r for r in low if track_of_row[r] < 0 and det.scores[r] >= s.tentative_low_score], np.int64)
            if len(tent) and len(lows):
                iou = iou_matrix(pred[tent], det.boxes[lows])
                match(tent, lows, 1.0 - iou, 1.0 - s.low_match_iou)

        # Update matched tracks.
        crop_clean = self._clean_crops(det.boxes)
        matched = np.zeros(len(tracks), bool)
        for row in np.flatnonzero(track_of_row >= 0):
            t = tracks[track_of_row[row]]
            matched[track_of_row[row]] = True
            t.observe(frame, det.boxes[row], float(det.scores[row]), int(det.class_ids[row]), int(groups[row]))
            if t.state == TrackState.LOST:
                t.state = TrackState.CONFIRMED
            if t.state == TrackState.TENTATIVE and t.hits >= s.confirm_hits:
                self._confirm(inp.stream, st, t)
            if emb is not None and det.scores[row] >= s.high_score and crop_clean[row] and not np.isnan(emb[row]).any():
                t.update_embedding(emb[row], s.embedding_momentum)
        # Unmatched tracks: confirmed ones are lost, tentative ones never were.
        for i, t in enumerate(tracks):
            if matched[i]:
                continue
            if t.state == TrackState.CONFIRMED:
                t.state = TrackState.LOST
            elif t.state == TrackState.TENTATIVE:
                t.state = TrackState.REMOVED
        # New tracks; on a stream's first frame they are trusted at once (nothing to confuse them with).
        row_track: dict[int, Track] = {int(r): tracks[int(track_of_row[r])] for r in np.flatnonzero(track_of_row >= 0)}
        held = [(r, t.embedding) for r, t in row_track.items() if t.state == TrackState.CONFIRMED and t.embedding is not None]
        held_boxes = det.boxes[[r for r, _ in held]]
        held_looks = np.stack([e for _, e in held]) if held else np.zeros((0, 0), np.float32)
        for row in rest_high:
            if det.scores[row] < s.new_track_score:
                continue
            if held and emb is not None and self._duplicate(det.boxes[row], emb[row], held_boxes, held_looks):
                continue
            t = Track(st.next_key, int(det.class_ids[row]), int(groups[row]), frame, self.motion.history)
            st.next_key += 1
            t.observe(frame, det.boxes[row], float(det.scores[row]), int(det.class_ids[row]), int(groups[row]))
            if emb is not None and crop_clean[row] and not np.isnan(emb[row]).any():
                t.update_embedding(emb[row], 0.0)
            st.tracks.append(t)
            row_track[int(row)] = t
            self.on_event(inp.stream, "created")
            if frame == st.first_frame or s.confirm_hits <= 1:
                self._confirm(inp.stream, st, t)
        st.tracks = [t for t in st.tracks if t.state != TrackState.REMOVED]

        ids = np.full(n, -1, np.int64)
        for row, t in row_track.items():
            if t.state == TrackState.CONFIRMED:
                ids[row] = t.track_id
        keep = ids >= 0
        keep |= det.scores >= s.high_score  # confident detections are shown, tracked or not
        keep |= ~self._tracked_rows(det) & (det.scores >= s.low_score)  # untracked classes pass through
        out = det[keep]
        out.track_ids = ids[keep]
        if st.zones is not None:
            st.zones.update(float(frame), out.track_ids, out.boxes)
        return out

    def _confirm(self, stream: str, st: StreamTracks, t: Track) -> None:
        t.state = TrackState.CONFIRMED
        t.track_id = st.next_id
        st.next_id += 1
        self.on_event(stream, "confirmed")

    def _plausible(self, tracks: list[Track], lost: np.ndarray, pred: np.ndarray, boxes: np.ndarray, frame: int,
                   spread: np.ndarray | None = None) -> np.ndarray:
        """[L, D] whether each lost track could be at each detection by now: within the motion model's
        prediction plus an uncertainty that grows with the frames lost (a person who stopped, turned or
        sped up): the model's own (`reid_sigmas` standard deviations) where it has one, else `reid_spread`
        box heights per frame; and of a similar size (the same distance from the camera)."""
        s = self.s
        # The track's height over its recent sightings, not its last box's: a person is often lost behind someone,
        # when the last box was cut to the part still showing, and comes back whole.
        height = np.array([max(float(np.median((tracks[i].boxes[:, 3] - tracks[i].boxes[:, 1])[tracks[i].frames >= 0])), 1.0) for i in lost])
        gap = np.array([frame - tracks[i].last_frame for i in lost], np.float64)
        if spread is not None:
            radius = np.maximum(height * s.reid_radius, s.reid_sigmas * spread)
        else:
            radius = height * (s.reid_radius + s.reid_spread * gap)
        near = _centre_distance(pred, boxes) <= radius[:, None]
        d_height = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
        ratio = d_height[None, :] / height[:, None]
        return near & (ratio <= s.reid_scale) & (ratio >= 1 / s.reid_scale)

    def _distinct(self, dist: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        """[L, D] pairs whose appearance distance is at most `reid_ratio` times that of any rival: another
        plausible detection for the track, or another plausible lost track for the detection."""
        d = np.where(candidate, dist, np.inf)
        if d.size == 0:
            return candidate
        ok = candidate.copy()
        for axis in (0, 1):
            if d.shape[axis] < 2:
                continue
            part = np.partition(d, 1, axis=axis)
            best, second = np.take(part, 0, axis=axis), np.take(part, 1, axis=axis)
            # A pair's rival is the best other candidate: the second best for the best pair, else the best.
            rival = np.where(d == np.expand_dims(best, axis), np.expand_dims(second, axis), np.expand_dims(best, axis))
            ok &= d <= self.s.reid_ratio * rival
        return ok

    def _rivalry(self, cost: np.ndarray, dist: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        """Stage-1 costs raised by how much worse each pair's appearance is than the best feasible pair of its
        detection and of its track: a detection that looks like another track that could be there goes to that one.
        Only `fresh` tracks ([T]) take part: the predicted box of one lost for long may lie on anyone, and its look
        must not outweigh the track that is there (a fallen person's track onto a walker)."""
        known = (cost < INFEASIBLE) & ~np.isnan(dist) & fresh[:, None]
        d = np.where(known, dist, np.inf)
        excess = np.zeros_like(cost)
        for axis in (0, 1):
            best = d.min(axis=axis, keepdims=True)  # finite wherever a pair of this row/column is known
            excess = np.maximum(excess, np.where(known, d - np.where(np.isfinite(best), best, 0.0), 0.0))
        return np.where(cost < INFEASIBLE, cost + self.s.appearance_rivalry * excess, cost)

    def _duplicate(self, box: np.ndarray, embedding: np.ndarray, tracked_boxes: np.ndarray, tracked_looks: np.ndarray) -> bool:
        """Whether a confident box left unmatched is a second box on an object tracked in this frame (the detector
        split it, or boxed part of it): it overlaps that object's matched box and looks like its track."""
        if self.s.duplicate_iou >= 1 or np.isnan(embedding).any():
            return False
        near = np.flatnonzero(iou_matrix(box[None], tracked_boxes)[0] >= self.s.duplicate_iou)
        if not len(near):
            return False
        return bool(cosine_distance(embedding[None], tracked_looks[near])[0].min() <= self.s.duplicate_distance)

    def _clean_crops(self, boxes: np.ndarray) -> np.ndarray:
        """Rows whose crop shows mostly their own object (not another detection's)."""
        return _apart(boxes, self.s.clean_crop_iou)
