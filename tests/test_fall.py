"""People on the ground: the fall watcher (stages/track/fall.py: MoveNet and the fall classifier through the backend
layer on CPU) on real frames of the generated CI clip, in process; the classifier's runtimes against eager torch; its
trainer end to end; and the fall rule on scripted sightings through the analyze scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.boxes import box_ioa
from pipeline.categories import category_id
from pipeline.detections import Detections
from stages.analyze.options import StreamAnalyticsConfig
from stages.analyze.scene import Scene
from stages.track.fall import POSE_LYING, FallWatcher, body_angle, hidden

PERSON = category_id("person")
FPS = 10.0


@pytest.fixture(scope="module")
def clip() -> tuple[list[np.ndarray], dict]:
    from tools.anomaly_scenes import ci_clip

    frames, truth = ci_clip()
    return frames, truth


def _person(tid: int, box: list[float]) -> Detections:
    return Detections(np.array([box], np.float32), np.ones(1, np.float32), np.full(1, PERSON, np.int32), np.array([tid], np.int64))


def test_a_lost_track_is_found_lying_where_it_fell(clip: tuple[list[np.ndarray], dict]) -> None:
    frames, truth = clip
    (fall,) = [e for e in truth["events"] if e["type"] == "fall"]
    person = fall["tracks"][0]
    before = fall["first_frame"] - 2
    watcher = FallWatcher()
    for k in range(before - 25, before + 1):  # seen upright for 2.5 s, then lost (the detector misses the fall)
        b = next(r[1:5] for r in truth["per_frame"][k] if r[0] == person)
        (d,) = watcher.step([("ci", k, k / FPS, frames[k], _person(7, b))])
        assert d.extra[POSE_LYING][0] != d.extra[POSE_LYING][0]  # an upright, narrow box: not looked at (NaN)
    got = {}
    for k in range(before + 1, len(frames)):
        (d,) = watcher.step([("ci", k, k / FPS, frames[k], Detections())])
        if len(d):
            got[k] = d
    assert got, "the faller was never found"
    lying = next(r[1:5] for r in truth["per_frame"][len(frames) - 1] if r[0] == person)
    last = got[max(got)]
    assert last.track_ids.tolist() == [7] and last.class_ids.tolist() == [PERSON] and last.extra[POSE_LYING].tolist() == [1.0]
    assert box_ioa(np.array([lying], float), last.boxes.astype(float))[0, 0] > 0.7, (last.boxes, lying)
    assert min(got) <= fall["first_frame"] + 20 and max(got) == len(frames) - 1  # found within 2 s, then every frame


def test_walkers_lost_at_the_edge_or_behind_someone_are_not_searched(clip: tuple[list[np.ndarray], dict]) -> None:
    frames, _ = clip
    watcher = FallWatcher()
    for k in range(30):  # two people for 3 s, one at the frame's edge, one that then goes behind the other
        watcher.step([("ci", k, k / FPS, frames[k], Detections.concat([_person(1, [0, 100, 30, 190]), _person(2, [300, 100, 330, 190]),
                                                                      _person(3, [310, 95, 345, 195])]))])  # fmt: skip
    (d,) = watcher.step([("ci", 30, 3.0, frames[30], _person(3, [310, 95, 345, 195]))])
    assert len(d) == 1 and not watcher._seen["ci"].get(1)  # the edge track is forgotten
    assert watcher._seen["ci"][2].searched < 0  # hidden behind #3: never searched
    assert hidden(np.array([300, 100, 330, 190.0]), np.array([[310, 95, 345, 195.0]]))


def test_body_angle() -> None:
    kp = np.zeros((17, 3), np.float32)
    kp[[5, 6], :] = [[100, 100, 0.9], [120, 100, 0.9]]  # shoulders
    kp[[15, 16], :] = [[100, 200, 0.9], [120, 200, 0.9]]  # ankles straight below
    assert body_angle(kp) == pytest.approx(0.0)
    kp[[15, 16], :] = [[250, 120, 0.9], [250, 110, 0.9]]  # ankles off to the side: lying
    assert body_angle(kp) > 70
    kp[:, 2] = 0.05
    assert np.isnan(body_angle(kp))


def _scene(**rule: object) -> Scene:
    cfg = StreamAnalyticsConfig.model_validate({"frame_size": [1000, 1000], "rules": [{"name": "down", "type": "fall", **rule}]})
    return Scene(cfg, forget_after_s=10.0, speed_window_s=1.0)


def _frame(lying: dict[int, float]) -> Detections:
    tids = sorted(lying)
    return Detections(np.array([[100.0 * t, 100, 100.0 * t + 90, 130] for t in tids], np.float32), np.ones(len(tids), np.float32),
                      np.full(len(tids), PERSON, np.int32), np.array(tids, np.int64),
                      {POSE_LYING: np.array([lying[t] for t in tids], np.float32)})  # fmt: skip


def _fired(sc: Scene, frames: list[Detections]) -> list[tuple[int, list[int]]]:
    out = []
    for seq, d in enumerate(frames):
        out += [(seq, f.track_ids) for f in sc.update(seq, seq / FPS, 1000, 1000, d).firings]
    return out


def test_the_fall_rule_needs_the_person_down_for_its_duration() -> None:
    down, nan = {1: 1.0}, {1: float("nan")}
    # lying seen every 5th frame (the watcher's search) counts as staying down; NaN in between is no evidence
    frames = [_frame(down if k % 5 == 0 else nan) for k in range(40)]
    assert _fired(_scene(min_duration_s=3.0), frames) == [(30, [1])]
    # standing up in between starts it over; so does a gap longer than max_gap_s
    up = [_frame(down) for _ in range(20)] + [_frame({1: 0.0})] + [_frame(down) for _ in range(25)]
    assert _fired(_scene(min_duration_s=3.0), up) == []
    gap = [_frame(down) for _ in range(20)] + [_frame({}) for _ in range(20)] + [_frame(down) for _ in range(25)]
    assert _fired(_scene(min_duration_s=3.0, max_gap_s=1.5), gap) == []
    assert _fired(_scene(min_duration_s=1.0), [_frame({1: 1.0, 2: 0.0}) for _ in range(15)]) == [(10, [1])]


def test_the_fall_classifier_on_onnxruntime_matches_eager_torch() -> None:
    from stages.infer import backend as bk
    from stages.track.fall import FEATURES, SEQ

    if not bk.available("onnxruntime"):
        pytest.skip("onnxruntime not installed")
    ref, got = FallWatcher(backend="torch"), FallWatcher(backend="onnxruntime")
    assert got.net.backend == "onnxruntime"
    x = np.random.default_rng(0).normal(0, 0.3, (8, SEQ, FEATURES)).astype(np.float32)
    assert np.abs(ref.classify(x) - got.classify(x)).max() < 1e-4


def test_training_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tools/train_fall.py on one scene per split, one epoch: sightings, training, calibration, weights the watcher
    loads, held-out figures printed."""
    from tools.train_fall import main

    main(["--train-scenes", "1", "--tune-scenes", "1", "--eval-scenes", "1", "--epochs", "1", "--out", str(tmp_path / "f.pt")])
    out = capsys.readouterr().out
    assert "HELD-OUT" in out and "fallen" in out
    w = FallWatcher(weights=tmp_path / "f.pt")
    assert 0.5 <= w.cal.threshold <= 1.0
