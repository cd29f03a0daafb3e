"""An HTTP MJPEG camera (a real HTTP server in the test) read live through the pipeline."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.helpers.configs import write_config
from tests.helpers.mjpeg_server import MjpegServer
from tests.helpers.procs import free_port_block, free_ports, metric, scrape, stop, vidpipe, wait_for


def test_http_mjpeg_camera_is_read_live(tmp_path: Path, sock_dir: Path, samples: Path) -> None:
    (http_port,) = free_ports(1)
    base = free_port_block(5)
    out = tmp_path / "out"
    server = MjpegServer(samples / "carphone_pristine.mp4", http_port)
    streams = [{"id": "cam", "source": f"http://127.0.0.1:{http_port}/video.mjpg", "resize": [352, 288]}]
    cfg = write_config(tmp_path / "c.yaml", streams, out, mode="live", port_base=base, run_dir=sock_dir)
    proc = vidpipe("run", str(cfg), log_path=tmp_path / "log.txt")
    try:
        def kept() -> float:  # received by the last stage and not shed there as too old (a loaded machine lags)
            m = scrape(base + 3)
            return metric(m, "vidpipe_frames_in_total", stream="cam") - metric(m, "vidpipe_frames_shed_total", stream="cam")

        # A live stop sheds what is still batched at the last stage, hence the margin over 40.
        wait_for(lambda: kept() > 50, 90, what="frames")
    finally:
        rc = stop(proc, signal.SIGINT)
        server.close()
    assert rc == 130, (tmp_path / "log.txt").read_text()[-3000:]  # stopped by the SIGINT, cleanly
    # Live: a JSONL per segment (one here: the run is shorter than segment_s), a summary per run.
    lines = [json.loads(x) for p in sorted(out.glob("cam-*.jsonl")) for x in p.read_text().splitlines()]
    assert len(lines) > 40 and {(x["width"], x["height"]) for x in lines} == {(352, 288)}
    (summary,) = out.glob("summary-*.json")
    assert json.loads(summary.read_text())["streams"]["cam"]["status"] == "stopped"
