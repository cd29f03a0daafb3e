"""The analyze stage: per stream, zones, lines and rules over confirmed tracks; raises alerts.

Adds to each analysed frame's attrs: `crossings` (line crossings completed in it), `counts` (running
crossing counts per line and direction), `occupancy` (confirmed tracks per zone) and `alerts` (what
fired, with a JPEG snapshot), which the alert stage writes to its durable outbox.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge

from pipeline.alert import Alert, alert_id
from pipeline.config import StreamConfig
from pipeline.metrics import PREFIX
from pipeline.protocol import Frame
from pipeline.stage import Stage, StageContext
from stages.analyze.options import AnalyzeOptions
from stages.analyze.rules import Firing
from stages.analyze.scene import Scene
from stages.analyze.snapshot import snapshot


def is_camera(stream: StreamConfig) -> bool:
    """Network and device sources restart their frame numbers with every pipeline start; files do not."""
    return isinstance(stream.source, int) or "://" in stream.source


class AnalyzeStage(Stage):
    kind = "analyze"
    Options = AnalyzeOptions

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.opts: AnalyzeOptions = self.options
        self.streams = {s.id: s for s in ctx.config.streams}
        self.scenes: dict[str, Scene] = {}
        self.epochs: dict[str, int] = {}
        self.last_seq: dict[str, int] = {}
        self._warned: set[str] = set()
        r = ctx.metrics.registry
        self.m_crossings = Counter(f"{PREFIX}_line_crossings", "Line crossings by confirmed tracks.", ["stage", "stream", "line", "direction"], registry=r)
        self.m_occupancy = Gauge(f"{PREFIX}_zone_occupancy", "Confirmed tracks in a zone, in the last analysed frame.", ["stage", "stream", "zone"], registry=r)
        self.m_firings = Counter(f"{PREFIX}_rule_firings", "Rule firings, by outcome (raised, or suppressed by the cooldown).", ["stage", "stream", "rule", "outcome"], registry=r)

    def _scene(self, stream: str) -> Scene | None:
        scene = self.scenes.get(stream)
        if scene is None and stream in self.opts.streams:
            scene = self.scenes[stream] = Scene(self.opts.streams[stream], self.opts.forget_after_s, self.opts.speed_window_s)
        return scene

    def _epoch(self, frame: Frame) -> int:
        """0 for files (ids repeat across replays, as they should); the stream's start second for cameras."""
        if frame.stream not in self.epochs:
            cfg = self.streams.get(frame.stream)
            self.epochs[frame.stream] = int(round(frame.capture_ts - frame.pts)) if cfg is not None and is_camera(cfg) else 0
        return self.epochs[frame.stream]

    def process(self, batch: list[Frame]) -> list[Frame]:
        for frame in batch:
            scene = self._scene(frame.stream)
            if scene is None:
                continue
            last = self.last_seq.get(frame.stream, -1)
            if frame.seq < 64 and last >= 128:
                # The source numbers from 0 again (a restarted decoder): the rules start afresh, the line
                # counts go on, and a camera's alert ids get the new start time.
                self.log.info("stream %s starts again at frame %d (was at %d)", frame.stream, frame.seq, last)
                counts = {n: dict(c.counts) for n, c in scene.counters.items()}
                scene = self.scenes[frame.stream] = Scene(self.opts.streams[frame.stream], self.opts.forget_after_s, self.opts.speed_window_s)
                scene.carried_counts = counts
                self.epochs.pop(frame.stream, None)
            elif frame.seq <= last:
                continue  # seen already (a batch retried after an error) or late: it keeps what it has
            self.last_seq[frame.stream] = frame.seq
            self._analyse(scene, frame)
        return batch

    def _analyse(self, scene: Scene, frame: Frame) -> None:
        suppressed = [r.suppressed for r in scene.rules]
        res = scene.update(frame.seq, frame.pts, frame.width, frame.height, frame.detections, frame.attrs.get("faces"))
        if scene.scale_warning and frame.stream not in self._warned:
            self._warned.add(frame.stream)
            self.log.warning("stream %s: %s", frame.stream, scene.scale_warning)
        name, stream = self.ctx.name, frame.stream
        for rule, before_n in zip(scene.rules, suppressed):
            if rule.suppressed > before_n:
                self.m_firings.labels(name, stream, rule.cfg.name, "suppressed").inc(rule.suppressed - before_n)
        for line, events in res.crossings.items():
            for _tid, direction in events:
                self.m_crossings.labels(name, stream, line, direction).inc()
        for zone, n in res.occupancy.items():
            self.m_occupancy.labels(name, stream, zone).set(n)
        if res.crossings:
            frame.attrs["crossings"] = {line: [[t, d] for t, d in ev] for line, ev in res.crossings.items()}
        if scene.counters:
            frame.attrs["counts"] = {n: dict(c.counts) for n, c in scene.counters.items()}
        if scene.zones:
            frame.attrs["occupancy"] = res.occupancy
        if res.firings:
            frame.attrs["alerts"] = [self._alert(scene, frame, f).to_wire() for f in res.firings]
            for f in res.firings:
                self.m_firings.labels(name, stream, f.rule, "raised").inc()

    def _alert(self, scene: Scene, frame: Frame, f: Firing) -> Alert:
        boxes = f.boxes if f.boxes is not None else scene.boxes_of(frame.detections, f.track_ids)
        jpeg = None
        if frame.image is not None:
            zone = scene.zones.get(f.details.get("zone") or "")
            line = scene.lines.get(f.details.get("line") or "")
            title = f"{f.rule}: {f.message}"
            jpeg = snapshot(frame.image, boxes, title, zone, line, self.opts.snapshot_quality, self.opts.snapshot_max_width)
        elif "pixels" not in self._warned:
            self._warned.add("pixels")
            self.log.warning("frames arrive without pixels (forward_pixels is off upstream): alerts carry no snapshot")
        details: dict[str, Any] = {k: v for k, v in f.details.items() if v is not None}
        return Alert(
            id=alert_id(frame.stream, self._epoch(frame), f.rule, f.track_ids, frame.seq),
            stream=frame.stream,
            rule=f.rule,
            kind=f.kind,
            severity=f.severity,
            track_ids=f.track_ids,
            seq=frame.seq,
            pts=round(frame.pts, 6),
            capture_ts=frame.capture_ts,
            message=f"{frame.stream}: {f.message}",
            details=details,
            boxes=boxes,
            snapshot=jpeg,
        )

