#!/usr/bin/env python
"""How old a frame is when the web view delivers it: capture to a viewer's receipt, through the whole chain.

Runs `vidpipe run` on a live config (vtest.avi looping as a camera at its 10 fps: decode -> COCO-SSD -> track,
the track stage publishing a mirror, the web stage observing it) and reads the live MJPEG stream
(`/streams/vtest/live.mjpg`) as a browser's <img> does, over one HTTP connection. Each part carries its frame's
capture time (X-Capture-Ts); its age is taken when the part has fully arrived. Printed, over `--seconds` (default
20, after a warm-up): pictures received per second, and the frame age at the viewer (p50/p95/max) next to the age
the web stage itself saw (its /api/streams, sampled every 0.5 s): the difference is what the live view adds
(annotating, JPEG, the HTTP hop). What a browser adds on top (decoding and painting a 768x576 JPEG) is a few ms.

    python bench/web_latency.py [--seconds 20] [--max-fps 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(folder: Path, port: int, max_fps: float) -> Path:
    data = {
        "mode": "live",
        "streams": [{"id": "vtest", "source": str(ROOT / "sample_videos" / "vtest.avi"), "loop": True}],
        "stages": [
            {"name": "decode", "kind": "decode"},
            {"name": "infer", "kind": "infer", "options": {"detector": {"type": "coco_ssd", "score_threshold": 0.2}}},
            {"name": "track", "kind": "track", "publish": "auto"},
            {"name": "web", "kind": "web", "input_pattern": "sub", "options": {"port": port, "max_fps": max_fps}},
        ],
        "metrics": {"port_base": None},
        "transport": {"run_dir": str(folder / "run")},
    }
    path = folder / "live.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_parts(port: int, until: float, ages: list[float]) -> None:
    """Reads multipart JPEG parts until `until`, appending each one's age at arrival."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/streams/vtest/live.mjpg")
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    while time.time() < until:
        line = resp.readline()
        if not line.startswith(b"--"):
            continue
        headers = {}
        while True:
            h = resp.readline().strip()
            if not h:
                break
            k, _, v = h.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        resp.read(int(headers["content-length"]))
        ages.append(time.time() - float(headers["x-capture-ts"]))
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--max-fps", type=float, default=10.0)
    a = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), port, a.max_fps)
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(cfg)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 90
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    conn.request("GET", "/api/streams")
                    streams = json.loads(conn.getresponse().read())
                    if streams and streams[0]["frames"] > 10:
                        break
                except OSError:
                    pass
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit("the pipeline did not start")
                time.sleep(0.5)
            time.sleep(a.warmup)
            ages: list[float] = []
            stage_ages: list[float] = []
            until = time.time() + a.seconds
            reader = threading.Thread(target=read_parts, args=(port, until, ages))
            reader.start()
            while time.time() < until:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/api/streams")
                stage_ages.append(json.loads(conn.getresponse().read())[0]["frame_age_s"])
                time.sleep(0.5)
            reader.join()
        finally:
            proc.terminate()
            proc.wait(30)
    q = statistics.quantiles
    print(f"live view of vtest.avi (10 fps source), MJPEG, max_fps {a.max_fps}, {a.seconds:.0f} s")
    print(f"  pictures received      {len(ages) / a.seconds:6.1f} per second")
    print(f"  frame age at viewer    p50 {1000 * statistics.median(ages):6.0f} ms   p95 {1000 * q(ages, n=20)[-1]:6.0f} ms   max {1000 * max(ages):6.0f} ms")
    print(f"  at the web stage       p50 {1000 * statistics.median(stage_ages):6.0f} ms   p95 {1000 * q(stage_ages, n=20)[-1]:6.0f} ms")


if __name__ == "__main__":
    main()
