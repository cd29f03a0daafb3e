"""The anomaly rule on scripted scores, through the analyze scene as the stage runs it: a score must stay at or above
the threshold for min_duration_s, NaN or a dip ends the run, one alert per track within the cooldown."""

from __future__ import annotations

import numpy as np

from pipeline.categories import category_id
from pipeline.detections import Detections
from stages.analyze.options import StreamAnalyticsConfig
from stages.analyze.scene import Scene

FPS = 10.0
PERSON, CAR = category_id("person"), category_id("car")


def scene(**rule: object) -> Scene:
    cfg = StreamAnalyticsConfig.model_validate({"frame_size": [1000, 1000], "rules": [{"name": "odd", "type": "anomaly", **rule}]})
    return Scene(cfg, forget_after_s=10.0, speed_window_s=1.0)


def frame(scores: dict[int, float], cls: int = PERSON) -> Detections:
    tids = sorted(scores)
    return Detections(
        boxes=np.array([[100.0 * t, 100, 100.0 * t + 30, 190] for t in tids], np.float32), scores=np.ones(len(tids), np.float32),
        class_ids=np.full(len(tids), cls, np.int32), track_ids=np.array(tids, np.int64),
        extra={"anomaly.score": np.array([scores[t] for t in tids], np.float32)},
    )  # fmt: skip


def fired(sc: Scene, frames: list[Detections]) -> list[tuple[int, list[int]]]:
    out = []
    for seq, d in enumerate(frames):
        out += [(seq, f.track_ids) for f in sc.update(seq, seq / FPS, 1000, 1000, d).firings]
    return out


def test_fires_once_after_the_score_stays_high_for_the_duration() -> None:
    scores = [0.5, 1.2, 1.3, 1.5, 1.4, 1.6, 1.2, 1.1, 1.3, 1.2, 1.4, 1.5, 1.3, 1.2] + [1.5] * 20
    got = fired(scene(min_duration_s=1.0), [frame({1: s}) for s in scores])
    assert got == [(11, [1])]  # above from frame 1; 1.0 s later is frame 11; then quiet (cooldown 30 s)


def test_a_dip_or_no_score_starts_the_run_again() -> None:
    scores = [1.5] * 8 + [0.9] + [1.5] * 8 + [float("nan")] + [1.5] * 11
    got = fired(scene(min_duration_s=1.0), [frame({1: s}) for s in scores])
    assert got == [(28, [1])]  # the third run, from frame 18, is the first to last 1 s


def test_tracks_are_judged_apart_and_other_classes_ignored() -> None:
    frames = [frame({1: 2.0, 2: 0.2}) for _ in range(15)] + [frame({3: 5.0}, cls=CAR) for _ in range(15)]
    assert fired(scene(min_duration_s=0.5), frames) == [(5, [1])]
    assert fired(scene(min_duration_s=0.5, threshold=3.0), [frame({1: 2.0}) for _ in range(20)]) == []


def test_rows_without_a_confirmed_track_do_not_shift_the_scores() -> None:
    """The frame's unconfirmed rows (track id -1, score NaN) sit between tracked ones: each track is judged on its own
    score and named in the message (a replay of a generated clip once skipped such frames with a shape error)."""
    sc = scene(min_duration_s=0.5)
    got = []
    for seq in range(12):
        d = Detections(
            boxes=np.array([[0, 0, 30, 90], [100, 0, 130, 90], [200, 0, 230, 90], [300, 0, 330, 90]], np.float32),
            scores=np.ones(4, np.float32), class_ids=np.array([PERSON, PERSON, PERSON, CAR], np.int32),
            track_ids=np.array([-1, 7, -1, 9], np.int64), extra={"anomaly.score": np.array([np.nan, 3.0, np.nan, 0.2], np.float32)},
        )  # fmt: skip
        got += [(seq, f.track_ids, f.message) for f in sc.update(seq, seq / FPS, 1000, 1000, d).firings]
    assert [(s, t) for s, t, _ in got] == [(5, [7])]
    assert got[0][2].startswith("person #7 moves abnormally")
