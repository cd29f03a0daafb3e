"""anomaly: a track moves unlike the normal tracks the trajectory model learnt, for long enough.

The score is the column the track stage's trajectory model writes (`track: {anomaly: {}}` writes `anomaly.score`:
how rare the track's recent motion is among normal tracks, scaled so that 1 is exceeded by normal motion at the
model's calibrated false-alarm rate; NaN where a track's history in full view is too short). A track fires once its
score has stayed at or above `threshold` for `min_duration_s` (a single odd step is no event), then stays quiet for
the cooldown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.alert import Severity
from stages.analyze.rule import Firing, FrameView, Rule, RuleOptions, describe


class AnomalyOptions(RuleOptions):
    type: Literal["anomaly"] = Field(description="Rule type.")
    severity: Severity = Field("warning", description="Severity of its alerts.")
    cooldown_s: float = Field(30.0, ge=0, description="After an alert, the same track stays quiet this long.")
    classes: list[str] | None = Field(["person"], description="Categories whose tracks are judged.")
    column: str = Field("anomaly.score", description="Detections column with the anomaly score (1: the model's calibrated threshold).")
    threshold: float = Field(1.0, gt=0, description="Score at or above which motion is abnormal (1: the false-alarm rate the model was calibrated for).")
    min_duration_s: float = Field(1.0, ge=0, description="How long the score must stay at or above the threshold before an alert.")


@dataclass
class _Run:
    since: float  # when the score went above the threshold
    last_seen: float
    peak: float


class AnomalyRule(Rule[AnomalyOptions]):
    type = "anomaly"
    Options = AnomalyOptions

    def __init__(self, cfg: AnomalyOptions) -> None:
        super().__init__(cfg)
        self.runs: dict[int, _Run] = {}

    def step(self, view: FrameView) -> list[Firing]:
        d = view.detections
        column = d.extra.get(self.cfg.column)
        if column is None or not len(d):
            return []
        scores = column[d.track_ids >= 0]  # the view's rows: confirmed tracks only, in the same order
        out = []
        for i in np.flatnonzero(self.selected(view)).tolist():
            tid, s = int(view.ids[i]), float(scores[i])
            if not s >= self.cfg.threshold:  # NaN (too short a history) ends a run too
                self.runs.pop(tid, None)
                continue
            run = self.runs.get(tid)
            if run is None:
                run = self.runs[tid] = _Run(view.pts, view.pts, s)
            run.last_seen, run.peak = view.pts, max(run.peak, s)
            if view.pts - run.since + 1e-9 < self.cfg.min_duration_s:
                continue
            f = self.fire(tid, view.pts, [tid], f"{describe(view, i)} moves abnormally (score {run.peak:.2f} for {view.pts - run.since:.1f} s)",
                          score=round(run.peak, 3), duration_s=round(view.pts - run.since, 2))  # fmt: skip
            if f:
                out.append(f)
        return out

    def forget(self, pts: float, horizon_s: float) -> None:
        super().forget(pts, horizon_s)
        for tid in [t for t, r in self.runs.items() if pts - r.last_seen > horizon_s]:
            del self.runs[tid]
