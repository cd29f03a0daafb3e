"""fall: a person stays on the ground.

Reads the column the track stage's fall watcher writes (`track: {fall: {}}` writes `pose.lying`: 1 where MoveNet
finds the person lying, 0 where it finds them upright, NaN where it did not look). A track fires once it has been
seen lying for `min_duration_s` with no upright sighting in between and no gap longer than `max_gap_s` (the watcher
looks every few frames until it finds someone), then stays quiet for the cooldown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.alert import Severity
from stages.analyze.rule import Firing, FrameView, Rule, RuleOptions, describe


class FallOptions(RuleOptions):
    type: Literal["fall"] = Field(description="Rule type.")
    severity: Severity = Field("critical", description="Severity of its alerts.")
    cooldown_s: float = Field(120.0, ge=0, description="After an alert, the same track stays quiet this long.")
    classes: list[str] | None = Field(["person"], description="Categories whose tracks are judged.")
    column: str = Field("pose.lying", description="Detections column: 1 lying, 0 upright, NaN not looked at.")
    min_duration_s: float = Field(3.0, ge=0, description="How long a person must stay on the ground before an alert.")
    max_gap_s: float = Field(1.5, gt=0, description="Longest time without a lying sighting that a stay on the ground survives.")


@dataclass
class _Down:
    since: float
    last_seen: float


class FallRule(Rule[FallOptions]):
    type = "fall"
    Options = FallOptions

    def __init__(self, cfg: FallOptions) -> None:
        super().__init__(cfg)
        self.down: dict[int, _Down] = {}

    def step(self, view: FrameView) -> list[Firing]:
        d = view.detections
        column = d.extra.get(self.cfg.column)
        for tid in [t for t, r in self.down.items() if view.pts - r.last_seen > self.cfg.max_gap_s]:
            del self.down[tid]
        if column is None or not len(d):
            return []
        lying = column[d.track_ids >= 0]  # the view's rows: confirmed tracks only, in the same order
        out = []
        for i in np.flatnonzero(self.selected(view)).tolist():
            tid, v = int(view.ids[i]), float(lying[i])
            if v != v:  # not looked at: neither up nor down
                continue
            if v < 0.5:
                self.down.pop(tid, None)
                continue
            run = self.down.setdefault(tid, _Down(view.pts, view.pts))
            run.last_seen = view.pts
            if view.pts - run.since + 1e-9 < self.cfg.min_duration_s:
                continue
            f = self.fire(tid, view.pts, [tid], f"{describe(view, i)} is down (lying for {view.pts - run.since:.1f} s)",
                          duration_s=round(view.pts - run.since, 2))  # fmt: skip
            if f:
                out.append(f)
        return out

    def forget(self, pts: float, horizon_s: float) -> None:
        super().forget(pts, horizon_s)
        for tid in [t for t, r in self.down.items() if pts - r.last_seen > horizon_s]:
            del self.down[tid]
