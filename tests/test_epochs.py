"""A restarted decoder is followed by epoch: kill -9 of decode mid-replay of a camera.

The camera is an HTTP MJPEG server showing vtest's street. Decode is killed early (a few dozen frames
in), when frame numbers alone cannot tell a restart from frames that come late: the stages downstream
follow the new epoch in the header, not a guess from the numbers.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from pipeline.config import load_config
from tests.helpers.configs import write_config
from tests.helpers.mjpeg_server import MjpegServer
from tests.helpers.procs import find_stage, free_port_block, free_ports, metric, scrape, stop, vidpipe, wait_for

ANALYZE = {"streams": {"cam": {
    "frame_size": [768, 576],
    "zones": {"street": {"points": [[0, 0], [767, 0], [767, 575], [0, 575]]}},
    "lines": {"crossing": {"points": [[460, 195], [460, 360]]}},
    "rules": [{"name": "anyone", "type": "zone_intrusion", "zone": "street", "classes": ["person"], "min_dwell_s": 1.0}],
}}}


def test_kill_9_of_a_camera_decoder_mid_replay_is_followed_by_epoch(tmp_path: Path, sock_dir: Path, samples: Path) -> None:
    (http_port,) = free_ports(1)
    base = free_port_block(7)
    out = tmp_path / "out"
    server = MjpegServer(samples / "vtest.avi", http_port, fps=10.0)
    streams = [{"id": "cam", "source": f"http://127.0.0.1:{http_port}/video.mjpg"}]
    stages = [
        {"name": "decode", "kind": "decode"},
        {"name": "infer", "kind": "infer", "options": {"detector": {"type": "coco_ssd", "score_threshold": 0.2}}},
        {"name": "track", "kind": "track"},
        {"name": "analyze", "kind": "analyze", "options": ANALYZE},
        {"name": "record", "kind": "record", "options": {"out_dir": str(out), "video": False}},
    ]
    path = write_config(tmp_path / "c.yaml", streams, out, port_base=base, run_dir=sock_dir, stages=stages,
                        supervisor={"restart_initial_s": 0.2})
    cfg = load_config(path)
    port = {name: cfg.metrics_port(name, "cam" if name == "decode" else None) for name in ("decode", "track", "analyze", "record")}
    proc = vidpipe("run", str(path), log_path=tmp_path / "log.txt")
    try:
        wait_for(lambda: metric(scrape(port["record"]), "vidpipe_frames_in_total") >= 25, 90, what="frames at record")
        decode = find_stage(proc.pid, "decode")
        assert decode
        os.kill(decode, signal.SIGKILL)
        wait_for(lambda: metric(scrape(base), "vidpipe_stage_restarts_total", stage="decode") == 1, 30, what="restart")
        before = metric(scrape(port["record"]), "vidpipe_frames_in_total")
        wait_for(lambda: metric(scrape(port["record"]), "vidpipe_frames_in_total") > before + 40, 90, what="frames after restart")
        track, analyze, record = (scrape(port[n]) for n in ("track", "analyze", "record"))
    finally:
        rc = stop(proc, signal.SIGINT)
        server.close()
    log = (tmp_path / "log.txt").read_text()
    assert rc == 130, log[-3000:]  # stopped by the SIGINT, cleanly
    # Every stage downstream ended the old epoch once and went on with the new one.
    for name, m in (("track", track), ("analyze", analyze), ("record", record)):
        assert metric(m, "vidpipe_streams_ended_total", stream="cam", outcome="restarted") == 1, name
    assert "stream cam restarted (epoch" in log
    # Reorder: the new numbers are a new epoch, not frames that came late; none given up either.
    assert metric(track, "vidpipe_reorder_frames_total", outcome="late") == 0
    assert metric(track, "vidpipe_reorder_frames_total", outcome="skipped") == 0
    assert metric(track, "vidpipe_track_events_total", stream="cam", event="restarted") == 1

    lines = [json.loads(x) for x in (out / "cam.jsonl").read_text().splitlines()]
    seqs = [x["seq"] for x in lines]
    cut = next(i for i in range(1, len(seqs)) if seqs[i] < seqs[i - 1])
    first, second = lines[:cut], lines[cut:]
    assert [x["seq"] for x in first] == list(range(len(first)))  # replay: nothing shed, nothing late
    assert [x["seq"] for x in second] == list(range(len(second))) and len(second) > 40
    # Tracker: the new epoch's tracks are new ones, with ids after the old epoch's (never reused).
    old_ids = {t for x in first for t in x["objects"]["track_ids"] if t >= 0}
    new_ids = {t for x in second for t in x["objects"]["track_ids"] if t >= 0}
    assert old_ids and new_ids and min(new_ids) > max(old_ids)
    # Analyze: every frame of both epochs analysed (none skipped as "seen already"); line counts go on.
    assert all("occupancy" in x.get("analytics", {}) for x in lines)
    total = [sum(x["analytics"]["counts"]["crossing"].values()) for x in lines]
    assert all(b >= a for a, b in zip(total, total[1:]))
