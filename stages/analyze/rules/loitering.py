"""loitering: an object has been in the zone `limit_s`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stages.analyze.rule import RuleOptions
from stages.analyze.rules._zone_dwell import ZoneDwellRule


class LoiteringOptions(RuleOptions):
    type: Literal["loitering"] = Field(description="Rule type.")
    zone: str = Field(description="Zone name.")
    limit_s: float = Field(30.0, gt=0, description="Time inside the zone above which an object loiters.")
    exit_after_s: float = Field(3.0, ge=0, description="Time outside (or unseen) before a visit ends.")


class LoiteringRule(ZoneDwellRule[LoiteringOptions]):
    type = "loitering"
    Options = LoiteringOptions
    verb = "is loitering in"

    def __init__(self, cfg: LoiteringOptions) -> None:
        super().__init__(cfg, cfg.zone, cfg.limit_s, cfg.exit_after_s)
