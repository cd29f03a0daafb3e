"""sign_seen: a tracked traffic sign whose class is settled, once per sign track (for mapping the signs a camera sees).

The class is the sign classifier's (`sign.class`, a code into SIGN_CLASSES, named by the detections' labels;
-1 rows are ignored) and its probability `sign.score`. Every frame of a track votes for its class; the class is
settled when the class with the most votes (strictly) has `min_frames` frames at or above `min_score`. The alert
says the class, its mean score over the frames that voted for it and the sign's box in the frame that settled it.
`classes` here names sign classes, not categories: the rule looks at traffic_sign rows only. A track unseen
for the stage's `forget_after_s` is forgotten.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from pipeline.alert import Severity
from pipeline.detections import SIGN_CLASS, SIGN_SCORE
from stages.analyze.rule import Firing, FrameView, Rule, RuleOptions
from stages.infer.signs.classes import SIGN_CLASSES


class SignSeenOptions(RuleOptions):
    type: Literal["sign_seen"] = Field(description="Rule type.")
    severity: Severity = Field("info", description="Severity of its alerts.")
    cooldown_s: float = Field(0.0, ge=0, description="After an alert, other signs of the same class stay quiet this long (0: each sign track fires).")
    classes: list[str] | None = Field(None, description="Sign classes that fire (names of SIGN_CLASSES; default: all). The rule looks at traffic_sign rows.")
    min_frames: int = Field(3, ge=1, description="Frames at or above `min_score` the leading class needs before it is settled.")
    min_score: float = Field(0.5, ge=0, le=1, description="The `sign.score` a frame needs to count towards `min_frames`.")

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:  # replaces RuleOptions' check of categories
        unknown = [n for n in v or [] if n not in SIGN_CLASSES]
        if unknown:
            what = "sign class" if len(unknown) == 1 else "sign classes"
            raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}; known: {', '.join(SIGN_CLASSES)}")
        return v


@dataclass
class _Sign:
    last_seen: float
    votes: Counter[str] = field(default_factory=Counter)  # frames per class
    confident: Counter[str] = field(default_factory=Counter)  # ... of them at or above min_score
    score_sum: dict[str, float] = field(default_factory=dict)  # finite scores per class, summed, and how many
    scored: Counter[str] = field(default_factory=Counter)
    settled: bool = False


class SignSeenRule(Rule[SignSeenOptions]):
    """Once per sign track, when its class is settled; quiet per sign class for the cooldown."""

    type = "sign_seen"
    Options = SignSeenOptions
    categories = ("traffic_sign",)

    def __init__(self, cfg: SignSeenOptions) -> None:
        super().__init__(cfg)
        self.wanted = None if cfg.classes is None else set(cfg.classes)
        self.signs: dict[int, _Sign] = {}

    def step(self, view: FrameView) -> list[Firing]:
        d = view.detections
        codes = d.extra.get(SIGN_CLASS)
        if codes is None or not len(d):
            return []
        names = d.labels.get(SIGN_CLASS) or list(SIGN_CLASSES)
        scores = d.extra.get(SIGN_SCORE)
        keep = (d.track_ids >= 0) & (codes >= 0) & (codes < len(names)) & np.isin(d.class_ids, list(self.class_ids or ()))
        out = []
        for i in np.flatnonzero(keep).tolist():
            tid = int(d.track_ids[i])
            sign = self.signs.get(tid)
            if sign is None:
                sign = self.signs[tid] = _Sign(view.pts)
            sign.last_seen = view.pts
            if sign.settled:
                continue
            name, score = names[int(codes[i])], math.nan if scores is None else float(scores[i])
            sign.votes[name] += 1
            if math.isfinite(score):
                sign.score_sum[name] = sign.score_sum.get(name, 0.0) + score
                sign.scored[name] += 1
            if score >= self.cfg.min_score:  # False for NaN
                sign.confident[name] += 1
            top = sign.votes.most_common(2)
            leader = top[0][0]
            if len(top) > 1 and top[1][1] == top[0][1] or sign.confident[leader] < self.cfg.min_frames:
                continue  # a tie, or not sure enough yet
            sign.settled = True
            if self.wanted is not None and leader not in self.wanted:
                continue
            mean = sign.score_sum[leader] / sign.scored[leader]  # it has min_frames (>= 1) finite scores
            box = np.round(d.boxes[i].astype(np.float64), 2).tolist()
            f = self.fire(leader, view.pts, [tid], f"traffic_sign #{tid}: {leader} (mean score {mean:.2f} over {sign.votes[leader]} frames)",
                          sign_class=leader, mean_score=round(mean, 4), frames=sign.votes[leader], box=box)  # fmt: skip
            if f:
                out.append(f)
        return out

    def forget(self, pts: float, horizon_s: float) -> None:
        super().forget(pts, horizon_s)
        for tid in [t for t, sign in self.signs.items() if pts - sign.last_seen > horizon_s]:
            del self.signs[tid]
