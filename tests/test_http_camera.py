"""An HTTP MJPEG camera (a real HTTP server in the test) read live through the pipeline."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import yaml

from tests.helpers.configs import write_config
from tests.helpers.mjpeg_server import MjpegServer
from tests.helpers.procs import free_port_block, free_ports, metric, run_vidpipe, scrape, stop, vidpipe, wait_for


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


def test_check_with_cameras_says_which_camera_answers_and_which_does_not(tmp_path: Path, samples: Path) -> None:
    http_port, dead_port = free_ports(2)  # a camera on the first; nothing listens on the second
    server = MjpegServer(samples / "carphone_pristine.mp4", http_port)
    try:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump({
            "mode": "live",
            "streams": [{"id": "door", "source": f"http://127.0.0.1:{http_port}/video.mjpg"},
                        {"id": "yard", "source": f"http://viewer:s3cret@127.0.0.1:{dead_port}/video.mjpg", "reconnect": {"open_timeout_s": 3}}],
            "stages": [{"name": "decode", "kind": "decode"}, {"name": "record", "kind": "record"}],
        }))  # fmt: skip
        assert run_vidpipe("check", str(cfg)).returncode == 0  # without the flag, cameras are not tried
        res = run_vidpipe("check", "--cameras", str(cfg))
    finally:
        server.close()
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"stream door: http://127.0.0.1:{http_port}/video.mjpg answers (176x144" in res.stdout, res.stdout
    assert f"streams[1].source: cannot open http://viewer:***@127.0.0.1:{dead_port}/video.mjpg" in res.stderr, res.stderr
    assert "s3cret" not in res.stdout + res.stderr
