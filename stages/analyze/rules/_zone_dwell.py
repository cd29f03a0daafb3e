"""Time inside a zone, the condition of zone_intrusion (a short minimum dwell) and loitering (a long limit)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from stages.analyze.rule import Firing, FrameView, OptionsT, Rule, describe
from stages.analyze.sustain import Sustain


class ZoneDwellRule(Rule[OptionsT]):
    """Fires when a selected object has been inside `zone` for `threshold_s`; a visit ends only after
    `exit_after_s` outside (or unseen), so a flicker at the edge is one visit."""

    durable = True  # its condition lasts: it can report updates and an end (RuleOptions.report_end)

    verb: ClassVar[str]  # "entered": the message says "person #3 entered zone lawn (1.0 s)"

    def __init__(self, cfg: OptionsT, zone: str, threshold_s: float, exit_after_s: float) -> None:
        super().__init__(cfg)
        self.zone = zone
        self.sustain: Sustain[int] = Sustain(threshold_s, exit_after_s)

    def step(self, view: FrameView) -> list[Firing]:
        out = []
        inside = view.inside[self.zone] & self.selected(view)
        for i in np.flatnonzero(inside):
            tid = int(view.ids[i])
            if self.sustain.update(tid, view.pts, True):
                dwell = self.sustain.duration(tid, view.pts)
                f = self.fire(tid, view.pts, [tid], f"{describe(view, i)} {self.verb} zone {self.zone} ({dwell:.1f} s)",
                              zone=self.zone, dwell_s=round(dwell, 3))
                if f:
                    out.append(f)
        self.sustain.expire(view.pts)
        return out
