"""wrong_way: an object in the zone moves more than `max_angle_deg` off `direction`, faster than `min_speed`, for `for_s`."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from stages.analyze.rule import RESET_S, Firing, FrameView, Rule, RuleOptions, describe
from stages.analyze.sustain import Sustain


class WrongWayOptions(RuleOptions):
    type: Literal["wrong_way"] = Field(description="Rule type.")
    zone: str = Field(description="Zone where the direction applies (a lane).")
    direction: tuple[float, float] = Field(description="Allowed direction of travel [dx, dy] in image coordinates (y down).")
    max_angle_deg: float = Field(90.0, gt=0, lt=180, description="Movement more than this far from `direction` is wrong-way.")
    min_speed: float = Field(20.0, ge=0, description="Below this speed (pixels/s, or m/s with a ground plane) direction is not judged.")
    for_s: float = Field(1.0, ge=0, description="How long the wrong-way movement must last.")

    @field_validator("direction")
    @classmethod
    def _direction(cls, v: tuple[float, float]) -> tuple[float, float]:
        if (v[0] ** 2 + v[1] ** 2) ** 0.5 < 1e-6:
            raise ValueError("the direction vector must not be zero")
        return v


class WrongWayRule(Rule[WrongWayOptions]):
    durable = True  # its condition lasts: it can report updates and an end (RuleOptions.report_end)
    type = "wrong_way"
    Options = WrongWayOptions

    def __init__(self, cfg: WrongWayOptions) -> None:
        super().__init__(cfg)
        d = np.asarray(cfg.direction, np.float64)
        self.allowed = d / np.hypot(d[0], d[1])
        self.cos_limit = float(np.cos(np.radians(cfg.max_angle_deg)))
        self.sustain: Sustain[int] = Sustain(cfg.for_s, RESET_S)

    def step(self, view: FrameView) -> list[Firing]:
        out = []
        inside = view.inside[self.cfg.zone] & self.selected(view)
        for i in np.flatnonzero(inside):
            tid = int(view.ids[i])
            v = view.motion[tid].velocity()
            wrong = False
            if v is not None:
                speed = float(np.hypot(v[0], v[1]))
                wrong = speed >= max(self.cfg.min_speed, 1e-9) and float(v @ self.allowed) / speed < self.cos_limit
            if self.sustain.update(tid, view.pts, wrong):
                angle = float(np.degrees(np.arccos(np.clip(float(v @ self.allowed) / speed, -1, 1))))
                f = self.fire(tid, view.pts, [tid], f"{describe(view, i)} moves the wrong way in zone {self.cfg.zone} ({angle:.0f} deg off)",
                              zone=self.cfg.zone, angle_deg=round(angle, 1), speed=round(speed, 3), unit=view.unit)
                if f:
                    out.append(f)
        self.sustain.expire(view.pts)
        return out
