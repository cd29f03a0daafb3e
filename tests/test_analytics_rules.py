"""The analyze rules on scripted tracks: each rule fires once per episode, at the right time, and only then."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.alert import alert_id
from pipeline.categories import category_id
from pipeline.detections import FACE_DISTANCE, FACE_IDENTITY, Detections
from stages.analyze.options import AnalyzeOptions, StreamAnalyticsConfig
from stages.analyze.scene import Scene

FPS = 10.0
PERSON, CAR = category_id("person"), category_id("car")


def scene(rules: list[dict], **extra: object) -> Scene:
    cfg = StreamAnalyticsConfig.model_validate(
        {
            "frame_size": [1000, 1000],
            "zones": {"lawn": {"points": [[500, 500], [1000, 500], [1000, 1000], [500, 1000]]}},
            "lines": {"gate": {"points": [[300, 0], [300, 1000]]}},
            "rules": rules,
            **extra,
        }
    )
    return Scene(cfg, forget_after_s=10.0, speed_window_s=1.0)


def box(x: float, y: float, w: float = 20, h: float = 60) -> list[float]:
    """A box standing with its feet (bottom centre) at (x, y)."""
    return [x - w / 2, y - h, x + w / 2, y]


def run(sc: Scene, frames: list[list[tuple[int, int, float, float]]]) -> list[tuple[int, str, list[int]]]:
    """frames: per frame [(track id, class id, feet x, feet y)]; returns (frame, rule, track ids) fired."""
    fired = []
    for seq, objs in enumerate(frames):
        d = Detections(
            boxes=np.array([box(x, y) for _, _, x, y in objs], np.float32).reshape(-1, 4),
            scores=np.ones(len(objs), np.float32),
            class_ids=np.array([c for _, c, _, _ in objs], np.int32),
            track_ids=np.array([t for t, _, _, _ in objs], np.int64),
        )
        res = sc.update(seq, seq / FPS, 1000, 1000, d)
        fired += [(seq, f.rule, f.track_ids) for f in res.firings]
    return fired


def walk(tid: int, cls: int, start: tuple[float, float], velocity: tuple[float, float], n: int) -> list[tuple[int, int, float, float]]:
    """n frames of one object moving at `velocity` pixels per second."""
    return [(tid, cls, start[0] + velocity[0] * i / FPS, start[1] + velocity[1] * i / FPS) for i in range(n)]


def frames_of(*tracks: list[tuple[int, int, float, float]]) -> list[list[tuple[int, int, float, float]]]:
    n = max(len(t) for t in tracks)
    return [[t[i] for t in tracks if i < len(t) and t[i] is not None] for i in range(n)]


def test_intrusion_fires_once_after_min_dwell_and_ignores_other_classes() -> None:
    sc = scene([{"name": "lawn", "type": "zone_intrusion", "zone": "lawn", "classes": ["person"], "min_dwell_s": 1.0}])
    person = walk(1, PERSON, (600, 400), (0, 50), 60)  # enters at y=500 (frame 20), stays
    car = walk(2, CAR, (700, 600), (0, 0), 60)
    fired = run(sc, frames_of(person, car))
    assert fired == [(30, "lawn", [1])]  # 1.0 s after its feet crossed into the zone


def test_intrusion_flicker_at_the_edge_is_one_visit() -> None:
    sc = scene([{"name": "lawn", "type": "zone_intrusion", "zone": "lawn", "min_dwell_s": 0.5, "exit_after_s": 1.0, "cooldown_s": 0}])
    # Feet alternate 4 px either side of the zone edge (y=500) for 6 s, plus frames with no detection.
    track = [(1, PERSON, 700.0, 500 + (4 if i % 3 else -4)) if i % 7 else None for i in range(60)]
    # first inside at frame 1; frames 3, 6 outside and 7 missing do not end the visit: 0.5 s is reached at 8
    assert run(sc, frames_of(track)) == [(8, "lawn", [1])]


def test_unconfirmed_tracks_never_fire() -> None:
    sc = scene([{"name": "lawn", "type": "zone_intrusion", "zone": "lawn", "min_dwell_s": 0.0}])
    assert run(sc, frames_of(walk(-1, PERSON, (700, 700), (0, 0), 50))) == []


def test_loitering_fires_at_the_limit_not_before() -> None:
    sc = scene([{"name": "loiter", "type": "loitering", "zone": "lawn", "limit_s": 5.0}])
    short = walk(1, PERSON, (600, 600), (10, 0), 45)  # 4.5 s in the zone
    long = walk(2, PERSON, (800, 800), (0, 0), 80)  # 8 s
    assert run(sc, frames_of(short, long)) == [(50, "loiter", [2])]


def test_cooldown_swallows_a_quick_return() -> None:
    sc = scene([{"name": "lawn", "type": "zone_intrusion", "zone": "lawn", "min_dwell_s": 0.2, "exit_after_s": 0.5, "cooldown_s": 30}])
    inside = [(1, PERSON, 700.0, 700.0)]
    outside = [(1, PERSON, 100.0, 100.0)]
    frames = [inside] * 10 + [outside] * 20 + [inside] * 10 + [outside] * 300 + [inside] * 10
    fired = run(sc, frames)
    assert [f[0] for f in fired] == [2, 342]  # the return at frame 30 is within 30 s; the one at 340 is not
    assert sc.rules[0].suppressed == 1


def test_line_crossing_by_direction() -> None:
    sc = scene(
        [
            {"name": "east", "type": "line_crossing", "line": "gate", "direction": "out"},
            {"name": "any", "type": "line_crossing", "line": "gate"},
        ]
    )
    # gate runs a=(300,0) -> b=(300,1000), downwards: its left (the `in` side) is +x... as seen from a to b
    # with image y down, left of "down" is +x. So moving right is `in`, moving left is `out`.
    right = walk(1, PERSON, (200, 300), (100, 0), 30)
    left = walk(2, PERSON, (400, 600), (-100, 0), 30)
    fired = run(sc, frames_of(right, left))
    assert sorted(fired) == [(11, "any", [1]), (11, "any", [2]), (11, "east", [2])]  # beyond the 8 px band
    assert sc.counters["gate"].counts == {"in": 1, "out": 1}


def test_wrong_way_needs_speed_direction_and_duration() -> None:
    sc = scene([{"name": "lane", "type": "wrong_way", "zone": "lawn", "direction": [1, 0], "min_speed": 20, "for_s": 1.0}])
    good = walk(1, PERSON, (550, 600), (40, 0), 40)
    bad = walk(2, PERSON, (950, 800), (-40, 0), 40)
    idle = [(3, PERSON, 700.0 + (1 if i % 2 else -1), 900.0) for i in range(40)]  # jitter, no movement
    fired = run(sc, frames_of(good, bad, idle))
    # velocity needs half a window (0.5 s) of history, then 1.0 s of wrong-way movement
    assert fired == [(15, "lane", [2])]


def test_overcrowding_needs_the_count_for_the_duration() -> None:
    sc = scene([{"name": "crowd", "type": "overcrowding", "zone": "lawn", "max_count": 2, "for_s": 2.0}])
    stay = [walk(t, PERSON, (600 + 50 * t, 700), (0, 0), 60) for t in (1, 2)]
    brief = walk(3, PERSON, (900, 900), (0, 0), 15)  # 1.5 s: too short
    late = [None] * 30 + walk(4, PERSON, (800, 800), (0, 0), 30)  # from frame 30 on
    fired = run(sc, frames_of(*stay, brief, late))
    assert fired == [(50, "crowd", [1, 2, 4])]


def test_speed_in_metres_per_second_through_the_ground_plane() -> None:
    ground = {"image": [[0, 0], [1000, 0], [1000, 1000], [0, 1000]], "ground": [[0, 0], [50, 0], [50, 50], [0, 50]]}
    sc = scene([{"name": "fast", "type": "speed", "limit": 3.0, "unit": "m/s"}], ground_plane=ground)  # 20 px per metre
    slow = walk(1, PERSON, (100, 100), (40, 0), 40)  # 2 m/s
    fast = walk(2, PERSON, (100, 300), (100, 0), 40)  # 5 m/s
    fired = run(sc, frames_of(slow, fast))
    assert [f[1:] for f in fired] == [("fast", [2])]
    assert sc.motion[2].speed() == pytest.approx(5.0, rel=1e-6)
    assert sc.motion[1].speed() == pytest.approx(2.0, rel=1e-6)


def test_stopped_vehicle_only_for_vehicles_that_stay_still() -> None:
    sc = scene([{"name": "parked", "type": "stopped_vehicle", "for_s": 5.0, "max_speed": 5.0}])
    car = [(1, CAR, 200.0 + (1 if i % 2 else 0), 200.0) for i in range(100)]  # 1 px jitter
    moving = walk(2, CAR, (100, 800), (50, 0), 100)
    person = walk(3, PERSON, (500, 200), (0, 0), 100)
    fired = run(sc, frames_of(car, moving, person))
    assert fired == [(55, "parked", [1])]  # speed is known from 0.5 s on; then 5 s still


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ValidationError) as err:
        StreamAnalyticsConfig.model_validate(
            {
                "frame_size": [640, 480],
                "zones": {"bow": {"points": [[0, 0], [100, 100], [100, 0], [0, 100]]}, "far": {"points": [[0, 0], [700, 0], [0, 10]]}},
                "lines": {"dot": {"points": [[5, 5], [5, 5]]}},
                "rules": [{"name": "a", "type": "loitering", "zone": "nope"}, {"name": "b", "type": "speed", "limit": 1, "unit": "m/s"}],
            }
        )
    text = str(err.value)
    for part in ("intersects itself", "outside the 640x480 frame", "zero length", "no zone named 'nope'", "m/s needs a ground_plane"):
        assert part in text
    with pytest.raises(ValidationError, match="three of the image points lie on one line"):
        StreamAnalyticsConfig.model_validate(
            {"frame_size": [640, 480], "ground_plane": {"image": [[0, 0], [10, 10], [20, 20], [0, 100]], "ground": [[0, 0], [1, 0], [1, 1], [0, 1]]}}
        )
    opts = AnalyzeOptions.model_validate({"streams": {"cam9": {"frame_size": [640, 480]}}})
    assert opts.check_against(["cam1"]) == [("streams.cam9", "no stream 'cam9' in the config; streams: cam1")]


def test_relative_geometry_and_other_frame_sizes_scale() -> None:
    cfg = StreamAnalyticsConfig.model_validate(
        {
            "frame_size": [1000, 1000],
            "zones": {"rel": {"points": [[0.5, 0.5], [1, 0.5], [1, 1], [0.5, 1]], "relative": True}},
            "lines": {"gate": {"points": [[300, 0], [300, 1000]]}},
        }
    )
    sc = Scene(cfg, 10.0, 1.0)
    d = Detections(boxes=np.array([box(400, 400)], np.float32), scores=[1.0], class_ids=[PERSON], track_ids=[1])
    res = sc.update(0, 0.0, 500, 500, d)  # half the configured size
    assert sc.lines["gate"].a.tolist() == [150.0, 0.0] and sc.zones["rel"].polygon[0].tolist() == [250.0, 250.0]
    assert res.occupancy == {"rel": 1} and sc.scale_warning


def test_alert_ids_are_deterministic_and_distinct() -> None:
    a = alert_id("cam", 0, "lawn", [3, 1], 120)
    assert a == alert_id("cam", 0, "lawn", [1, 3], 120)
    assert len({a, alert_id("cam", 0, "lawn", [1, 3], 121), alert_id("cam", 5, "lawn", [1, 3], 120), alert_id("cam2", 0, "lawn", [1, 3], 120)}) == 4


def test_a_bad_analytics_config_stops_the_whole_config_with_paths() -> None:
    from pipeline.config import ConfigError, parse_config

    data = {
        "streams": [{"id": "cam1", "source": "a.mp4"}],
        "stages": [
            {"name": "decode", "kind": "decode"},
            {"name": "analyze", "kind": "analyze", "options": {"streams": {
                "cam1": {"frame_size": [640, 480], "lines": {"gate": {"points": [[0, 0], [900, 0]]}}},
                "cam9": {"frame_size": [640, 480]},
            }}},
            {"name": "alert", "kind": "alert", "options": {"sinks": {"hook": {"type": "webhook", "url": "ftp://x"}}}},
        ],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    problems = dict(err.value.problems)
    assert "outside the 640x480 frame" in problems["stages[1].options.streams.cam1"]
    assert "must be an http:// or https:// URL" in problems["stages[2].options.sinks.hook.url"]
    data["stages"][1]["options"]["streams"]["cam1"]["lines"]["gate"]["points"] = [[0, 0], [600, 0]]
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert ("stages[1].options.streams.cam9", "no stream 'cam9' in the config; streams: cam1") in err.value.problems


def test_watchlist_fires_per_identity_after_min_frames_then_cools_down() -> None:
    sc = scene([{"name": "listed", "type": "watchlist", "min_frames": 2, "within_s": 1.0, "cooldown_s": 5.0}])
    face = box(500, 300, 30, 40)
    fired = []
    for seq in range(120):
        # "ann" is matched in frames 10 and 30 only (a one-off lookalike each time), then from 50 on.
        hit = seq in (10, 30) or seq >= 50
        d = Detections(boxes=np.array([face], np.float32), scores=[0.99], class_ids=[category_id("face")], track_ids=[-1],
                       extra={FACE_IDENTITY: np.array([0 if hit else -1], np.int32), FACE_DISTANCE: np.array([0.41], np.float32)},
                       labels={FACE_IDENTITY: ["ann"]})
        res = sc.update(seq, seq / FPS, 1000, 1000, d)
        fired += [(seq, f.details["identity"], f.boxes) for f in res.firings]
    # two frames in a row; after the 5 s cooldown, two frames again
    assert [f[:2] for f in fired] == [(51, "ann"), (102, "ann")]
    assert fired[0][2] == [face]


def test_a_lasting_condition_reports_updates_and_its_end_when_asked() -> None:
    """Loitering from 3 s, reported every 2 s while it lasts and once when the person has left (exit_after_s)."""
    rule = {"name": "linger", "type": "loitering", "zone": "lawn", "limit_s": 3, "exit_after_s": 1,
            "report_end": True, "update_every_s": 2}
    sc = scene([rule])
    inside = [(1, PERSON, 700.0, 700.0)] * 80  # 8 s on the lawn
    events = []
    for seq, objs in enumerate([[o] for o in inside] + [[]] * 30):  # then gone
        d = Detections(boxes=np.array([box(x, y) for _, _, x, y in objs], np.float32).reshape(-1, 4),
                       scores=np.ones(len(objs), np.float32), class_ids=np.array([c for _, c, _, _ in objs], np.int32),
                       track_ids=np.array([t for t, _, _, _ in objs], np.int64))
        events += [(seq, f.event, f.track_ids, f.details.get("lasted_s")) for f in sc.update(seq, seq / FPS, 1000, 1000, d).firings]
    assert [(s, e) for s, e, _, _ in events] == [(30, "new"), (50, "update"), (70, "update"), (90, "end")]
    assert all(t == [1] for _, _, t, _ in events)
    assert events[1][3] == 2.0 and events[-1][3] == 6.0  # the end: from the firing at 3 s to the last second seen, 1 s grace
    # Off by default: the same rule without them fires once.
    plain = scene([{k: v for k, v in rule.items() if k not in ("report_end", "update_every_s")}])
    assert [f for f, _, _ in run(plain, [[o] for o in inside] + [[]] * 30)] == [30]


LIGHT = category_id("traffic_light")


def _frame(cars: list[tuple[int, float, float]], lights: list[tuple[list[float], int]]) -> Detections:
    """Cars (track id, feet x, feet y) and traffic lights (box, state code) with the light-state column."""
    boxes = [box(x, y, 40, 30) for _, x, y in cars] + [b for b, _ in lights]
    n = len(boxes)
    return Detections(
        boxes=np.array(boxes, np.float32).reshape(-1, 4), scores=np.ones(n, np.float32),
        class_ids=np.array([CAR] * len(cars) + [LIGHT] * len(lights), np.int32),
        track_ids=np.array([t for t, _, _ in cars] + [-1] * len(lights), np.int64),
        extra={"light.state": np.array([-1] * len(cars) + [s for _, s in lights], np.int32)},
    )


def _drive(sc: Scene, light_of_frame: list[list[tuple[list[float], int]]]) -> list[tuple[int, str, list[int], str]]:
    """Car 1 drives right along y=400 across the `gate` line (x=300) at frame 10; the lights per frame are given."""
    out = []
    for seq, lights in enumerate(light_of_frame):
        res = sc.update(seq, seq / FPS, 1000, 1000, _frame([(1, 200 + 10 * seq, 400)], lights))
        out += [(seq, f.rule, f.track_ids, f.details.get("light", "")) for f in res.firings]
    return out


RED_ABOVE, GREEN_FAR = ([280, 100, 300, 150], 0), ([900, 100, 920, 150], 2)


def test_red_light_fires_for_a_vehicle_crossing_on_red_only() -> None:
    rule = {"name": "redlight", "type": "red_light", "line": "gate"}
    assert _drive(scene([rule]), [[RED_ABOVE]] * 20) == [(11, "redlight", [1], "red")]
    assert _drive(scene([rule]), [[([280, 100, 300, 150], 2)]] * 20) == []  # green: free to go
    assert _drive(scene([rule]), [[([280, 100, 300, 150], 1)]] * 20) == []  # yellow does not forbid, by default
    yellow_too = {**rule, "stop_on": ["red", "yellow"]}
    assert [f[3] for f in _drive(scene([yellow_too]), [[([280, 100, 300, 150], 1)]] * 20)] == ["yellow"]


def test_the_governing_light_is_the_nearest_above_or_the_one_in_its_zone() -> None:
    rule = {"name": "redlight", "type": "red_light", "line": "gate"}
    # Nearest above the line's middle (300, 500): the red one right above it, not the green one far right.
    assert len(_drive(scene([rule]), [[RED_ABOVE, GREEN_FAR]] * 20)) == 1
    # Said in the config: the zone holding the green light governs.
    zones = {"lawn": {"points": [[500, 500], [1000, 500], [1000, 1000], [500, 1000]]},
             "mast": {"points": [[850, 50], [950, 50], [950, 200], [850, 200]]}}
    assert _drive(scene([{**rule, "light_zone": "mast"}], zones=zones), [[RED_ABOVE, GREEN_FAR]] * 20) == []
    # A light missed by the detector for a few frames still governs (hold_s), not for longer.
    flicker = [[RED_ABOVE]] * 8 + [[]] * 12
    assert len(_drive(scene([rule]), flicker)) == 1
    assert _drive(scene([{**rule, "hold_s": 0.1}]), flicker) == []
