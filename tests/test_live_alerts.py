"""Live mode sheds frames under overload, but never the alerts analyze raised: a stage after analyze that is
slower than the camera makes frames stale, and every alert analyze fired still reaches the outbox."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import yaml

from tests.helpers.analytics import make_clip
from tests.helpers.procs import free_port_block, metric, scrape, stop, vidpipe

FRAMES = 150


def test_an_overloaded_live_pipeline_sheds_frames_but_raises_every_alert(tmp_path: Path, samples: Path, sock_dir: Path) -> None:
    clip = make_clip(samples / "vtest.avi", tmp_path / "vtest150.avi", FRAMES)
    base = free_port_block(8)
    whole = [[0, 0], [767, 0], [767, 575], [0, 575]]
    config = {
        "mode": "live",
        "streams": [{"id": "vtest", "source": str(clip)}],  # paced at its 10 fps, as a camera would deliver
        "stages": [
            {"name": "decode", "kind": "decode"},
            {"name": "infer", "kind": "infer", "options": {"detector": {"type": "coco_ssd", "score_threshold": 0.3}}},
            {"name": "track", "kind": "track"},
            {"name": "analyze", "kind": "analyze", "options": {"streams": {"vtest": {
                "frame_size": [768, 576], "zones": {"all": {"points": whole}},
                "rules": [{"name": "anyone", "type": "zone_intrusion", "zone": "all", "classes": ["person"], "min_dwell_s": 0,
                           "cooldown_s": 30}]}}}},
            # Twice as slow as the camera: its input backs up and frames grow older than live.max_frame_age_s.
            {"name": "slow", "kind": "tests.helpers.slow_stage:SlowStage", "options": {"seconds_per_frame": 0.2}},
            {"name": "alert", "kind": "alert", "options": {"outbox": str(tmp_path / "outbox.db"),
                                                           "sinks": {"file": {"type": "jsonl", "path": str(tmp_path / "alerts.jsonl")}}}},
        ],
        "live": {"max_frame_age_s": 0.5, "send_timeout_ms": 100},
        "transport": {"run_dir": str(sock_dir)},
        "metrics": {"port_base": base},
    }
    cfg = tmp_path / "live.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = vidpipe("run", str(cfg), log_path=tmp_path / "log.txt")
    shed = 0.0
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # not up yet, or gone
                # Frames shed by any stage (stale on arrival, or not handed on in time), processes 1-6 after the launcher's port.
                shed = max(shed, sum(metric(scrape(base + i), "vidpipe_frames_shed_total") for i in range(1, 7)))
            time.sleep(0.5)
        rc = proc.wait(1)
    finally:
        stop(proc)
    log = (tmp_path / "log.txt").read_text()
    assert rc == 0, log[-3000:]
    assert shed >= 10, "the pipeline should have been overloaded, and shed frames"
    fired = re.findall(r"vidpipe\.analyze: fired ([0-9a-f]{20})", log)
    raised = re.findall(r"vidpipe\.alert: raised ([0-9a-f]{20})", log)
    delivered = [line.split('"id":"')[1][:20] for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert len(fired) >= 5, "the rule should fire on the people of the clip"
    assert sorted(raised) == sorted(fired) and sorted(set(delivered)) == sorted(fired)
