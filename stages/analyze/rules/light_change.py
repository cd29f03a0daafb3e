"""light_change: a tracked traffic light's state changes (green -> yellow, yellow -> red, ...).

The state is the column a light-state model wrote (`secondary: [{name: light, kind: light_state, classes:
[traffic_light]}]` writes `light.state`: 0 red, 1 yellow, 2 green, -1 unknown). Each light is followed by its
track id. A new state counts once it is read on `min_frames` consecutive readings of that track, so one misread
crop is no event; an unknown reading (-1) neither counts nor breaks a run, and the first state a track shows is
not a change (unless `report_first`). A track unseen for the stage's `forget_after_s` is forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.alert import Severity
from pipeline.categories import category_name
from stages.analyze.rule import Firing, FrameView, Rule, RuleOptions
from stages.infer.lights import LIGHT_STATES


class LightChangeOptions(RuleOptions):
    type: Literal["light_change"] = Field(description="Rule type.")
    severity: Severity = Field("info", description="Severity of its alerts.")
    cooldown_s: float = Field(0.0, ge=0, description="After an alert, the same light's same change (from -> to) stays quiet this long.")
    classes: list[str] | None = Field(["traffic_light"], description="Categories whose rows carry the light's state.")
    light_column: str = Field("light.state", description="Detections column with the light's state (0 red, 1 yellow, 2 green, -1 unknown).")
    zone: str | None = Field(None, description="Only lights whose box centre is inside this zone (default: anywhere).")
    min_frames: int = Field(2, ge=1, description="Consecutive readings of a new state before it counts (a one-frame misread does not).")
    report_first: bool = Field(False, description="Also fire for the first state a light's track shows (no `from_state`).")


@dataclass
class _Light:
    last_seen: float
    shown: int | None = None  # the state that counts, None before the first
    reading: int = -1  # the last known state read, and how many readings in a row gave it
    run: int = 0


class LightChangeRule(Rule[LightChangeOptions]):
    """Each settled change of a tracked light's state; quiet per light and change for the cooldown."""

    type = "light_change"
    Options = LightChangeOptions

    def __init__(self, cfg: LightChangeOptions) -> None:
        super().__init__(cfg)
        self.lights: dict[int, _Light] = {}

    def step(self, view: FrameView) -> list[Firing]:
        d = view.detections
        column = d.extra.get(self.cfg.light_column)
        if column is None or not len(d):
            return []
        keep = d.track_ids >= 0
        if self.class_ids is not None:
            keep &= np.isin(d.class_ids, list(self.class_ids))
        rows = np.flatnonzero(keep)
        if self.cfg.zone is not None and len(rows):
            centres = np.stack([(d.boxes[rows, 0] + d.boxes[rows, 2]) / 2, (d.boxes[rows, 1] + d.boxes[rows, 3]) / 2], axis=1)
            rows = rows[view.zones[self.cfg.zone].contains(centres)]
        out = []
        for i in rows.tolist():
            tid, state = int(d.track_ids[i]), int(column[i])
            light = self.lights.get(tid)
            if light is None:
                light = self.lights[tid] = _Light(view.pts)
            light.last_seen = view.pts
            if not 0 <= state < len(LIGHT_STATES):
                continue  # unknown: no evidence either way
            if state == light.reading:
                light.run += 1
            else:
                light.reading, light.run = state, 1
            if light.run < self.cfg.min_frames or state == light.shown:
                continue
            before, light.shown = light.shown, state
            if before is None and not self.cfg.report_first:
                continue
            name = f"{category_name(int(d.class_ids[i]))} #{tid}"
            to_state = LIGHT_STATES[state]
            from_state = None if before is None else LIGHT_STATES[before]
            message = f"{name} shows {to_state}" if from_state is None else f"{name} changed {from_state} -> {to_state}"
            f = self.fire((tid, before, state), view.pts, [tid], message, from_state=from_state, to_state=to_state, zone=self.cfg.zone)
            if f:
                out.append(f)
        return out

    def forget(self, pts: float, horizon_s: float) -> None:
        super().forget(pts, horizon_s)
        for tid in [t for t, light in self.lights.items() if pts - light.last_seen > horizon_s]:
            del self.lights[tid]
