"""watchlist: a listed identity recognised in `min_frames` frames within `within_s`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.alert import Severity
from stages.analyze.rule import FaceMatch, Firing, FrameView, Rule, RuleOptions


class WatchlistOptions(RuleOptions):
    type: Literal["watchlist"] = Field(description="Rule type.")
    severity: Severity = Field("critical", description="Severity of its alerts.")
    cooldown_s: float = Field(60.0, ge=0, description="After an alert, the same identity stays quiet this long.")
    classes: list[str] | None = Field(None, description="Not used: the rule looks at recognised faces.")
    identities: list[str] | None = Field(None, description="Watchlist identities that fire (default: any).")
    min_frames: int = Field(2, ge=1, description="Matches of the identity within `within_s` before it fires (a one-frame lookalike does not).")
    within_s: float = Field(1.0, gt=0, description="The window for `min_frames`.")


class WatchlistRule(Rule[WatchlistOptions]):
    """A listed identity recognised in `min_frames` frames within `within_s`; quiet per identity for the cooldown."""

    type = "watchlist"
    Options = WatchlistOptions

    def __init__(self, cfg: WatchlistOptions) -> None:
        super().__init__(cfg)
        self.wanted = None if cfg.identities is None else set(cfg.identities)
        self._seen: dict[str, list[float]] = {}

    def step(self, view: FrameView) -> list[Firing]:
        out = []
        best: dict[str, FaceMatch] = {}
        for m in view.faces:
            if (self.wanted is None or m.identity in self.wanted) and (m.identity not in best or m.distance < best[m.identity].distance):
                best[m.identity] = m
        for name, m in sorted(best.items()):
            last = self._last_fire.get(name)
            if last is not None and view.pts - last < self.cfg.cooldown_s:
                continue  # still the same sighting, as far as alerts go
            times = [t for t in self._seen.get(name, []) if view.pts - t < self.cfg.within_s] + [view.pts]
            self._seen[name] = times
            if len(times) < self.cfg.min_frames:
                continue
            tracks = [m.track_id] if m.track_id >= 0 else []
            f = self.fire(name, view.pts, tracks, f"watchlist: {name} recognised (distance {m.distance:.2f})",
                          identity=name, distance=round(m.distance, 4))
            if f:
                f.boxes = [m.box]
                out.append(f)
        for name in [n for n, ts in self._seen.items() if view.pts - ts[-1] >= self.cfg.within_s]:
            del self._seen[name]
        return out
