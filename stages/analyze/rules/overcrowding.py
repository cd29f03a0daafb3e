"""overcrowding: more than `max_count` objects are in the zone for `for_s`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stages.analyze.rule import RESET_S, Firing, FrameView, Rule, RuleOptions
from stages.analyze.sustain import Sustain


class OvercrowdingOptions(RuleOptions):
    type: Literal["overcrowding"] = Field(description="Rule type.")
    zone: str = Field(description="Zone name.")
    max_count: int = Field(ge=0, description="More objects than this in the zone is crowding.")
    for_s: float = Field(5.0, ge=0, description="How long the count must stay above `max_count`.")


class OvercrowdingRule(Rule[OvercrowdingOptions]):
    durable = True  # its condition lasts: it can report updates and an end (RuleOptions.report_end)
    type = "overcrowding"
    Options = OvercrowdingOptions

    def __init__(self, cfg: OvercrowdingOptions) -> None:
        super().__init__(cfg)
        self.sustain: Sustain[str] = Sustain(cfg.for_s, RESET_S)

    def step(self, view: FrameView) -> list[Firing]:
        inside = view.inside[self.cfg.zone] & self.selected(view)
        count = int(inside.sum())
        if self.sustain.update(self.cfg.zone, view.pts, count > self.cfg.max_count):
            ids = sorted(int(t) for t in view.ids[inside])
            f = self.fire(self.cfg.zone, view.pts, ids, f"{count} objects in zone {self.cfg.zone} (limit {self.cfg.max_count})",
                          zone=self.cfg.zone, count=count, max_count=self.cfg.max_count)
            return [f] if f else []
        return []
