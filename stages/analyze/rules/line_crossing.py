"""line_crossing: an object crosses the line in `direction`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.alert import Severity
from stages.analyze.rule import Firing, FrameView, Rule, RuleOptions, describe


class LineCrossingOptions(RuleOptions):
    type: Literal["line_crossing"] = Field(description="Rule type.")
    severity: Severity = Field("info", description="Severity of its alerts.")
    cooldown_s: float = Field(0.0, ge=0, description="After an alert, the same object's crossings stay quiet this long.")
    line: str = Field(description="Line name.")
    direction: Literal["in", "out", "any"] = Field("any", description="Crossings that fire: in (right to left of a -> b), out, or any.")


class LineCrossingRule(Rule[LineCrossingOptions]):
    """Each crossing the line counter completed in this frame; quiet per object and direction for the cooldown."""

    type = "line_crossing"
    Options = LineCrossingOptions

    def step(self, view: FrameView) -> list[Firing]:
        out = []
        row = {int(t): i for i, t in enumerate(view.ids)}
        sel = self.selected(view)
        for tid, direction in view.crossings.get(self.cfg.line, []):
            i = row.get(tid)
            if i is None or not sel[i] or self.cfg.direction not in ("any", direction):
                continue
            f = self.fire((tid, direction), view.pts, [tid], f"{describe(view, i)} crossed line {self.cfg.line} ({direction})",
                          line=self.cfg.line, direction=direction)
            if f:
                out.append(f)
        return out
