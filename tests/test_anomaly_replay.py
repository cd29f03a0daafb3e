"""The whole chain on the generated CI clip (tools/anomaly_scenes.py, a seed outside every split: one runner and one
faller among normal walkers over the real campus): decode -> COCO-SSD -> track with the bundled anomaly model and
the fall watcher -> the anomaly and fall rules, as real processes over ZeroMQ. Exactly two alerts: the runner's
(anomaly) while running, and the faller's (fall) once down. COCO-SSD loses the faller as the body tilts and never
finds them lying; the fall watcher's MoveNet finds them where the track was lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from pipeline.boxes import box_iou
from tests.helpers.procs import free_port_block, run_vidpipe
from tools.anomaly_scenes import ci_clip, write_scene


def test_replay_of_the_ci_clip_alerts_on_the_runner_and_the_faller_and_no_walker(tmp_path: Path) -> None:
    frames, truth = ci_clip()
    video = write_scene(frames, truth, tmp_path)["video"]
    sid = video.stem
    h, w = frames[0].shape[:2]
    cfg = {
        "mode": "replay",
        "streams": [{"id": sid, "source": str(video)}],
        "stages": [
            {"name": "decode", "kind": "decode"},
            {"name": "infer", "kind": "infer", "options": {"detector": {"type": "coco_ssd", "score_threshold": 0.2}}},
            {"name": "track", "kind": "track", "options": {"anomaly": {}, "fall": {}}},
            # 1 s on the ground, not the default 3: the clip ends 3.7 s after the fall starts, and the classifier calls a
            # person down once its last 4 sightings (every 5th frame while searching) show it, about 2 s in
            {
                "name": "analyze",
                "kind": "analyze",
                "options": {
                    "streams": {
                        sid: {"frame_size": [w, h], "rules": [{"name": "odd", "type": "anomaly"}, {"name": "down", "type": "fall", "min_duration_s": 1.0}]}
                    }
                },
            },
            {"name": "record", "kind": "record", "options": {"out_dir": str(tmp_path / "rec"), "video": False}},
        ],
        "transport": {"run_dir": str(tmp_path / "run")},
        "metrics": {"port_base": free_port_block(7)},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = run_vidpipe("replay", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "rec"), "--quiet", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "rec" / f"{sid}.jsonl").read_text().splitlines()]
    assert len(records) == len(frames)  # every frame came through: none skipped by a stage
    alerts = [(rec["seq"], a) for rec in records for a in rec.get("analytics", {}).get("alerts", [])]
    assert [a["rule"] for _, a in alerts] == ["odd", "down"], [(s, a["message"]) for s, a in alerts]
    for (seq, alert), kind in zip(alerts, ("running", "fall")):
        (event,) = [e for e in truth["events"] if e["type"] == kind]
        assert event["first_frame"] <= seq <= event["last_frame"] + 20, (seq, event)
        # On that person: the alert's box overlaps their true box, and more than anyone else's (the runner is
        # 20x55 pixels, where COCO-SSD's box is off by a few pixels in some frames).
        person = event["tracks"][0]
        people = [row[0] for row in truth["per_frame"][seq]]
        overlap = box_iou(np.array([alert["boxes"][0]]), np.array([row[1:5] for row in truth["per_frame"][seq]], float))[0]
        assert people[int(overlap.argmax())] == person and overlap.max() > 0.3, (kind, alert["boxes"], truth["per_frame"][seq])
    assert "moves abnormally" in alerts[0][1]["message"] and "is down" in alerts[1][1]["message"]
    # the runner's and everyone's scores are in the record: the column travels with the detections
    scored = [s for rec in records for s in (rec["objects"].get("anomaly.score") or []) if s is not None]
    assert len(scored) > 300 and np.nanmax(np.array(scored, float)) >= 1.0
