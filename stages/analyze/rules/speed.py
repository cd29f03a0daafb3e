"""speed: an object moves faster than `limit` (px/s, or m/s with a ground plane) for `for_s`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stages.analyze.rule import Firing, FrameView, RuleOptions, describe
from stages.analyze.rules._track_speed import TrackSpeedRule


class SpeedOptions(RuleOptions):
    type: Literal["speed"] = Field(description="Rule type.")
    limit: float = Field(gt=0, description="Speed above which the rule fires.")
    unit: Literal["px/s", "m/s"] = Field("px/s", description="m/s needs the stream's `ground_plane`.")
    zone: str | None = Field(None, description="Only inside this zone (default: anywhere).")
    for_s: float = Field(0.5, ge=0, description="How long the speed must stay above the limit.")


class SpeedRule(TrackSpeedRule[SpeedOptions]):
    type = "speed"
    Options = SpeedOptions

    def __init__(self, cfg: SpeedOptions) -> None:
        super().__init__(cfg, cfg.zone, cfg.for_s)

    def holds(self, speed: float) -> bool:
        return speed > self.cfg.limit

    def firing(self, view: FrameView, i: int, tid: int, speed: float) -> Firing | None:
        return self.fire(tid, view.pts, [tid], f"{describe(view, i)} at {speed:.1f} {view.unit} (limit {self.cfg.limit:g})",
                         speed=round(speed, 3), limit=self.cfg.limit, unit=view.unit, zone=self.cfg.zone)
