"""The analyze stage's config: per stream, zones, lines, an optional ground plane and the rules.

Everything is checked when the config loads: points against the stated frame size, polygons for
self-intersection, lines for length, rules for the zones and lines they name, metre units for a
ground plane. A stream whose frames turn out to have another size gets its geometry scaled.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.alert import Severity
from pipeline.categories import VEHICLES, check_categories
from stages.analyze.geometry import GeometryError, Line, Zone
from stages.analyze.ground_plane import GroundPlane


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShapeConfig(_Strict):
    points: list[tuple[float, float]] = Field(description="[[x, y], ...]: 2 for a line (a -> b), 3 or more for a zone.")
    relative: bool | None = Field(None, description="Coordinates are fractions of the frame (0..1); default: the stream's `relative`.")


class GroundPlaneConfig(_Strict):
    image: list[tuple[float, float]] = Field(description="Four points in the frame, [[x, y], ...] in pixels.")
    ground: list[tuple[float, float]] = Field(description="The same four points on the ground, [[X, Y], ...] in metres.")


def _check_classes(v: list[str] | None) -> list[str] | None:
    check_categories(v or [])
    return v


class _RuleBase(_Strict):
    name: str = Field(description="Rule name: in alert ids, messages and the metric label `rule`.")
    severity: Severity = Field("warning", description="Severity of its alerts.")
    cooldown_s: float = Field(30.0, ge=0, description="After an alert, the same rule and object (or zone) stay quiet this long.")
    classes: list[str] | None = Field(None, description="Categories the rule looks at (default: all tracked ones).")

    _classes = field_validator("classes")(_check_classes)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or len(v) > 64 or any(c in v for c in "/#+ \t\n"):
            raise ValueError("must be 1-64 characters without spaces, '/', '#' or '+' (it becomes an MQTT topic level)")
        return v


class ZoneIntrusionRule(_RuleBase):
    type: Literal["zone_intrusion"] = Field(description="Rule type.")
    zone: str = Field(description="Zone name.")
    min_dwell_s: float = Field(1.0, ge=0, description="Time inside the zone before it counts (ignores brushing the edge).")
    exit_after_s: float = Field(1.0, ge=0, description="Time outside (or unseen) before a visit ends; a flicker does not end it.")


class LoiteringRule(_RuleBase):
    type: Literal["loitering"] = Field(description="Rule type.")
    zone: str = Field(description="Zone name.")
    limit_s: float = Field(30.0, gt=0, description="Time inside the zone above which an object loiters.")
    exit_after_s: float = Field(3.0, ge=0, description="Time outside (or unseen) before a visit ends.")


class LineCrossingRule(_RuleBase):
    type: Literal["line_crossing"] = Field(description="Rule type.")
    severity: Severity = Field("info", description="Severity of its alerts.")
    cooldown_s: float = Field(0.0, ge=0, description="After an alert, the same object's crossings stay quiet this long.")
    line: str = Field(description="Line name.")
    direction: Literal["in", "out", "any"] = Field("any", description="Crossings that fire: in (right to left of a -> b), out, or any.")


class WrongWayRule(_RuleBase):
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


class OvercrowdingRule(_RuleBase):
    type: Literal["overcrowding"] = Field(description="Rule type.")
    zone: str = Field(description="Zone name.")
    max_count: int = Field(ge=0, description="More objects than this in the zone is crowding.")
    for_s: float = Field(5.0, ge=0, description="How long the count must stay above `max_count`.")


class SpeedRule(_RuleBase):
    type: Literal["speed"] = Field(description="Rule type.")
    limit: float = Field(gt=0, description="Speed above which the rule fires.")
    unit: Literal["px/s", "m/s"] = Field("px/s", description="m/s needs the stream's `ground_plane`.")
    zone: str | None = Field(None, description="Only inside this zone (default: anywhere).")
    for_s: float = Field(0.5, ge=0, description="How long the speed must stay above the limit.")


class StoppedVehicleRule(_RuleBase):
    type: Literal["stopped_vehicle"] = Field(description="Rule type.")
    classes: list[str] | None = Field(list(VEHICLES), description="Categories that count as vehicles.")
    zone: str | None = Field(None, description="Only inside this zone (default: anywhere).")
    max_speed: float = Field(5.0, ge=0, description="At or below this speed (pixels/s, or m/s with a ground plane) it is stopped.")
    for_s: float = Field(30.0, gt=0, description="How long it must stay stopped.")

    _classes = field_validator("classes")(_check_classes)


class WatchlistRule(_RuleBase):
    type: Literal["watchlist"] = Field(description="Rule type.")
    severity: Severity = Field("critical", description="Severity of its alerts.")
    cooldown_s: float = Field(60.0, ge=0, description="After an alert, the same identity stays quiet this long.")
    classes: list[str] | None = Field(None, description="Not used: the rule looks at recognised faces.")
    identities: list[str] | None = Field(None, description="Watchlist identities that fire (default: any).")
    min_frames: int = Field(2, ge=1, description="Matches of the identity within `within_s` before it fires (a one-frame lookalike does not).")
    within_s: float = Field(1.0, gt=0, description="The window for `min_frames`.")


Rule = Annotated[
    Union[ZoneIntrusionRule, LoiteringRule, LineCrossingRule, WrongWayRule, OvercrowdingRule, SpeedRule, StoppedVehicleRule, WatchlistRule],
    Field(discriminator="type"),
]


class StreamAnalyticsConfig(_Strict):
    frame_size: tuple[int, int] = Field(description="[width, height] the pixel coordinates refer to; other frame sizes are scaled.")
    relative: bool = Field(False, description="Coordinates are fractions of the frame (0..1) unless a shape says otherwise.")
    zones: dict[str, ShapeConfig] = Field(default_factory=dict, description="Polygon zones by name.")
    lines: dict[str, ShapeConfig] = Field(default_factory=dict, description="Directed lines by name.")
    ground_plane: GroundPlaneConfig | None = Field(None, description="Homography to metres on the ground (speeds in m/s).")
    rules: list[Rule] = Field(default_factory=list, description="What raises alerts; see the rule types below.")
    line_hysteresis: float = Field(8.0, ge=0, description="Pixels either side of a line that never decide a side (jitter).")

    @model_validator(mode="after")
    def _check(self) -> "StreamAnalyticsConfig":
        w, h = self.frame_size
        if not (16 <= w <= 16384 and 16 <= h <= 16384):
            raise ValueError("frame_size: width and height must be between 16 and 16384")
        problems: list[str] = []  # all of them at once, not one per attempt
        for kind, shapes, load in (("zones", self.zones, Zone.load), ("lines", self.lines, Line.load)):
            for name, shape in shapes.items():
                try:
                    load(name, [list(p) for p in shape.points], (w, h), self._rel(shape))
                except GeometryError as exc:
                    problems.append(f"{kind}.{name}: {exc}")
        if self.ground_plane is not None:
            try:
                GroundPlane.load(self.ground_plane.image, self.ground_plane.ground, (w, h))
            except GeometryError as exc:
                problems.append(f"ground_plane: {exc}")
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"rules: duplicate name {', '.join(dup)}")
        for i, r in enumerate(self.rules):
            zone = getattr(r, "zone", None)
            if zone is not None and zone not in self.zones:
                problems.append(f"rules[{i}] ({r.name}): no zone named {zone!r}; zones: {', '.join(self.zones) or 'none'}")
            line = getattr(r, "line", None)
            if line is not None and line not in self.lines:
                problems.append(f"rules[{i}] ({r.name}): no line named {line!r}; lines: {', '.join(self.lines) or 'none'}")
            if self.ground_plane is None and getattr(r, "unit", "px/s") == "m/s":
                problems.append(f"rules[{i}] ({r.name}): unit m/s needs a ground_plane")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _rel(self, shape: ShapeConfig) -> bool:
        return self.relative if shape.relative is None else shape.relative


class AnalyzeOptions(_Strict):
    streams: dict[str, StreamAnalyticsConfig] = Field(
        default_factory=dict, description="Geometry and rules by stream id; streams not named pass through unanalysed."
    )
    snapshot_quality: int = Field(85, ge=10, le=100, description="JPEG quality of alert snapshots.")
    snapshot_max_width: int = Field(1280, ge=64, description="Snapshots wider than this are scaled down.")
    forget_after_s: float = Field(10.0, gt=0, description="A track unseen this long is dropped from the rules' state.")
    speed_window_s: float = Field(1.0, gt=0, description="Speeds are displacement over this much time (smooths box jitter).")

    def check_against(self, stream_ids: list[str]) -> list[tuple[str, str]]:
        """Problems that need the whole config: streams named here that the config does not have."""
        return [
            (f"streams.{sid}", f"no stream {sid!r} in the config; streams: {', '.join(stream_ids)}")
            for sid in self.streams
            if sid not in stream_ids
        ]

