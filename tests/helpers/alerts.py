"""Alerts for tests."""

from __future__ import annotations

from pipeline.alert import Alert, alert_id


def make_alert(seq: int, stream: str = "cam1", rule: str = "door", snapshot: bytes | None = b"\xff\xd8jpeg\xff\xd9") -> Alert:
    return Alert(
        id=alert_id(stream, 0, rule, [seq % 7, 3], seq),
        stream=stream,
        rule=rule,
        kind="zone_intrusion",
        severity="warning",
        track_ids=[3, seq % 7],
        seq=seq,
        pts=seq / 25,
        capture_ts=1_700_000_000.0 + seq / 25,
        message=f"person in zone door at frame {seq}",
        details={"zone": "door", "dwell_s": 1.5},
        boxes=[[1.0, 2.0, 30.0, 40.0], [5.0, 6.0, 70.0, 80.0]],
        snapshot=snapshot,
    )
