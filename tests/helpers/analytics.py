"""The vtest analytics config (deploy/config/vtest-analytics.yaml) adapted for a test, and short clips of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import yaml

from tests.helpers.procs import ROOT, free_port_block

EXAMPLE = ROOT / "deploy" / "config" / "vtest-analytics.yaml"


def vtest_analytics_config(
    tmp: Path,
    source: Path,
    run_dir: Path,
    *,
    mode: str = "replay",
    sinks: dict[str, Any] | None = None,
    rules: list[dict[str, Any]] | None = None,
    record: bool = True,
    **alert_options: Any,
) -> Path:
    """The example config with its paths in `tmp`, its own run dir and metrics ports, and the given sinks
    (default: its JSONL file sink) and rules (default: the example's). Returns the config file."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["mode"] = mode
    data["streams"] = [{"id": "vtest", "source": str(source)}]
    stages = {s["name"]: s for s in data["stages"]}
    if rules is not None:
        stages["analyze"]["options"]["streams"]["vtest"]["rules"] = rules
    alert = stages["alert"]["options"]
    alert["outbox"] = str(tmp / "outbox.db")
    alert["sinks"] = sinks if sinks is not None else {"file": {"type": "jsonl", "path": str(tmp / "alerts.jsonl"), "snapshots_dir": str(tmp / "snapshots")}}
    alert.update(alert_options)
    if record:
        stages["record"]["options"] = {"out_dir": str(tmp / "out"), "video": False}
    else:
        data["stages"] = [s for s in data["stages"] if s["name"] != "record"]
    data["transport"] = {"run_dir": str(run_dir)}
    data["metrics"] = {"port_base": free_port_block(len(data["stages"]) + 2)}
    data["supervisor"] = {"restart_initial_s": 0.2}
    path = tmp / "analytics.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_clip(src: Path, dst: Path, frames: int) -> Path:
    """The first `frames` frames of `src`, as an MJPG AVI at the same rate (a real video file)."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    out = None
    try:
        for _ in range(frames):
            ok, image = cap.read()
            if not ok:
                break
            if out is None:
                out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), fps, (image.shape[1], image.shape[0]))
            out.write(image)
    finally:
        cap.release()
        if out is not None:
            out.release()
    return dst


def record_alerts(jsonl: Path) -> list[dict[str, Any]]:
    """Alerts as the record stage wrote them (per frame, in frame order)."""
    out = []
    for line in jsonl.read_text().splitlines():
        rec = json.loads(line)
        out += rec.get("analytics", {}).get("alerts", [])
    return out


def record_crossings(jsonl: Path) -> list[tuple[int, str, int]]:
    """(frame, direction, track id) of every line crossing in a record JSONL."""
    out = []
    for line in jsonl.read_text().splitlines():
        rec = json.loads(line)
        for _line, events in rec.get("analytics", {}).get("crossings", {}).items():
            out += [(rec["seq"], d, t) for t, d in events]
    return out
