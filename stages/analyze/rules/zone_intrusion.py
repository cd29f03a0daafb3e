"""zone_intrusion: an object (of `classes`) has been in the zone `min_dwell_s`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stages.analyze.rule import RuleOptions
from stages.analyze.rules._zone_dwell import ZoneDwellRule


class ZoneIntrusionOptions(RuleOptions):
    type: Literal["zone_intrusion"] = Field(description="Rule type.")
    zone: str = Field(description="Zone name.")
    min_dwell_s: float = Field(1.0, ge=0, description="Time inside the zone before it counts (ignores brushing the edge).")
    exit_after_s: float = Field(1.0, ge=0, description="Time outside (or unseen) before a visit ends; a flicker does not end it.")


class ZoneIntrusionRule(ZoneDwellRule[ZoneIntrusionOptions]):
    type = "zone_intrusion"
    Options = ZoneIntrusionOptions
    verb = "entered"

    def __init__(self, cfg: ZoneIntrusionOptions) -> None:
        super().__init__(cfg, cfg.zone, cfg.min_dwell_s, cfg.exit_after_s)
