"""A replay's outputs all land under --out, whatever the working directory: the analytics example, run twice from
another folder with two results folders, gives two complete sets (issue 20's first complaint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_analytics_example_writes_everything_under_out(tmp_path: Path, samples: Path) -> None:
    import cv2

    (tmp_path / "clip").mkdir()
    clip = tmp_path / "clip" / "vtest.avi"  # the stream id the example's analytics are for

    cap = cv2.VideoCapture(str(samples / "vtest.avi"))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (768, 576))
    for _ in range(120):  # 12 s: the first crossings of the example's line
        ok, frame = cap.read()
        assert ok
        writer.write(frame)
    writer.release()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for out in ("first", "second"):
        res = subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", "--config", str(ROOT / "deploy" / "config" / "vtest-analytics.yaml"),
                              str(clip), "--out", str(tmp_path / out), "--quiet"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        alerts = tmp_path / out / "alerts"
        lines = (alerts / "alerts.jsonl").read_text().splitlines()
        assert lines and (alerts / "outbox.db").is_file()
        assert all(Path(json.loads(x)["snapshot_path"]).parent == alerts / "snapshots" for x in lines)
        assert f"alerts: {len(lines)} in the outbox {alerts / 'outbox.db'}" in res.stdout, res.stdout
        assert str(alerts / "alerts.jsonl") in res.stdout
    assert not any(elsewhere.iterdir()), sorted(elsewhere.rglob("*"))  # nothing written where it was run from
