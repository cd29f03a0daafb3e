"""light_change and sign_seen on scripted tracks, through the analyze scene as the stage runs it: tracked traffic
lights whose state changes, and tracked traffic signs whose class settles."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline import wire
from pipeline.categories import category_id
from pipeline.detections import SIGN_CLASS, SIGN_SCORE, Detections
from stages.analyze.options import StreamAnalyticsConfig
from stages.analyze.rule import Firing
from stages.analyze.scene import Scene
from stages.infer.signs.classes import SIGN_CLASSES

FPS = 10.0
LIGHT, SIGN, CAR = category_id("traffic_light"), category_id("traffic_sign"), category_id("car")
RED, YELLOW, GREEN, UNKNOWN = 0, 1, 2, -1
G, Y, R, U = GREEN, YELLOW, RED, UNKNOWN


def scene(rules: list[dict], forget_after_s: float = 10.0) -> Scene:
    cfg = StreamAnalyticsConfig.model_validate(
        {"frame_size": [1000, 1000], "zones": {"mast": {"points": [[0, 0], [500, 0], [500, 300], [0, 300]]}}, "rules": rules}
    )
    return Scene(cfg, forget_after_s=forget_after_s, speed_window_s=1.0)


def light_box(tid: int) -> list[float]:
    """Light `tid` hangs at x = 100 * tid, y 100..160 (inside the `mast` zone for tid < 5)."""
    return [100.0 * tid - 10, 100, 100.0 * tid + 10, 160]


def lights(frame: list[tuple[int, int]]) -> Detections:
    """One frame's traffic lights, (track id, light.state), and a car with no state."""
    boxes = [light_box(t) for t, _ in frame] + [[400, 600, 440, 630]]
    return Detections(
        boxes=np.array(boxes, np.float32), scores=np.ones(len(boxes), np.float32),
        class_ids=np.array([LIGHT] * len(frame) + [CAR], np.int32),
        track_ids=np.array([t for t, _ in frame] + [50], np.int64),
        extra={"light.state": np.array([s for _, s in frame] + [-1], np.int32)},
    )  # fmt: skip


def feed(sc: Scene, frames: list[Detections], start: int = 0) -> list[tuple[int, Firing]]:
    out = []
    for seq, d in enumerate(frames, start):
        out += [(seq, f) for f in sc.update(seq, seq / FPS, 1000, 1000, d).firings]
    return out


def changes(sc: Scene, frames: list[list[tuple[int, int]]]) -> list[tuple[int, list[int], str | None, str]]:
    """(frame, track ids, from_state, to_state) of each firing."""
    return [(seq, f.track_ids, f.details["from_state"], f.details["to_state"]) for seq, f in feed(sc, [lights(fr) for fr in frames])]


def one_light(states: list[int], tid: int = 1) -> list[list[tuple[int, int]]]:
    return [[(tid, s)] for s in states]


LIGHT_RULE = {"name": "lights", "type": "light_change"}


def test_a_light_going_green_yellow_red_is_two_changes() -> None:
    sc = scene([LIGHT_RULE])
    fired = feed(sc, [lights(fr) for fr in one_light([G, G, Y, Y, R, R])])
    assert [(seq, f.track_ids, f.details["from_state"], f.details["to_state"]) for seq, f in fired] == [
        (3, [1], "green", "yellow"),  # a new state counts on its second reading in a row (min_frames 2)
        (5, [1], "yellow", "red"),
    ]
    f = fired[0][1]
    assert (f.kind, f.severity, f.event, f.message) == ("light_change", "info", "new", "traffic_light #1 changed green -> yellow")


def test_a_one_frame_misread_is_no_change() -> None:
    assert changes(scene([LIGHT_RULE]), one_light([G, G, R, G, G, Y, G, G])) == []
    # ... and a run has to be in a row: yellow, green, yellow is not two yellows
    assert changes(scene([LIGHT_RULE]), one_light([G, G, Y, G, Y, G])) == []
    # A stricter debounce (the first state, too, needs three readings).
    assert changes(scene([{**LIGHT_RULE, "min_frames": 3}]), one_light([G, G, G, Y, Y, G, Y, Y, Y])) == [(8, [1], "green", "yellow")]
    assert changes(scene([{**LIGHT_RULE, "min_frames": 3}]), one_light([G, G, Y, Y, Y])) == []  # green never settled: yellow is the first


def test_unknown_never_counts_and_does_not_break_a_run() -> None:
    assert changes(scene([LIGHT_RULE]), one_light([G, G, U, U, U, G, G])) == []
    assert changes(scene([LIGHT_RULE]), one_light([G, G, Y, U, Y])) == [(4, [1], "green", "yellow")]
    # A track that starts unknown: its first known state is still not a change.
    assert changes(scene([LIGHT_RULE]), one_light([U, U, U, R, R, R])) == []


def test_the_first_state_is_reported_only_when_asked() -> None:
    sc = scene([{**LIGHT_RULE, "report_first": True}])
    fired = feed(sc, [lights(fr) for fr in one_light([U, R, R, R, G, G])])
    assert [(seq, f.details["from_state"], f.details["to_state"]) for seq, f in fired] == [(2, None, "red"), (5, "red", "green")]
    assert fired[0][1].message == "traffic_light #1 shows red"


def test_two_lights_are_followed_each_by_its_track() -> None:
    # Light 1 stays red, light 2 goes red -> green; a rule that mixed them up would see red/green flip every frame.
    frames = [[(1, R), (2, R)]] * 3 + [[(1, R), (2, G)]] * 3
    assert changes(scene([LIGHT_RULE]), frames) == [(4, [2], "red", "green")]
    # Interleaved changes: each light's own run counts, whatever the other one does.
    frames = [[(1, G), (2, R)], [(1, G), (2, R)], [(1, Y), (2, G)], [(1, Y), (2, R)], [(1, Y), (2, G)], [(1, R), (2, G)], [(1, R)]]
    assert changes(scene([LIGHT_RULE]), frames) == [(3, [1], "green", "yellow"), (5, [2], "red", "green"), (6, [1], "yellow", "red")]


def test_only_confirmed_tracks_of_the_light_classes_count() -> None:
    unconfirmed = one_light([G, G, Y, Y, R, R], tid=-1)
    assert changes(scene([LIGHT_RULE]), unconfirmed) == []
    # The car carries a state too here: the default classes (traffic_light) leave it out.
    frames = []
    for s in [G, G, Y, Y]:
        d = lights([(1, R)])
        d.extra["light.state"][-1] = s
        frames.append(d)
    assert [f.track_ids for _, f in feed(scene([LIGHT_RULE]), frames)] == []
    assert [f.track_ids for _, f in feed(scene([{**LIGHT_RULE, "classes": ["car"]}]), frames)] == [[50]]


def test_the_zone_and_the_column_are_options() -> None:
    frames = [[(1, G), (7, G)]] * 2 + [[(1, Y), (7, Y)]] * 2  # light 7 hangs outside the `mast` zone
    assert [t for _, t, _, _ in changes(scene([LIGHT_RULE]), frames)] == [[1], [7]]
    assert [t for _, t, _, _ in changes(scene([{**LIGHT_RULE, "zone": "mast"}]), frames)] == [[1]]
    assert changes(scene([{**LIGHT_RULE, "light_column": "lamp.state"}]), frames) == []
    with pytest.raises(ValidationError, match="no zone named 'pole'"):
        scene([{**LIGHT_RULE, "zone": "pole"}])


def test_a_light_forgotten_after_it_is_gone_starts_afresh() -> None:
    sc = scene([LIGHT_RULE], forget_after_s=1.0)
    # Green, then unseen for 0.5 s: still known, so red is a change.
    fired = feed(sc, [lights(fr) for fr in one_light([G, G]) + [[]] * 5 + one_light([R, R])])
    assert [(seq, f.details["from_state"]) for seq, f in fired] == [(8, "green")]
    assert 1 in sc.rules[0].lights  # type: ignore[attr-defined]
    # Unseen for 2 s (over forget_after_s): dropped, and its next state is a first state again.
    fired = feed(sc, [lights([])] * 20 + [lights(fr) for fr in one_light([G, G])], start=9)
    assert fired == [] and list(sc.rules[0].lights) == [1]  # type: ignore[attr-defined]
    assert sc.rules[0].lights[1].shown == GREEN  # type: ignore[attr-defined]


def test_the_cooldown_quiets_the_same_change_of_the_same_light() -> None:
    flapping = one_light([G, G, Y, Y, G, G, Y, Y])
    assert len(changes(scene([LIGHT_RULE]), flapping)) == 3
    # green -> yellow again within 10 s is quiet; yellow -> green is another change
    assert [(f, t) for _, _, f, t in changes(scene([{**LIGHT_RULE, "cooldown_s": 10}]), flapping)] == [("green", "yellow"), ("yellow", "green")]


# --- sign_seen ---

SIGN_RULE = {"name": "signs", "type": "sign_seen"}


def signs(frame: list[tuple[int, str | None, float]], labels: list[str] | None = None) -> Detections:
    """One frame's traffic signs, (track id, sign class or None for -1, sign.score), and a car."""
    names = list(SIGN_CLASSES) if labels is None else labels
    boxes = [[100.0 * t, 200, 100.0 * t + 30, 230] for t, _, _ in frame] + [[400, 600, 440, 630]]
    return Detections(
        boxes=np.array(boxes, np.float32), scores=np.ones(len(boxes), np.float32),
        class_ids=np.array([SIGN] * len(frame) + [CAR], np.int32),
        track_ids=np.array([t for t, _, _ in frame] + [50], np.int64),
        extra={SIGN_CLASS: np.array([-1 if c is None else names.index(c) for _, c, _ in frame] + [-1], np.int32),
               SIGN_SCORE: np.array([s for _, _, s in frame] + [np.nan], np.float32)},
        labels={SIGN_CLASS: names},
    )  # fmt: skip


def seen(sc: Scene, frames: list[list[tuple[int, str | None, float]]], labels: list[str] | None = None) -> list[tuple[int, Firing]]:
    return feed(sc, [signs(fr, labels) for fr in frames])


def test_a_sign_track_fires_once_with_its_majority_class() -> None:
    track = [(3, "speed_limit_30", 0.6)] + [(3, "speed_limit_50", s) for s in (0.9, 0.8, 0.7, 0.9)] + [(3, "speed_limit_30", 0.9)] * 2
    fired = seen(scene([SIGN_RULE]), [[o] for o in track])
    assert len(fired) == 1
    seq, f = fired[0]
    assert seq == 3 and f.track_ids == [3] and f.severity == "info" and f.kind == "sign_seen"  # the third confident 50
    assert f.details == {"sign_class": "speed_limit_50", "mean_score": 0.8, "frames": 3, "box": [300.0, 200.0, 330.0, 230.0]}
    assert f.message == "traffic_sign #3: speed_limit_50 (mean score 0.80 over 3 frames)"
    assert wire.scalar(f.details, "alert details") == f.details  # plain, finite: what an alert off the wire may carry


def test_the_leader_must_have_the_most_votes_and_enough_confident_frames() -> None:
    # 4 frames of 50 (one of them unsure) and 1 of 30: settled at the third confident 50.
    track = [(1, "speed_limit_50", 0.9), (1, "speed_limit_30", 0.9), (1, "speed_limit_50", 0.3), (1, "speed_limit_50", 0.9), (1, "speed_limit_50", 0.9)]
    fired = seen(scene([SIGN_RULE]), [[o] for o in track])
    assert [(seq, f.details["sign_class"], f.details["frames"], f.details["mean_score"]) for seq, f in fired] == [(4, "speed_limit_50", 4, 0.75)]
    # Three confident 30s, but 50 has as many votes: a tie is not settled; the next 50 settles it.
    track = [(1, "speed_limit_50", 0.2)] * 3 + [(1, "speed_limit_30", 0.9)] * 3 + [(1, "speed_limit_50", 0.9)] * 3
    assert [(seq, f.details["sign_class"]) for seq, f in seen(scene([SIGN_RULE]), [[o] for o in track])] == [(8, "speed_limit_50")]


def test_a_sign_below_min_score_never_fires() -> None:
    track = [[(1, "stop", 0.45)]] * 40
    assert seen(scene([SIGN_RULE]), track) == []
    assert len(seen(scene([{**SIGN_RULE, "min_score": 0.4}]), track)) == 1
    assert seen(scene([SIGN_RULE]), [[(1, "stop", float("nan"))]] * 10) == []  # no score: never sure


def test_rows_without_a_class_and_unconfirmed_rows_are_ignored() -> None:
    frames = [[(1, None, 0.9)]] * 10 + [[(1, "stop", 0.9)]] * 2 + [[(-1, "stop", 0.9)]] * 5
    assert seen(scene([SIGN_RULE]), frames) == []
    assert len(seen(scene([SIGN_RULE]), frames + [[(1, "stop", 0.9)]])) == 1


def test_each_sign_track_fires_and_the_class_filter_picks_them() -> None:
    frames = [[(1, "stop", 0.9), (2, "no_entry", 0.8)]] * 5
    assert sorted((f.track_ids[0], f.details["sign_class"]) for _, f in seen(scene([SIGN_RULE]), frames)) == [(1, "stop"), (2, "no_entry")]
    only = scene([{**SIGN_RULE, "classes": ["no_entry", "danger"]}])
    assert [(f.track_ids, f.details["sign_class"]) for _, f in seen(only, frames)] == [([2], "no_entry")]


def test_classes_are_named_by_the_detections_labels() -> None:
    """Codes index the frame's labels of sign.class (concatenated detections may order them their own way)."""
    labels = ["danger", "stop"]
    fired = seen(scene([SIGN_RULE]), [[(1, "stop", 0.9)]] * 3, labels=labels)
    assert [f.details["sign_class"] for _, f in fired] == ["stop"]


def test_a_sign_track_forgotten_after_it_is_gone_can_fire_again() -> None:
    sc = scene([SIGN_RULE], forget_after_s=1.0)
    frames = [[(1, "stop", 0.9)]] * 5 + [[]] * 20 + [[(1, "stop", 0.9)]] * 5
    assert [seq for seq, _ in seen(sc, frames)] == [2, 27]
    assert list(sc.rules[0].signs) == [1]  # type: ignore[attr-defined]


def test_an_unknown_sign_class_is_a_clear_error() -> None:
    with pytest.raises(ValidationError) as err:
        scene([{**SIGN_RULE, "classes": ["stop", "speed_limit_55", "car"]}])
    text = str(err.value)
    assert "unknown sign classes 'speed_limit_55', 'car'; known: " + ", ".join(SIGN_CLASSES) in text
    with pytest.raises(ValidationError, match="unknown sign class 'Stop'; known: stop, give_way"):
        scene([{**SIGN_RULE, "classes": ["Stop"]}])
