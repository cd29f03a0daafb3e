"""The analytics drawn over a stream's pictures (the recorded video, the web view): its zones with their occupancy,
its lines with their counts, in pixels of the picture; and the geometry itself, taken from the config file the
pipeline runs from and followed through edits, as the analyze stage follows them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.analytics import Analytics
from pipeline.draw import draw_arrow, draw_label, draw_polygon, label_scale, label_size

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig
    from stages.analyze.geometry import Line, Zone
    from stages.analyze.options import StreamAnalyticsConfig

ZONE_COLOR = (0, 220, 255)
LINE_COLOR = (255, 200, 0)


Label = tuple[str, tuple[int, int], tuple[int, int, int]]  # text, top-left corner, colour

# fit_geometry per (config, frame size): every drawn frame needs it, and it changes only with the config. An entry
# holds its config, so the id in its key is not reused while it is there.
_FITTED: dict[tuple[int, int, int], tuple[StreamAnalyticsConfig, dict[str, Zone], dict[str, Line]]] = {}


def _fitted(cfg: StreamAnalyticsConfig, width: int, height: int) -> tuple[dict[str, Zone], dict[str, Line]]:
    from stages.analyze.scene import fit_geometry

    key = (id(cfg), width, height)
    hit = _FITTED.get(key)
    if hit is None or hit[0] is not cfg:
        if len(_FITTED) >= 64:  # configs replaced by edits: let the old ones go
            _FITTED.clear()
        hit = _FITTED[key] = (cfg, *fit_geometry(cfg, width, height))
    return hit[1], hit[2]


def analytics_labels(cfg: StreamAnalyticsConfig, analytics: Analytics | None, width: int, height: int) -> list[Label]:
    """Where draw_analytics puts its labels (zone name and occupancy, line name and counts), inside the picture:
    what the detections' labels are placed around."""
    zones, lines = _fitted(cfg, width, height)
    scale = label_scale(width, height)
    out: list[Label] = []

    def label(text: str, x: float, y: float, color: tuple[int, int, int]) -> None:
        tw, th = label_size(text, scale)
        out.append((text, (int(min(max(x, 0), max(width - tw, 0))), int(min(max(y, 0), max(height - th, 0)))), color))

    for name, zone in zones.items():
        inside = analytics.occupancy.get(name) if analytics is not None and analytics.occupancy is not None else None
        x, y = np.min(zone.polygon, axis=0)
        label(name if inside is None else f"{name}: {inside}", x + 2, y + 2, ZONE_COLOR)
    for name, line in lines.items():
        counts = analytics.counts.get(name) if analytics is not None and analytics.counts is not None else None
        label(name if counts is None else f"{name}: in {counts.get('in', 0)} out {counts.get('out', 0)}", line.a[0] + 4, line.a[1] + 2, LINE_COLOR)
    return out


def label_rects(labels: list[Label], width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The boxes (x1, y1, x2, y2) the labels take."""
    scale = label_scale(width, height)
    return [(x, y, x + w, y + h) for text, (x, y), _ in labels for w, h in [label_size(text, scale)]]


def draw_analytics(image: np.ndarray, cfg: StreamAnalyticsConfig, analytics: Analytics | None, labels: list[Label] | None = None) -> None:
    """Zones (outline, name and tracks inside) and lines (arrow a -> b, name and counts in/out), in place;
    `labels`: analytics_labels of this picture, where the caller has them already."""
    h, w = image.shape[:2]
    zones, lines = _fitted(cfg, w, h)
    scale = label_scale(w, h)
    thickness = max(1, round(2 * scale / 0.45))
    for zone in zones.values():
        draw_polygon(image, zone.polygon, ZONE_COLOR, thickness)
    for line in lines.values():
        draw_arrow(image, line.a, line.b, LINE_COLOR, thickness)
    for text, at, color in analytics_labels(cfg, analytics, w, h) if labels is None else labels:
        draw_label(image, text, at, color, scale=scale)


def analytics_configs(config: PipelineConfig) -> dict[str, StreamAnalyticsConfig]:
    """The analyze stage's configuration per stream, if the pipeline has an analyze stage."""
    from stages.analyze.options import AnalyzeOptions

    for st in config.stages:
        if st.kind == "analyze":
            return dict(AnalyzeOptions.model_validate(st.options).streams)
    return {}


class OverlayGeometry:
    """Each stream's analytics configuration for drawing, re-read when the config file changes (looked at once a
    second at most); an edit that does not load keeps what was drawn before."""

    def __init__(self, config: PipelineConfig, path: Path | None) -> None:
        from pipeline.config import ConfigWatch

        self.config = config
        self.path = path
        self.streams = analytics_configs(config)
        self._watch = ConfigWatch(path)

    def get(self, stream: str) -> StreamAnalyticsConfig | None:
        if self._watch.changed():
            self._reload()
        return self.streams.get(stream)

    def _reload(self) -> None:
        from pipeline.config import load_config

        analyze = next((st.name for st in self.config.stages if st.kind == "analyze"), None)
        if analyze is None or self.path is None:
            return
        try:
            # That stage's options only: the others may name secrets this process does not have.
            self.streams = analytics_configs(load_config(self.path, only_stage=analyze))
        except Exception:  # an edit that does not load: analyze keeps its geometry, so do the pictures
            return
