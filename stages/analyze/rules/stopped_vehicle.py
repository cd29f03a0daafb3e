"""stopped_vehicle: a vehicle stays at or below `max_speed` for `for_s`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.categories import VEHICLES
from stages.analyze.rule import Firing, FrameView, RuleOptions, describe
from stages.analyze.rules._track_speed import TrackSpeedRule


class StoppedVehicleOptions(RuleOptions):
    type: Literal["stopped_vehicle"] = Field(description="Rule type.")
    # RuleOptions' check of the categories applies to this redefined field too.
    classes: list[str] | None = Field(list(VEHICLES), description="Categories that count as vehicles.")
    zone: str | None = Field(None, description="Only inside this zone (default: anywhere).")
    max_speed: float = Field(5.0, ge=0, description="At or below this speed (pixels/s, or m/s with a ground plane) it is stopped.")
    for_s: float = Field(30.0, gt=0, description="How long it must stay stopped.")


class StoppedVehicleRule(TrackSpeedRule[StoppedVehicleOptions]):
    type = "stopped_vehicle"
    Options = StoppedVehicleOptions

    def __init__(self, cfg: StoppedVehicleOptions) -> None:
        super().__init__(cfg, cfg.zone, cfg.for_s)

    def holds(self, speed: float) -> bool:
        return speed <= self.cfg.max_speed

    def firing(self, view: FrameView, i: int, tid: int, speed: float) -> Firing | None:
        still = self.sustain.duration(tid, view.pts)
        where = f" in zone {self.cfg.zone}" if self.cfg.zone else ""
        return self.fire(tid, view.pts, [tid], f"{describe(view, i)} stopped{where} for {still:.0f} s",
                         stopped_s=round(still, 3), zone=self.cfg.zone)
