"""Signs through the whole chain, real processes and models: a replay of 4 s of vtest.avi with a drawn speed-limit sign
on the grass (found by the colour step) and the clip's own faded warning sign given as a fixed object (too pale
for the colour step; the classifier reads it where its box is known). Each is tracked as one object with its class
in every frame; the drawn sign gets exactly one sign_seen alert. The real sign is read right but unsurely (19 px,
washed out: about 0.4-0.5), below sign_seen's default min_score, so it raises none: the README's real-sign figures."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.helpers.analytics import record_alerts
from tests.helpers.procs import ROOT, run_vidpipe
from tools.sign_render import render_sign

FRAMES = 40
WARNING_SIGN = [589, 43, 608, 62]  # vtest.avi's warning triangle, boxed by eye (tools/train_signs.py REAL_SIGNS)


def _clip(path: Path) -> list[float]:
    """vtest.avi's first FRAMES frames with a 40 px speed limit 50 on a pole on the grass; returns the sign's box."""
    sign = render_sign("speed_limit_50", 40, np.random.default_rng(5))
    h, w = sign.shape[:2]
    x, y = 90, 330
    a = sign[:, :, 3:] / 255.0
    cap = cv2.VideoCapture(str(ROOT / "sample_videos" / "vtest.avi"))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (768, 576))
    for _ in range(FRAMES):
        ok, img = cap.read()
        assert ok
        img[y + h : y + h + 60, x + w // 2 - 2 : x + w // 2 + 2] = 150  # the pole
        img[y : y + h, x : x + w] = (sign[:, :, :3] * a + img[y : y + h, x : x + w] * (1 - a)).astype(np.uint8)
        out.write(img)
    out.release()
    cap.release()
    return [x, y, x + w, y + h]


@pytest.mark.slow
def test_replay_tracks_signs_and_says_once_what_each_is(tmp_path: Path) -> None:
    box = _clip(tmp_path / "signs.avi")
    config = {
        "mode": "replay",
        "streams": [{"id": "signs", "source": str(tmp_path / "signs.avi")}],
        "stages": [
            {"name": "decode", "kind": "decode"},
            {"name": "infer", "kind": "infer", "options": {
                "detector": {"type": "coco_ssd", "classes": ["person", "stop_sign"]},
                "signs": {},
                "fixed_objects": [{"category": "traffic_sign", "box": WARNING_SIGN}],
            }},
            {"name": "track", "kind": "track"},
            {"name": "analyze", "kind": "analyze", "options": {"streams": {"signs": {
                "frame_size": [768, 576], "rules": [{"name": "signs", "type": "sign_seen"}]}}}},
            {"name": "alert", "kind": "alert", "options": {
                "outbox": str(tmp_path / "outbox.db"), "sinks": {"file": {"type": "jsonl", "path": str(tmp_path / "alerts.jsonl")}}}},
            {"name": "record", "kind": "record", "options": {"video": False}},
        ],
    }  # fmt: skip
    cfg = tmp_path / "signs.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / "out"
    res = run_vidpipe("replay", "--config", str(cfg), "--out", str(out), "--quiet", timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr[-5000:]
    records = [json.loads(line) for line in (out / "signs.jsonl").read_text().splitlines()]
    assert len(records) == FRAMES

    # Every frame has both signs as traffic_sign rows with their class, each sign one track throughout.
    tracks: dict[str, set[int]] = {"speed_limit_50": set(), "danger": set()}
    for r in records:
        o = r["objects"]
        rows = [i for i, c in enumerate(o["classes"]) if c == "traffic_sign"]
        names = sorted(o["sign.class"][i] for i in rows)
        assert names == ["danger", "speed_limit_50"], (r["seq"], names)
        for i in rows:
            if o["track_ids"][i] >= 0:
                tracks[o["sign.class"][i]].add(o["track_ids"][i])
    assert all(len(t) == 1 for t in tracks.values()), tracks

    scores = [r["objects"]["sign.score"][i] for r in records for i, c in enumerate(r["objects"]["sign.class"]) if c == "danger"]
    assert len(scores) == FRAMES and all(0.2 < s < 0.6 for s in scores), scores  # read, unsurely (see the docstring)

    # One sign_seen alert for the drawn sign, with its class, track and box, in the record and delivered by the alert stage.
    alerts = record_alerts(out / "signs.jsonl")
    assert [a["details"]["sign_class"] for a in alerts] == ["speed_limit_50"], alerts
    assert alerts[0]["track_ids"][0] == next(iter(tracks["speed_limit_50"]))
    got = alerts[0]["details"]["box"]
    assert max(abs(a - b) for a, b in zip(got, box)) <= 6, (got, box)
    delivered = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [d["details"]["sign_class"] for d in delivered] == ["speed_limit_50"]
