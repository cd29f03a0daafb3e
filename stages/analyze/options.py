"""The analyze stage's config: per stream, zones, lines, an optional ground plane and the rules.

Everything is checked when the config loads: points against the stated frame size, polygons for
self-intersection, lines for length, rules for the zones and lines they name, metre units for a
ground plane. A stream whose frames turn out to have another size gets its geometry scaled.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stages.analyze.geometry import GeometryError, Line, Zone
from stages.analyze.ground_plane import GroundPlane
from stages.analyze.rules import RuleConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShapeConfig(_Strict):
    points: list[tuple[float, float]] = Field(description="[[x, y], ...]: 2 for a line (a -> b), 3 or more for a zone.")
    relative: bool | None = Field(None, description="Coordinates are fractions of the frame (0..1); default: the stream's `relative`.")


class GroundPlaneConfig(_Strict):
    image: list[tuple[float, float]] = Field(description="Four points in the frame, [[x, y], ...] in pixels.")
    ground: list[tuple[float, float]] = Field(description="The same four points on the ground, [[X, Y], ...] in metres.")


class StreamAnalyticsConfig(_Strict):
    frame_size: tuple[int, int] = Field(description="[width, height] the pixel coordinates refer to; other frame sizes are scaled.")
    relative: bool = Field(False, description="Coordinates are fractions of the frame (0..1) unless a shape says otherwise.")
    zones: dict[str, ShapeConfig] = Field(default_factory=dict, description="Polygon zones by name.")
    lines: dict[str, ShapeConfig] = Field(default_factory=dict, description="Directed lines by name.")
    ground_plane: GroundPlaneConfig | None = Field(None, description="Homography to metres on the ground (speeds in m/s).")
    rules: list[RuleConfig] = Field(default_factory=list, description="What raises alerts; see the rule types below.")
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
            for zone in (getattr(r, "zone", None), getattr(r, "light_zone", None)):
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

