"""What every analytics rule is: options a config names by `type`, and a class that looks at one frame's
confirmed tracks (with their zones, crossings and motion) and says what fires.

A rule type is one module of stages/analyze/rules/, holding its options (a `RuleOptions` with a
`type: Literal[...]` field) and its `Rule` subclass (with `type` and `Options` set); the registry there
finds it. A firing is once per episode (see Sustain) and then quiet for the rule's cooldown.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.alert import AlertEvent, Severity
from pipeline.categories import category_id, category_name, check_categories
from pipeline.detections import Detections
from stages.analyze.geometry import Line, Zone
from stages.analyze.motion import TrackMotion
from stages.analyze.sustain import Sustain

RESET_S = 1.0  # how long a speed/direction condition must be false before its episode ends


@dataclass
class FrameView:
    """One frame of one stream, as the rules see it: confirmed tracks only."""

    seq: int
    pts: float
    ids: np.ndarray  # [N] track ids
    classes: np.ndarray  # [N] category ids
    boxes: np.ndarray  # [N, 4] xyxy pixels
    inside: dict[str, np.ndarray]  # zone -> [N] bool (anchor in zone)
    motion: dict[int, TrackMotion]  # track id -> motion (pixels, or metres with a ground plane)
    crossings: dict[str, list[tuple[int, str]]]  # line -> (track id, direction) completed in this frame
    unit: str  # "px/s" or "m/s": the unit of motion speeds
    faces: list[FaceMatch] = field(default_factory=list)  # watchlist matches in this frame (any track state)
    detections: Detections = field(default_factory=Detections)  # every row of the frame (any track state), its columns
    lines: dict[str, Line] = field(default_factory=dict)  # the stream's geometry, in this frame's pixels
    zones: dict[str, Zone] = field(default_factory=dict)


@dataclass
class FaceMatch:
    identity: str
    distance: float
    box: list[float]
    track_id: int  # -1 when the face is not (yet) a confirmed track


@dataclass
class Firing:
    rule: str
    kind: str
    severity: str
    track_ids: list[int]
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    boxes: list[list[float]] | None = None  # what to box in the snapshot, when not the tracks' boxes
    event: AlertEvent = "new"  # a condition that lasts also reports "update" and "end" (RuleOptions.report_end)


class RuleOptions(BaseModel):
    """The options every rule has; a rule type's options add `type: Literal["..."]` and their own keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Rule name: in alert ids, messages and the metric label `rule`.")
    severity: Severity = Field("warning", description="Severity of its alerts.")
    cooldown_s: float = Field(30.0, ge=0, description="After an alert, the same rule and object (or zone) stay quiet this long.")
    classes: list[str] | None = Field(None, description="Categories the rule looks at (default: all tracked ones).")
    report_end: bool = Field(
        False, description="A rule whose condition lasts (all but line_crossing, watchlist, light_change and sign_seen): also raise an `end` alert when it is over, with its duration."
    )
    update_every_s: float | None = Field(
        None, gt=0, description="... and an `update` alert this often while it lasts (null: none)."
    )

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:
        check_categories(v or [])
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or len(v) > 64 or any(c in v for c in "/#+ \t\n"):
            raise ValueError("must be 1-64 characters without spaces, '/', '#' or '+' (it becomes an MQTT topic level)")
        return v


OptionsT = TypeVar("OptionsT", bound=RuleOptions)


class Rule(Generic[OptionsT]):
    """One configured rule: the class filter and the cooldown. A rule type sets `type` (what the config's
    `type` names) and `Options`, and implements `step`."""

    Options: ClassVar[type[RuleOptions]]  # before `type`, which would shadow the builtin here
    type: ClassVar[str] = ""
    # A condition that lasts: such a rule keeps `self.sustain` (keyed as it fires), and can report updates and ends.
    durable: ClassVar[bool] = False
    # The categories of a rule type whose `classes` option names something else (sign_seen: sign classes).
    categories: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, cfg: OptionsT) -> None:
        self.cfg = cfg
        names = self.categories if self.categories is not None else cfg.classes
        self.class_ids = None if names is None else {category_id(c) for c in names}
        self._last_fire: dict[Any, float] = {}
        self._open: dict[Any, _Open] = {}  # durable conditions that fired and still hold
        self.suppressed = 0  # firings swallowed by the cooldown
        self.sustain: Sustain[Any]

    def selected(self, view: FrameView) -> np.ndarray:
        if self.class_ids is None:
            return np.ones(len(view.ids), bool)
        return np.isin(view.classes, list(self.class_ids))

    def fire(self, key: Any, pts: float, track_ids: list[int], message: str, **details: Any) -> Firing | None:
        last = self._last_fire.get(key)
        if last is not None and pts - last < self.cfg.cooldown_s:
            self.suppressed += 1
            return None
        self._last_fire[key] = pts
        firing = Firing(self.cfg.name, self.type, self.cfg.severity, track_ids, message, details)
        if self.durable and (self.cfg.report_end or self.cfg.update_every_s):
            self._open[key] = _Open(firing, pts, pts)
        return firing

    def follow(self, pts: float) -> list[Firing]:
        """After `step`: an `update` of each condition that still holds (every update_every_s) and an `end` of
        each that is over, for the rules that report them."""
        out: list[Firing] = []
        for key, o in list(self._open.items()):
            lasted = round(pts - o.since, 3)
            if not self.sustain.holds(key, pts):
                del self._open[key]
                if self.cfg.report_end:
                    out.append(replace(o.firing, event="end", message=f"{o.firing.message}: over after {lasted:.1f} s",
                                       details={**o.firing.details, "lasted_s": lasted}))  # fmt: skip
            elif self.cfg.update_every_s and pts - o.updated >= self.cfg.update_every_s:
                o.updated = pts
                out.append(replace(o.firing, event="update", message=f"{o.firing.message}: still, {lasted:.1f} s on",
                                   details={**o.firing.details, "lasted_s": lasted}))  # fmt: skip
        return out

    def forget(self, pts: float, horizon_s: float) -> None:
        keep = max(horizon_s, self.cfg.cooldown_s)
        for k in [k for k, t in self._last_fire.items() if pts - t > keep]:
            del self._last_fire[k]

    def step(self, view: FrameView) -> list[Firing]:
        raise NotImplementedError


@dataclass
class _Open:
    firing: Firing  # as it fired: updates and the end repeat its tracks, message and details
    since: float
    updated: float


def describe(view: FrameView, i: int | np.integer[Any]) -> str:
    """The object in row `i` as messages name it: "person #3"."""
    return f"{category_name(int(view.classes[i]))} #{int(view.ids[i])}"
