"""The tracker: states and ids, ByteTrack's low-score stage, re-identification, and identity through a
crossing and an occlusion on a generated sequence (real crops over a real background, real detector)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.categories import category_id
from pipeline.detections import Detections
from stages.track.association import INFEASIBLE, iou_matrix, linear_assignment
from stages.track.stage import KalmanMotion
from stages.track.tracker import Stage1, StepInput, Tracker, TrackerSettings

PERSON = category_id("person")


def dets(boxes: list[list[float]], scores: list[float]) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.full(len(boxes), PERSON))


def walk(x0: float, vx: float, t: int, y: float = 100.0) -> list[float]:
    return [x0 + vx * t, y, x0 + vx * t + 40, y + 100]


def test_ids_only_for_confirmed_tracks_and_tentative_ones_that_vanish_never_get_one() -> None:
    tr = Tracker(KalmanMotion(), TrackerSettings(confirm_hits=3))
    first = tr.step([StepInput("s", 0, dets([walk(0, 3, 0)], [0.9]), None)])[0]
    assert first.track_ids.tolist() == [1]  # first frame: trusted at once
    ids = []
    for t in range(1, 6):
        boxes = [walk(0, 3, t)] + ([walk(300, -3, t)] if t >= 2 else [])
        ids.append(tr.step([StepInput("s", t, dets(boxes, [0.9] * len(boxes)), None)])[0].track_ids.tolist())
    assert ids == [[1], [1, -1], [1, -1], [1, 2], [1, 2]]  # the newcomer gets an id on its third hit
    # a one-frame false positive never gets an id, and ids stay gap-free
    tr.step([StepInput("s", 6, dets([walk(0, 3, 6), walk(300, -3, 6), [600, 300, 640, 400]], [0.9] * 3), None)])
    out = tr.step([StepInput("s", 7, dets([walk(0, 3, 7), walk(300, -3, 7)], [0.9, 0.9]), None)])[0]
    assert out.track_ids.tolist() == [1, 2]
    assert tr.streams["s"].next_id == 3


def test_a_low_score_detection_keeps_a_track_alive_and_is_dropped_when_it_keeps_nothing() -> None:
    tr = Tracker(KalmanMotion(), TrackerSettings())
    for t in range(5):
        tr.step([StepInput("s", t, dets([walk(0, 3, t)], [0.9]), None)])
    # partly hidden: the detector is unsure; stage 2 matches it by IoU
    out = tr.step([StepInput("s", 5, dets([walk(0, 3, 5), [500, 400, 540, 500]], [0.3, 0.3]), None)])[0]
    assert out.track_ids.tolist() == [1]  # the stray low-score box is gone
    out = tr.step([StepInput("s", 6, dets([walk(0, 3, 6)], [0.9]), None)])[0]
    assert out.track_ids.tolist() == [1]


def test_a_lost_track_is_reidentified_by_appearance_and_removed_after_max_lost() -> None:
    s = TrackerSettings(max_lost_frames=20)
    tr = Tracker(KalmanMotion(), s)
    a, b = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]
    for t in range(6):
        tr.step([StepInput("s", t, dets([walk(0, 3, t)], [0.9]), a[None])])
    # hidden for 8 frames, then seen 60 px off its predicted path: IoU alone could not match it
    out = tr.step([StepInput("s", 14, dets([walk(60, 3, 14, y=130)], [0.9]), a[None])])[0]
    assert out.track_ids.tolist() == [1]
    # someone who looks different at the same place is a new track
    for t in range(15, 40):
        out = tr.step([StepInput("s", t, dets([walk(400, 0, t)], [0.9]), b[None])])[0]
    assert out.track_ids.tolist() == [2]
    assert [t.track_id for t in tr.streams["s"].tracks] == [2]  # track 1, lost over 20 frames, is removed


def test_a_detection_goes_to_the_lost_track_it_looks_like_not_to_the_nearer_one_it_resembles_less() -> None:
    """Two people walk close together; B is hidden for two frames (its track is lost), then A is hidden and B
    shows up where A was heading. By overlap A's track is the better fit, and B's look is not different enough
    from A's to gate the pair out; appearance rivalry gives the detection to the track it looks most like."""

    def look(deg: float) -> np.ndarray:
        v = np.zeros(8, np.float32)
        v[0], v[1] = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
        return v

    a, b = look(0), look(40)  # cosine distance 0.23: under the 0.5 gate

    def ids(rivalry: float, hidden: int = 2) -> list[list[int]]:
        tr = Tracker(KalmanMotion(), TrackerSettings(appearance_rivalry=rivalry))
        for t in range(8):
            tr.step([StepInput("s", t, dets([walk(0, 3, t), walk(25, 3, t)], [0.9, 0.9]), np.stack([a, b]))])
        for t in range(8, 8 + hidden):
            tr.step([StepInput("s", t, dets([walk(0, 3, t)], [0.9]), a[None])])
        t = 8 + hidden
        out = [tr.step([StepInput("s", t, dets([walk(5, 3, t)], [0.9]), b[None])])[0].track_ids.tolist()]
        for t in (t + 1, t + 2):  # both seen again
            boxes = dets([walk(0, 3, t), walk(8, 3, t, y=104)], [0.9, 0.9])
            out.append(tr.step([StepInput("s", t, boxes, np.stack([a, b]))])[0].track_ids.tolist())
        return out

    assert ids(0.0)[0] == [1]  # without rivalry: A's track takes B's detection
    assert ids(1.5) == [[2], [1, 2], [1, 2]]
    # B's track lost for longer than rivalry_gap (10 frames) takes no part: the box predicted for a track lost
    # that long may lie on anyone, and its look does not outweigh the track that is there.
    assert ids(1.5, hidden=12)[0] == [1]


def test_crops_are_asked_for_only_where_the_appearance_can_decide_something() -> None:
    """With crop_refresh N, a box alone in its frame on one lone box of the frame before gets a crop only
    every Nth frame; boxes near another, newcomers and frames after a gap always get one; decided from the
    detections alone, so batching cannot change it."""
    tr = Tracker(KalmanMotion(), TrackerSettings(crop_refresh=3))
    lone = [[walk(0, 3, t), walk(300, 0, t)] for t in range(6)]
    asked = [tr.wants_embedding(dets(lone[t], [0.9, 0.9]), "s", t).tolist() for t in range(6)]
    assert asked == [[True, True], [False, False], [False, False], [True, True], [False, False], [False, False]]
    assert tr.wants_embedding(dets(lone[1], [0.9, 0.9])).tolist() == [True, True]  # without stream and frame: all
    # A gap in the frame numbers: all again.
    assert tr.wants_embedding(dets(lone[1], [0.9, 0.9]), "s", 8).tolist() == [True, True]
    # Near another box, or a newcomer: a crop.
    tr2 = Tracker(KalmanMotion(), TrackerSettings(crop_refresh=3))
    tr2.wants_embedding(dets([walk(0, 3, 0), walk(30, 0, 0)], [0.9, 0.9]), "s", 0)
    assert tr2.wants_embedding(dets([walk(0, 3, 1), walk(30, 0, 1), walk(500, 0, 1)], [0.9] * 3), "s", 1).tolist() == [True, True, True]
    # The default embeds every crop.
    assert Tracker(KalmanMotion()).wants_embedding(dets(lone[1], [0.9, 0.9]), "s", 1).tolist() == [True, True]


def test_streams_are_independent_and_an_ended_stream_frees_its_tracks() -> None:
    tr = Tracker(KalmanMotion(), TrackerSettings())
    for t in range(3):
        out = tr.step([StepInput("a", t, dets([walk(0, 3, t)], [0.9]), None), StepInput("b", t, dets([walk(0, 3, t)], [0.9]), None)])
        assert [o.track_ids.tolist() for o in out] == [[1], [1]]
    tr.end_stream("a")
    assert set(tr.streams) == {"b"}
    with pytest.raises(ValueError):
        tr.step([StepInput("b", 3, dets([], []), None), StepInput("b", 4, dets([], []), None)])


def test_linear_assignment_respects_the_threshold() -> None:
    cost = np.array([[0.1, 0.9], [0.8, 0.95]])
    pairs, rows, cols = linear_assignment(cost, 0.85)
    assert pairs.tolist() == [[0, 0]]  # the optimum pairs (1, 1) too, but at 0.95 it is over the threshold
    assert rows.tolist() == [1] and cols.tolist() == [1]
    assert iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10]]))[0, 0] == pytest.approx(1 / 3)


def test_identity_is_kept_through_a_crossing_and_a_short_occlusion() -> None:
    """Two people walk towards each other; one passes behind the other. Real detector, bundled models."""
    from pipeline.protocol import Frame
    from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions
    from tools.synthetic import crossing_spec, make_sequence
    from tools.track_sequence import track_sequence

    seq = make_sequence(crossing_spec())
    detector = CocoSsdDetector(CocoSsdOptions(device="cpu", score_threshold=0.1, classes=["person"]))
    frames = [Frame("x", i, 0.0, 0.0, f.shape[1], f.shape[0], f) for i, f in enumerate(seq.frames)]
    found = [d for i in range(0, len(frames), 8) for d in detector.detect(frames[i : i + 8])]
    tracked = track_sequence(seq.frames, found)

    gt_ids = sorted(set(seq.gt[:, 1].astype(int).tolist()))
    assert len(gt_ids) == 2
    hidden = seq.gt[seq.gt[:, 6] < 0.5]
    assert len(hidden), "the generated crossing must hide one of the two for a while"
    matched: dict[int, list[int]] = {g: [] for g in gt_ids}
    for i, d in enumerate(tracked):
        g = seq.gt[(seq.gt[:, 0] == i) & (seq.gt[:, 6] >= 0.5)]
        keep = d.track_ids >= 0
        if not len(g) or not keep.any():
            continue
        iou = iou_matrix(g[:, 2:6].astype(np.float32), d.boxes[keep])
        pairs, _, _ = linear_assignment(1 - iou, 0.5)
        for gi, di in pairs:
            matched[int(g[gi, 1])].append(int(d.track_ids[keep][di]))
    visible = {g: int(((seq.gt[:, 1] == g) & (seq.gt[:, 6] >= 0.5)).sum()) for g in gt_ids}
    for g in gt_ids:
        assert len(matched[g]) >= 0.7 * visible[g], f"person {g} tracked in {len(matched[g])} of {visible[g]} frames"
        assert len(set(matched[g])) == 1, f"person {g} changed identity: {matched[g]}"
    assert matched[gt_ids[0]][0] != matched[gt_ids[1]][0]


def test_a_new_epoch_starts_fresh_tracks_with_new_ids_and_no_guessing() -> None:
    events: list[str] = []
    tracker = Tracker(KalmanMotion(), on_event=lambda stream, event: events.append(event))
    box = np.array([[100, 100, 140, 200]], np.float32)
    ids = []
    tracker.start_stream("cam")
    for i, seq in enumerate([*range(0, 10), *range(0, 10)]):
        if i == 10:  # the decoder restarted after frame 9: the framework ends the epoch and starts the next
            tracker.end_stream("cam")
            tracker.start_stream("cam")
        d = Detections(boxes=box, scores=[0.9], class_ids=[1])
        (out,) = tracker.step([StepInput("cam", seq, d, None)])
        ids.append(int(out.track_ids[0]))
    first, second = set(ids[:10]) - {-1}, set(ids[10:]) - {-1}
    assert len(first) == 1 and len(second) == 1 and first != second  # a new track, not a reused id
    assert events.count("restarted") == 1
    # Frame numbers going back without a new epoch are an error, not a restart to guess.
    with pytest.raises(ValueError, match="not after frame 9"):
        tracker.step([StepInput("cam", 3, Detections(boxes=box, scores=[0.9], class_ids=[1]), None)])


def test_a_second_box_on_a_tracked_person_that_looks_like_them_starts_no_track() -> None:
    """The detector sometimes boxes one person twice (overlapping boxes, both confident). A box overlapping a
    tracked person's box and looking like their track is not a newcomer; one that looks different is."""
    a, b = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]

    def ids(second_look: np.ndarray, duplicate_iou: float = 0.3) -> list[list[int]]:
        tr = Tracker(KalmanMotion(), TrackerSettings(duplicate_iou=duplicate_iou))
        for t in range(5):
            tr.step([StepInput("s", t, dets([walk(0, 3, t)], [0.9]), a[None])])
        out = []
        for t in range(5, 10):  # a second box shifted by half a width: IoU 0.33 with the first
            boxes = dets([walk(0, 3, t), walk(20, 3, t)], [0.9, 0.8])
            out.append(tr.step([StepInput("s", t, boxes, np.stack([a, second_look]))])[0].track_ids.tolist())
        return out

    assert ids(a) == [[1, -1]] * 5  # shown (it is confident) but never tracked
    assert ids(a, duplicate_iou=1.0)[-1] == [1, 2]  # without the rule it becomes a second person
    assert ids(b)[-1] == [1, 2]  # someone else beside them


def test_a_box_around_a_group_is_not_tracked_as_one_more_person() -> None:
    """The detector sometimes boxes a crowd as one person: a confident box holding two or more boxes of people
    whole. It is shown but starts no track (tracked, its id crossed lines and stole people's boxes)."""
    looks = np.eye(8, dtype=np.float32)[:3]

    def ids(crowd_of: int, inside: int = 2) -> list[int]:
        tr = Tracker(KalmanMotion(), TrackerSettings(crowd_of=crowd_of))
        out: list[int] = []
        for t in range(8):
            people = [walk(0, 3, t), walk(200, 3, t)][:inside]
            group = [-10.0 + 3 * t, 80.0, 260.0 + 3 * t, 220.0]
            out = tr.step([StepInput("s", t, dets([*people, group], [0.9] * inside + [0.8]), looks[: inside + 1])])[0].track_ids.tolist()
        return out

    assert ids(crowd_of=2) == [1, 2, -1]  # the people keep their tracks; the group box is shown, untracked
    assert ids(crowd_of=0) == [1, 2, 3]  # without the rule it is a third person
    assert ids(crowd_of=2, inside=1) == [1, 2]  # a big box around one person is that person's business: tracked


def test_a_person_seen_mostly_at_low_scores_is_tracked_from_one_confident_sighting() -> None:
    """COCO-SSD sees some people at 0.2-0.5 nearly all the time: one sighting at the new-track score starts a
    tentative track, and low-score boxes on its path confirm it (ByteTrack's stage 2 only keeps confirmed ones)."""

    def ids(tentative_low_score: float) -> list[list[int]]:
        tr = Tracker(KalmanMotion(), TrackerSettings(tentative_low_score=tentative_low_score))
        tr.step([StepInput("s", 0, dets([[600, 100, 640, 200]], [0.9]), None)])  # someone else: frame 0 is not theirs
        out = []
        for t in range(1, 8):
            seen = dets([[600, 100, 640, 200], walk(0, 4, t)], [0.9, 0.65 if t == 1 else 0.35])
            out.append(tr.step([StepInput("s", t, seen, None)])[0].track_ids.tolist())
        return out

    assert ids(0.3)[1:] == [[1, 2]] * 6  # confirmed by its second box, kept by the low-score ones
    assert ids(1.0)[1:] == [[1]] * 6  # without: the tentative track dies and the low boxes are dropped


def test_someone_moving_most_of_their_width_a_frame_still_gets_a_track() -> None:
    """A tentative track has one box and no speed: at 10 fps a cyclist, or a walker in a stretch where the camera
    drops frames, moves most of its width between frames, and its boxes barely overlap. Grown boxes (C-BIoU)
    still pair them; a box far away does not."""

    from stages.track.motion_lstm import MotionPredictor

    def ids(buffer: float, speed: float) -> list[list[int]]:
        # The default motion model: from two boxes it has the speed (a Kalman filter's first estimate lags).
        tr = Tracker(MotionPredictor(), TrackerSettings(tentative_buffer=buffer))
        tr.step([StepInput("s", 0, dets([[600, 100, 640, 200]], [0.9]), None)])  # someone else: frame 0 is not theirs
        return [tr.step([StepInput("s", t, dets([[600, 100, 640, 200], walk(0, speed, t)], [0.9, 0.9]), None)])[0].track_ids.tolist()
                for t in range(1, 8)]

    assert ids(0.5, 35)[1:] == [[1, 2]] * 6  # 35 px a frame, boxes 40 px wide
    assert ids(0.0, 35) == [[1, -1]] * 7  # without: a new tentative track every frame, never an id
    assert ids(0.5, 120) == [[1, -1]] * 7  # three widths a frame: not the same object


def test_a_person_lost_while_half_hidden_is_reidentified_when_back_whole() -> None:
    """People are often lost behind someone when their box was already cut to the part still showing: the size
    check of re-identification goes by the track's height over its recent sightings, not by that last cut box."""
    a = np.eye(8, dtype=np.float32)[0]
    tr = Tracker(KalmanMotion(), TrackerSettings())
    tr.step([StepInput("s", 0, dets([[600, 100, 640, 200]], [0.9]), np.eye(8, dtype=np.float32)[1:2])])
    for t in range(1, 9):
        tr.step([StepInput("s", t, dets([[600, 100, 640, 200], walk(0, 3, t)], [0.9, 0.9]), np.stack([np.eye(8, dtype=np.float32)[1], a]))])
    for t in (9, 10):  # the lower half goes behind something
        x = walk(0, 3, t)
        tr.step([StepInput("s", t, dets([[600, 100, 640, 200], [x[0], x[1], x[2], x[1] + 45]], [0.9, 0.6]), np.stack([np.eye(8, dtype=np.float32)[1], a]))])
    for t in range(11, 18):  # hidden
        tr.step([StepInput("s", t, dets([[600, 100, 640, 200]], [0.9]), np.eye(8, dtype=np.float32)[1:2])])
    back = tr.step([StepInput("s", 18, dets([[600, 100, 640, 200], walk(0, 3, 18)], [0.9, 0.9]), np.stack([np.eye(8, dtype=np.float32)[1], a]))])[0]
    assert back.track_ids.tolist() == [1, 2]  # its own id again, not a tentative newcomer (-1)


def test_a_low_score_box_that_looks_like_someone_else_does_not_keep_a_track() -> None:
    """Stage 2 (low-score boxes keep tracks alive) goes by appearance as well as IoU: where a person is hidden, the
    low box on their predicted place is often someone else's, and IoU alone handed their id over."""
    a, b = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]

    def ids(low_look: np.ndarray, low_appearance_gate: float = 0.3) -> list[int]:
        tr = Tracker(KalmanMotion(), TrackerSettings(low_appearance_gate=low_appearance_gate))
        for t in range(6):
            tr.step([StepInput("s", t, dets([walk(0, 3, t)], [0.9]), a[None])])
        return tr.step([StepInput("s", 6, dets([walk(0, 3, 6)], [0.3]), low_look[None])])[0].track_ids.tolist()

    assert ids(a) == [1]  # the same person, seen weakly: kept
    assert ids(b) == []  # someone else where they were: dropped, the track is lost
    assert ids(b, low_appearance_gate=2.0) == [1]  # by IoU alone (ByteTrack's stage 2) the id goes to them


def test_a_track_lost_at_the_picture_edge_is_kept_briefly_then_whoever_comes_in_there_is_someone_new() -> None:
    """At the edge a person missed for a few frames is still there; unseen for longer, they walked out of view,
    and the next one to come in there is someone else, however alike they look (synthetic street sequences:
    re-identifications after 13-30 frames at the edge were nearly all someone else, those after 2-5 the same)."""
    look = np.eye(8, dtype=np.float32)[0][None]
    size = (640, 480)

    def ids(exit_lost_frames: int) -> tuple[list[int], list[int]]:
        tr = Tracker(KalmanMotion(), TrackerSettings(exit_lost_frames=exit_lost_frames))
        for t in range(6):  # standing at the left edge, half out of view
            tr.step([StepInput("s", t, dets([[0, 100, 30, 200]], [0.9]), look, size)])
        back = tr.step([StepInput("s", 9, dets([[0, 101, 30, 201]], [0.9]), look, size)])[0]  # missed for 3 frames
        out: list[int] = []
        for t in range(25, 28):  # unseen for 15 frames: gone; someone comes in at the same place
            out = tr.step([StepInput("s", t, dets([[0, 110, 30, 210]], [0.9]), look, size)])[0].track_ids.tolist()
        return back.track_ids.tolist(), out

    assert ids(10) == ([1], [2])
    assert ids(30) == ([1], [1])  # kept as long as a track lost anywhere else: the newcomer got the id


def test_the_stage1_hook_sees_the_costs_and_what_it_returns_decides() -> None:
    # Two people side by side; then one box lies between their predicted boxes, nearer the left one's.
    tr = Tracker(KalmanMotion(), TrackerSettings())
    for t in range(4):
        tr.step([StepInput("s", t, dets([walk(0, 0, t), walk(30, 0, t)], [0.9, 0.9]), None)])
    seen: list[Stage1] = []

    def hand_to_right(view: Stage1) -> np.ndarray:
        seen.append(view)
        cost = view.cost.copy()
        cost[[t.track_id for t in view.tracks].index(1), :] = INFEASIBLE
        return cost

    box = [[8, 100, 48, 200]]
    natural = Tracker(KalmanMotion(), TrackerSettings())
    for t in range(4):
        natural.step([StepInput("s", t, dets([walk(0, 0, t), walk(30, 0, t)], [0.9, 0.9]), None)])
    assert natural.step([StepInput("s", 4, dets(box, [0.9]), None)])[0].track_ids.tolist() == [1]
    tr.stage1_hook = hand_to_right
    assert tr.step([StepInput("s", 4, dets(box, [0.9]), None)])[0].track_ids.tolist() == [2]
    view = seen[0]
    assert view.frame == 4 and view.rows.tolist() == [0] and view.distance is None
    assert view.cost.shape == view.iou.shape == (2, 1) and view.iou[0, 0] > view.iou[1, 0] > 0
