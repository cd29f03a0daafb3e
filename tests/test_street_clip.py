"""The generated street clip (tools/street_clip.py) replayed through the real pipeline: a traffic light turns red
while cars cross its stop line, and the red_light rule must raise exactly the alerts the clip's ground truth says.

Real processes and models throughout (decode, COCO-SSD with the light as a fixed object read by the light-state
CNN, the tracker, analyze, alert, record), as a CI check of the whole chain on a scene whose answer is known to the
frame: which cars cross on red, and when.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.analytics import record_alerts, record_crossings
from tests.helpers.procs import run_vidpipe
from tools.street_clip import LIGHT_STATES, StreetSpec, make_clip, truth_json, write_clip

TOLERANCE = 2  # frames between a crossing in the ground truth and where the pipeline counts it


def iou(a: list[float], b: list[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)


def test_the_same_seed_gives_the_same_clip(tmp_path: Path) -> None:
    a, b, other = make_clip(StreetSpec(seed=7)), make_clip(StreetSpec(seed=7)), make_clip(StreetSpec(seed=8))
    assert truth_json(a.truth) == truth_json(b.truth)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames[:10], b.frames[:10]))
    pa, pb = write_clip(a, tmp_path / "a"), write_clip(b, tmp_path / "b")
    assert pa["video"].read_bytes() == pb["video"].read_bytes() and pa["truth"].read_bytes() == pb["truth"].read_bytes()
    assert truth_json(other.truth) != truth_json(a.truth) and not np.array_equal(other.frames[20], a.frames[20])

    # The plan the replay test relies on: two crossings or more on red and on green or yellow, each clear of the light's changes.
    truth = a.truth
    lights = [c["light"] for c in truth["cars"]]
    assert lights.count("red") >= 2 and len(lights) - lights.count("red") >= 2 and "yellow" in lights
    switches = [s["first_frame"] for s in truth["light"]["schedule"][1:]]
    for c in truth["cars"]:
        assert min(abs(c["crossing_s"] * truth["fps"] - f) for f in switches) >= truth["fps"]  # 1 s
    assert [e["car"] for e in truth["expected_alerts"]] == [c["id"] for c in truth["cars"] if c["light"] == "red"]


@pytest.mark.slow
def test_replay_raises_exactly_the_red_light_alerts_of_the_ground_truth(tmp_path: Path) -> None:
    clip = make_clip(StreetSpec())
    paths = write_clip(clip, tmp_path / "clip")
    truth = clip.truth
    out = tmp_path / "out"
    res = run_vidpipe("replay", "--config", str(paths["config"]), "--out", str(out), "--quiet", timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())["streams"]["street"]
    assert summary["status"] == "complete" and summary["frames"] == truth["frames"]
    jsonl = out / "street.jsonl"
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(truth["frames"]))

    # The drawn light is read as the schedule says, in every frame (the configured fixed box, score 1).
    box = [float(v) for v in truth["light"]["box"]]
    want = {f: s["state"] for s in truth["light"]["schedule"] for f in range(s["first_frame"], s["last_frame"] + 1)}
    for r in records:
        o = r["objects"]
        read = [LIGHT_STATES[st] if st >= 0 else "unread" for b, s, c, st in zip(o["boxes"], o["scores"], o["classes"], o["light.state"])
                if c == "traffic_light" and s == 1.0 and b == box]
        assert read == [want[r["seq"]]], f"frame {r['seq']}: light read {read}, shown {want[r['seq']]}"

    # Detection and tracking: every car, on whatever light, is counted over the stop line once, the way it drives,
    # where the ground truth says. (A car taken for an earlier one of the same look can jump back over the line: the
    # other way, which the rule does not count.)
    forward = sorted(f for f, d, _ in record_crossings(jsonl) if d == truth["stop_line"]["direction"])
    assert len(forward) == len(truth["cars"]), (forward, [c["count_frame"] for c in truth["cars"]])
    for c, f in zip(truth["cars"], forward):
        assert abs(f - c["count_frame"]) <= TOLERANCE, (c["id"], f, c["count_frame"])

    # The alerts: exactly the crossings on red, one each, at the crossing, on the right car, with the light red.
    everything = record_alerts(jsonl)
    alerts = [a for a in everything if a["rule"] == "red-light"]
    expected = truth["expected_alerts"]
    assert len(alerts) == len(expected), ([(a["seq"], a["message"]) for a in alerts], expected)
    cars = {c["id"]: c for c in truth["cars"]}
    for a, e in zip(sorted(alerts, key=lambda a: a["seq"]), expected):
        assert a["rule"] == "red-light" and a["kind"] == "red_light" and a["severity"] == "critical"
        assert abs(a["seq"] - e["frame"]) <= TOLERANCE, (a["seq"], e)
        assert a["details"]["light"] == "red" and a["details"]["direction"] == truth["stop_line"]["direction"]
        car_box = next(b[1:] for b in cars[e["car"]]["boxes"] if b[0] == a["seq"])
        assert iou(a["boxes"][0], car_box) > 0.5, (a["boxes"], car_box)
    for c in truth["cars"]:
        if c["light"] != "red":  # no alert anywhere near a crossing on green or yellow
            assert not [a for a in alerts if abs(a["seq"] - c["count_frame"]) <= 5], (c, alerts)

    # The light is tracked like any object, so its changes are events: one light_change per switch of the schedule,
    # on the frame of the switch or the next (a new state counts once read on 2 frames in a row).
    changes = [(a["seq"], a["details"]["from_state"], a["details"]["to_state"]) for a in everything if a["rule"] == "light-changes"]
    schedule = truth["light"]["schedule"]
    assert [c[1:] for c in changes] == [(a["state"], b["state"]) for a, b in zip(schedule, schedule[1:])], changes
    for (seq, _, _), s in zip(changes, schedule[1:]):
        assert s["first_frame"] <= seq <= s["first_frame"] + 2, (seq, s)
    assert len({a["track_ids"][0] for a in everything if a["rule"] == "light-changes"}) == 1  # one light, one track

    # The alert stage delivered the same alerts to its JSONL sink, each with its snapshot.
    delivered = [json.loads(line) for line in (paths["config"].parent / "alerts" / "alerts.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in delivered) == sorted(a["id"] for a in everything)
    assert all(Path(x["snapshot_path"]).is_file() for x in delivered)
