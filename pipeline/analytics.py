"""What the analyze stage found in a frame, as a typed field of the frame: line crossings, running line
counts, zone occupancy and the alerts raised.

It travels in the frame header under its own version, so its encoding can change without a new protocol,
and every reader (alert, record, a user's own stage) gets the same types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    def from_wire(wire: Any) -> "Analytics":
        if not isinstance(wire, dict):
            raise ValueError("analytics must be a map")
        if wire.get("v") != ANALYTICS_VERSION:
            raise ValueError(f"analytics version {wire.get('v')!r}, this stage reads {ANALYTICS_VERSION}")
        crossings = {str(line): [(int(t), str(d)) for t, d in ev] for line, ev in (wire.get("x") or {}).items()}
        counts = wire.get("c")
        occupancy = wire.get("o")
        return Analytics(
            crossings,
            None if counts is None else {str(k): {str(d): int(n) for d, n in v.items()} for k, v in counts.items()},
            None if occupancy is None else {str(k): int(v) for k, v in occupancy.items()},
            [Alert.from_wire(a) for a in wire.get("al") or []],
        )

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
