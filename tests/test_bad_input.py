"""Bad input gets a message that names the problem, and the other streams are not affected."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.helpers.clips import damaged_h264
from tests.helpers.configs import write_config
from tests.helpers.procs import free_port_block, free_ports, metric, run_logged, scrape, stop, vidpipe, wait_for


def test_missing_truncated_and_unreachable_sources_end_only_their_streams(tmp_path: Path, sock_dir: Path, samples: Path) -> None:
    trunc_avi, trunc_mp4 = tmp_path / "cut.avi", tmp_path / "cut.mp4"
    trunc_avi.write_bytes((samples / "vtest.avi").read_bytes()[:3_000_000])  # stops mid-stream
    trunc_mp4.write_bytes((samples / "bikes.mp4").read_bytes()[:200_000])  # loses its index (moov atom)
    (dead_port,) = free_ports(1)  # nothing listens there
    streams = [
        {"id": "good", "source": str(samples / "carphone_pristine.mp4")},
        {"id": "missing", "source": str(tmp_path / "nope.mp4")},
        {"id": "cut-avi", "source": str(trunc_avi)},
        {"id": "cut-mp4", "source": str(trunc_mp4)},
        {"id": "damaged", "source": str(damaged_h264(samples, tmp_path / "damaged.mp4", 300, 200))},
        {"id": "cam", "source": f"http://127.0.0.1:{dead_port}/video.mjpg",
         "reconnect": {"initial_s": 0.1, "max_attempts": 2, "open_timeout_s": 2}},
    ]
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.yaml", streams, out, port_base=None, run_dir=sock_dir)
    rc, log = run_logged("run", str(cfg), log_path=tmp_path / "log.txt")
    assert rc == 1, log[-3000:]  # the run went through, and its status says that streams are not complete
    summary = json.loads((out / "summary.json").read_text())["streams"]
    assert summary["good"]["status"] == "complete" and summary["good"]["frames"] == 120
    assert len((out / "good.jsonl").read_text().splitlines()) == 120
    expected = {
        "missing": f"file not found: {tmp_path / 'nope.mp4'}",
        "cut-avi": f"{trunc_avi} ended after",
        "cut-mp4": f"not a readable video (corrupt, truncated or unsupported format): {trunc_mp4}",
        "cam": f"cannot open http://127.0.0.1:{dead_port}/video.mjpg (unreachable, refused or not a video stream); gave up after 2 attempts",
    }
    for sid, fragment in expected.items():
        assert summary[sid]["status"] == "error", summary[sid]
        assert fragment in summary[sid]["error"], summary[sid]["error"]
        assert f"stream {sid} ends: {fragment}" in log
    # Said at once, before any stage loaded its models, and the run went on with the other streams.
    assert f"streams[1].source: no such file or folder: {tmp_path / 'nope.mp4'} (that stream will end with this error; the others run)" in log
    assert log.index("no such file or folder") < log.index("started decode")
    assert "of 795 frames (truncated or corrupt file)" in summary["cut-avi"]["error"]
    # What a truncated file did hold is processed and kept.
    assert 100 < summary["cut-avi"]["frames"] < 795
    # A damaged packet costs its frames, counted; the rest of the file is processed; the stream is not complete.
    damaged = summary["damaged"]
    assert damaged["status"] == "incomplete" and damaged["error"] is None and 0 < damaged["damaged_frames"] <= 30
    assert damaged["frames"] >= 300 - damaged["damaged_frames"] - 1 and damaged["lost_frames"] == 0


def test_unreachable_live_camera_retries_while_other_streams_flow(tmp_path: Path, sock_dir: Path, samples: Path) -> None:
    (dead_port,) = free_ports(1)
    base = free_port_block(6)
    streams = [
        {"id": "cam", "source": f"rtsp://user:secret@127.0.0.1:{dead_port}/live", "reconnect": {"initial_s": 0.2, "max_s": 0.5, "open_timeout_s": 1}},
        {"id": "file", "source": str(samples / "carphone_pristine.mp4"), "loop": True},
    ]
    cfg = write_config(tmp_path / "c.yaml", streams, tmp_path / "out", mode="live", port_base=base, run_dir=sock_dir)
    proc = vidpipe("run", str(cfg), log_path=tmp_path / "log.txt")
    cam_port, record_port = base + 1, base + 4
    try:
        wait_for(lambda: metric(scrape(cam_port), "vidpipe_decode_errors_total", reason="open_failed") >= 3, 60, what="retries")
        wait_for(lambda: metric(scrape(record_port), "vidpipe_frames_in_total", stream="file") > 50, 60, what="other stream")
        cam = scrape(cam_port)
        assert metric(cam, "vidpipe_stream_up", stream="cam") == 0
        # The source's heartbeats reach the stages downstream while its stream is down.
        assert metric(scrape(record_port), "vidpipe_stream_last_seen_timestamp_seconds", stream="cam") > 0
        assert metric(scrape(base), "vidpipe_stage_restarts_total") == 0
    finally:
        assert stop(proc, signal.SIGINT) == 130  # stopped by Ctrl-C, cleanly
    log = (tmp_path / "log.txt").read_text()
    assert f"stream cam: cannot open rtsp://user:***@127.0.0.1:{dead_port}/live" in log
    assert "secret" not in log  # credentials never reach the logs
    assert "(attempt 2); retrying in" in log
