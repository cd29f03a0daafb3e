"""What the analyze stage found in a frame, as a typed field of the frame: line crossings, running line
counts, zone occupancy and the alerts raised.

It travels in the frame header under its own version, so its encoding can change without a new protocol,
and every reader (alert, record, a user's own stage) gets the same types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline import wire
from pipeline.alert import Alert

ANALYTICS_VERSION = 1


@dataclass
class Analytics:
    # line -> (track id, direction) of the crossings completed in this frame
    crossings: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] | None = None  # line -> direction -> running count; None: no lines
    occupancy: dict[str, int] | None = None  # zone -> confirmed tracks inside; None: no zones
    alerts: list[Alert] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": ANALYTICS_VERSION}
        if self.crossings:
            out["x"] = {line: [[t, d] for t, d in ev] for line, ev in self.crossings.items()}
        if self.counts is not None:
            out["c"] = self.counts
        if self.occupancy is not None:
            out["o"] = self.occupancy
        if self.alerts:
            out["al"] = [a.to_wire() for a in self.alerts]
        return out

    @staticmethod
    def from_wire(data: Any) -> "Analytics":
        data = wire.mapping(data, "analytics", 8)
        if data.get("v") != ANALYTICS_VERSION:
            raise ValueError(f"analytics version {str(data.get('v'))[:20]}, this stage reads {ANALYTICS_VERSION}")
        crossings = {}
        for line, events in wire.mapping(data.get("x", {}), "crossings", 1000).items():
            pairs = [wire.sequence(e, "crossing", 2) for e in wire.sequence(events, f"crossings of {line}", 10_000)]
            crossings[wire.text(line, "line", 256)] = [(wire.integer(p[0], "track id"), wire.text(p[1], "direction", 16)) for p in pairs]
        counts = occupancy = None
        if data.get("c") is not None:
            counts = {wire.text(k, "line", 256): {wire.text(d, "direction", 16): wire.integer(n, "count", 0) for d, n in wire.mapping(v, "counts", 8).items()}
                      for k, v in wire.mapping(data["c"], "counts", 1000).items()}
        if data.get("o") is not None:
            occupancy = {wire.text(k, "zone", 256): wire.integer(v, "occupancy", 0) for k, v in wire.mapping(data["o"], "occupancy", 1000).items()}
        alerts = [Alert.from_wire(a) for a in wire.sequence(data.get("al", []), "alerts", 1000)]
        return Analytics(crossings, counts, occupancy, alerts)

    def to_record(self) -> dict[str, Any]:
        """The JSONL form (record): what follows from the input alone, so replays write the same bytes."""
        out: dict[str, Any] = {}
        if self.crossings:
            out["crossings"] = {line: [[t, d] for t, d in ev] for line, ev in self.crossings.items()}
        if self.counts is not None:
            out["counts"] = self.counts
        if self.occupancy is not None:
            out["occupancy"] = self.occupancy
        if self.alerts:
            out["alerts"] = [a.to_record() for a in self.alerts]
        return out
