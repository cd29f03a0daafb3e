"""A condition on each selected track's speed, the base of speed and stopped_vehicle."""

from __future__ import annotations

import numpy as np

from stages.analyze.rule import RESET_S, Firing, FrameView, OptionsT, Rule
from stages.analyze.sustain import Sustain


class TrackSpeedRule(Rule[OptionsT]):
    """A condition on each selected track's speed (optionally inside `zone`), sustained for `for_s`.
    Subclasses say what holds and what the firing says."""

    durable = True  # its condition lasts: it can report updates and an end (RuleOptions.report_end)

    def __init__(self, cfg: OptionsT, zone: str | None, for_s: float) -> None:
        super().__init__(cfg)
        self.zone = zone
        self.sustain: Sustain[int] = Sustain(for_s, RESET_S)

    def holds(self, speed: float) -> bool:
        raise NotImplementedError

    def firing(self, view: FrameView, i: int, tid: int, speed: float) -> Firing | None:
        raise NotImplementedError

    def step(self, view: FrameView) -> list[Firing]:
        out = []
        sel = self.selected(view)
        if self.zone is not None:
            sel &= view.inside[self.zone]
        for i in np.flatnonzero(sel):
            tid = int(view.ids[i])
            speed = view.motion[tid].speed()
            if self.sustain.update(tid, view.pts, speed is not None and self.holds(speed)):
                f = self.firing(view, i, tid, speed)  # type: ignore[arg-type]
                if f:
                    out.append(f)
        self.sustain.expire(view.pts)
        return out
