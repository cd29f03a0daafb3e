"""red_light: a vehicle crosses a stop line while the traffic light that governs it shows red.

The light's state comes from the frame's traffic-light detections and the column a light-state model wrote
(`secondary: [{name: light, kind: light_state, classes: [traffic_light]}]` writes `light.state`: 0 red,
1 yellow, 2 green, -1 not run). The governing light is the traffic light inside the zone `light_zone`, or else
the one nearest the stop line's middle among those above it. Its last state seen is held for `hold_s`, so a light the detector
misses for a few frames still governs.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.alert import Severity
from pipeline.categories import VEHICLES, category_id
from stages.analyze.rule import Firing, FrameView, Rule, RuleOptions, describe

LIGHT_STATES = ("red", "yellow", "green")  # the codes of the light-state column, in order
TRAFFIC_LIGHT = category_id("traffic_light")


class RedLightOptions(RuleOptions):
    type: Literal["red_light"] = Field(description="Rule type.")
    severity: Severity = Field("critical", description="Severity of its alerts.")
    cooldown_s: float = Field(0.0, ge=0, description="After an alert, the same vehicle stays quiet this long.")
    classes: list[str] | None = Field(list(VEHICLES), description="Categories that must stop at the light.")
    line: str = Field(description="The stop line.")
    direction: Literal["in", "out", "any"] = Field("any", description="Crossings that count: in (right to left of a -> b), out, or any.")
    light_zone: str | None = Field(None, description="Zone holding the governing light (its box centre); null: the light nearest above the line.")
    light_column: str = Field("light.state", description="Detections column with the light's state (0 red, 1 yellow, 2 green, -1 unknown).")
    stop_on: list[Literal["red", "yellow"]] = Field(["red"], description="States that forbid crossing.")
    hold_s: float = Field(1.0, ge=0, description="How long the light's last state seen still governs when it is not detected.")


class RedLightRule(Rule[RedLightOptions]):
    type = "red_light"
    Options = RedLightOptions

    def __init__(self, cfg: RedLightOptions) -> None:
        super().__init__(cfg)
        self.forbidden = {LIGHT_STATES.index(s) for s in cfg.stop_on}
        self.state: int | None = None  # the governing light's last known state, and when it was seen
        self.seen_at = -1e9

    def _light(self, view: FrameView) -> int | None:
        """The state of the governing light in this frame, if it is detected with a known state."""
        d = view.detections
        column = d.extra.get(self.cfg.light_column)
        if column is None or not len(d):
            return None
        rows = np.flatnonzero((d.class_ids == TRAFFIC_LIGHT) & (column >= 0))
        if not len(rows):
            return None
        centres = np.stack([(d.boxes[rows, 0] + d.boxes[rows, 2]) / 2, (d.boxes[rows, 1] + d.boxes[rows, 3]) / 2], axis=1)
        if self.cfg.light_zone is not None:
            inside = view.zones[self.cfg.light_zone].contains(centres)
            rows = rows[inside]
            return int(column[rows[0]]) if len(rows) else None
        line = view.lines[self.cfg.line]
        middle = (line.a + line.b) / 2
        above = d.boxes[rows, 3] <= middle[1]  # the whole box above the line's middle (image y grows downwards)
        if not above.any():
            return None
        rows, centres = rows[above], centres[above]
        return int(column[rows[int(np.argmin(np.hypot(*(centres - middle).T)))]])

    def step(self, view: FrameView) -> list[Firing]:
        state = self._light(view)
        if state is not None:
            self.state, self.seen_at = state, view.pts
        elif view.pts - self.seen_at > self.cfg.hold_s:
            self.state = None  # no light known: nothing is forbidden
        if self.state not in self.forbidden:
            return []
        out = []
        row = {int(t): i for i, t in enumerate(view.ids)}
        sel = self.selected(view)
        colour = LIGHT_STATES[self.state]  # type: ignore[index]
        for tid, direction in view.crossings.get(self.cfg.line, []):
            i = row.get(tid)
            if i is None or not sel[i] or self.cfg.direction not in ("any", direction):
                continue
            f = self.fire(tid, view.pts, [tid], f"{describe(view, i)} crossed stop line {self.cfg.line} on {colour}",
                          line=self.cfg.line, direction=direction, light=colour)
            if f:
                out.append(f)
        return out
