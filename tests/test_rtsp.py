"""An RTSP camera served by Debian's GStreamer RTSP server: read live, and survives a server restart."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.helpers.configs import write_config
from tests.helpers.procs import free_port_block, free_ports, metric, scrape, stop, vidpipe, wait_for
from tests.helpers.rtsp import have_rtsp_server, start_server

pytestmark = pytest.mark.skipif(not have_rtsp_server(), reason="Debian's GStreamer RTSP server is not installed (tests/run.sh installs it)")


def test_rtsp_source_reads_and_reconnects_after_a_server_restart(tmp_path: Path, sock_dir: Path) -> None:
    (rtsp_port,) = free_ports(1)
    base = free_port_block(5)
    streams = [{"id": "cam", "source": f"rtsp://127.0.0.1:{rtsp_port}/cam",
                "reconnect": {"initial_s": 0.2, "max_s": 1.0, "open_timeout_s": 5, "read_timeout_s": 3}}]
    cfg = write_config(tmp_path / "c.yaml", streams, tmp_path / "out", mode="live", port_base=base, run_dir=sock_dir,
                       stages=[{"name": "decode", "kind": "decode"}, {"name": "infer", "kind": "infer"},
                               {"name": "record", "kind": "record", "options": {"out_dir": str(tmp_path / "out"), "video": False}}])
    decode_port, record_port = base + 1, base + 3
    server = start_server(rtsp_port, tmp_path / "server.log")
    pipeline = vidpipe("run", str(cfg), log_path=tmp_path / "log.txt")
    try:
        frames_at_record = lambda: metric(scrape(record_port), "vidpipe_frames_in_total", stream="cam")  # noqa: E731
        wait_for(lambda: frames_at_record() > 30, 60, what="frames from the RTSP camera")
        assert metric(scrape(decode_port), "vidpipe_stream_up", stream="cam") == 1
        stop(server, signal.SIGTERM)  # type: ignore[arg-type]
        wait_for(lambda: metric(scrape(decode_port), "vidpipe_stream_up", stream="cam") == 0, 30, what="stream down")
        down = scrape(decode_port)
        assert metric(down, "vidpipe_decode_errors_total", stream="cam", reason="read_failed") >= 1
        before = frames_at_record()
        server = start_server(rtsp_port, tmp_path / "server.log")
        wait_for(lambda: metric(scrape(decode_port), "vidpipe_stream_up", stream="cam") == 1, 60, what="reconnect")
        wait_for(lambda: frames_at_record() > before + 30, 60, what="frames after the restart")
        assert metric(scrape(base), "vidpipe_stage_restarts_total") == 0  # the stream recovered, not the process
    finally:
        rc = stop(pipeline, signal.SIGINT)
        stop(server, signal.SIGTERM)  # type: ignore[arg-type]
    log = (tmp_path / "log.txt").read_text()
    assert rc == 130, log[-3000:]  # stopped by the SIGINT, cleanly
    assert "stream cam: source stopped delivering" in log and log.count("stream cam: opened rtsp://") >= 2
