"""An alert: what a rule raised about confirmed tracks, as it travels from analyze to the sinks.

Its id follows from the input alone (stream, stream epoch, rule, tracks, frame), so the same event seen
again (a replay of the same file, a restarted stage re-raising it) has the same id, and every sink and
receiver can recognise the repeat. Times: `capture_ts` is when the frame that fired was captured,
`raised_ts` when the alert was written to the outbox (before that it does not count as raised).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pipeline import wire

Severity = Literal["info", "warning", "critical"]
AlertEvent = Literal["new", "update", "end"]
EVENTS: tuple[str, ...] = ("new", "update", "end")
SCHEMA_VERSION = 2  # of the alert JSON receivers get (`schema_version`): 2 added labels, frame_size and event


def alert_id(stream: str, epoch: int, rule: str, track_ids: list[int], seq: int) -> str:
    """A stable id: 20 hex digits of a SHA-1 over what identifies the event."""
    key = f"{stream}|{epoch}|{rule}|{','.join(str(t) for t in sorted(track_ids))}|{seq}"
    return hashlib.sha1(key.encode()).hexdigest()[:20]


@dataclass
class Alert:
    id: str
    stream: str
    rule: str  # the rule's name in the config
    kind: str  # the rule's type: zone_intrusion, loitering, line_crossing, wrong_way, overcrowding, speed, stopped_vehicle
    severity: str  # a Severity
    track_ids: list[int]
    seq: int  # frame that fired the rule
    pts: float  # its stream time, seconds
    capture_ts: float  # its capture wall time
    message: str
    details: dict[str, Any] = field(default_factory=dict)  # zone, line, direction, dwell_s, speed, count...
    boxes: list[list[float]] = field(default_factory=list)  # xyxy of the tracks at `seq`, same order as track_ids
    snapshot: bytes | None = None  # JPEG of the frame with the tracks boxed
    raised_ts: float | None = None
    labels: list[str] = field(default_factory=list)  # category of each track, same order as track_ids ("person", "car")
    frame_size: list[int] = field(default_factory=list)  # [width, height] of the frame the boxes are in
    event: AlertEvent = "new"  # "new"; for a condition that lasts (loitering, crowding, a stopped vehicle): "update", "end"

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-friendly map (bytes stay bytes)."""
        return asdict(self)

    @classmethod
    def from_wire(cls, data: Any) -> "Alert":
        """An alert off the wire, every field checked (a forged one is a ValueError naming the field)."""
        data = wire.mapping(data, "alert", 32)
        snapshot = data.get("snapshot")
        if snapshot is not None and not isinstance(snapshot, bytes):
            raise ValueError("alert snapshot must be bytes")
        boxes = [[wire.number(v, "alert box") for v in wire.sequence(b, "alert box", 4)] for b in wire.sequence(data.get("boxes", []), "alert boxes", 1000)]
        return cls(
            id=wire.text(data["id"], "alert id", 64),
            stream=wire.ident(data["stream"], "alert stream"),
            rule=wire.text(data["rule"], "alert rule", 256),
            kind=wire.text(data["kind"], "alert kind", 64),
            severity=wire.text(data["severity"], "alert severity", 16),
            track_ids=[wire.integer(t, "alert track id") for t in wire.sequence(data["track_ids"], "alert track ids", 1000)],
            seq=wire.integer(data["seq"], "alert seq", 0),
            pts=wire.number(data["pts"], "alert pts"),
            capture_ts=wire.number(data["capture_ts"], "alert capture time"),
            message=wire.text(data["message"], "alert message"),
            details=wire.scalar(wire.mapping(data.get("details", {}), "alert details", 64), "alert details"),
            boxes=boxes,
            snapshot=snapshot,
            raised_ts=None if data.get("raised_ts") is None else wire.number(data["raised_ts"], "alert raised time"),
            labels=[wire.text(x, "alert label", 64) for x in wire.sequence(data.get("labels", []), "alert labels", 1000)],
            frame_size=[wire.integer(x, "alert frame size", 1, 65535) for x in wire.sequence(data.get("frame_size", []), "alert frame size", 2)],
            event=_event(data.get("event", "new")),
        )

    def to_record(self) -> dict[str, Any]:
        """The alert as record writes it: without its stream and frame size (the line has them), snapshot and
        wall-clock times, which would make two replays of the same input differ."""
        out = asdict(self)
        for key in ("stream", "capture_ts", "snapshot", "raised_ts", "frame_size"):
            del out[key]
        return out

    def to_json(self, snapshot: bool = True) -> dict[str, Any]:
        """A JSON-ready map with `schema_version`; the snapshot as base64 under `snapshot_jpeg` (left out when
        `snapshot` is False)."""
        out = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        jpeg = out.pop("snapshot")
        if snapshot and jpeg is not None:
            out["snapshot_jpeg"] = base64.b64encode(jpeg).decode("ascii")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Alert":
        d = dict(data)
        d.pop("schema_version", None)
        jpeg = d.pop("snapshot_jpeg", None)
        d.pop("snapshot_path", None)
        return cls(**d, snapshot=base64.b64decode(jpeg) if jpeg else None)


def _event(value: Any) -> AlertEvent:
    if value not in EVENTS:
        raise ValueError(f"alert event {value!r} is not one of {', '.join(EVENTS)}")
    return value  # type: ignore[no-any-return]
