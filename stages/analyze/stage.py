"""The analyze stage: per stream, zones, lines and rules over confirmed tracks; raises alerts.

Sets each analysed frame's `analytics`: the line crossings completed in it, the running crossing counts
per line and direction, the confirmed tracks per zone, and the alerts that fired (with a JPEG
snapshot), which the alert stage writes to its durable outbox.

A stream's scene lives for one epoch of its source: when the source restarts, the rules start afresh
and the line counts go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from pipeline.alert import Alert, alert_id
from pipeline.analytics import Analytics
from pipeline.config import ConfigWatch
from pipeline.metrics import PREFIX
from pipeline.protocol import Frame, StreamEnd, StreamStart
from pipeline.stage import Stage, StageContext
from stages.analyze.options import AnalyzeOptions
from stages.analyze.rule import Firing
from stages.analyze.scene import Scene
from stages.analyze.snapshot import snapshot


class AnalyzeStage(Stage):
    kind = "analyze"
    Options = AnalyzeOptions

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.opts: AnalyzeOptions = self.options
        self.counts: dict[str, dict[str, dict[str, int]]] = {}  # per stream, line counts carried over restarts
        self.last_seq: dict[str, int] = {}
        self._warned: set[str] = set()
        r = ctx.metrics.registry
        self.m_crossings = Counter(f"{PREFIX}_line_crossings", "Line crossings by confirmed tracks.", ["stage", "stream", "line", "direction"], registry=r)
        self.m_occupancy = Gauge(f"{PREFIX}_zone_occupancy", "Confirmed tracks in a zone, in the last analysed frame.", ["stage", "stream", "zone"], registry=r)
        # Live: edits of the config file it runs from are taken within a second (tick).
        self._config = ConfigWatch(ctx.config_path if ctx.mode == "live" else None)
        self.m_firings = Counter(f"{PREFIX}_rule_firings", "Rule firings, by outcome (raised, or suppressed by the cooldown).", ["stage", "stream", "rule", "outcome"], registry=r)

    def start_stream(self, stream: str, start: StreamStart) -> Scene | None:
        """A new scene per epoch: rules start afresh; a camera's line counts go on from the last epoch's, a file
        read again from its start counts again from zero (the same frames come again)."""
        self.last_seq.pop(stream, None)
        if stream not in self.opts.streams:
            return None
        scene = Scene(self.opts.streams[stream], self.opts.forget_after_s, self.opts.speed_window_s)
        scene.carried_counts = self.counts.get(stream, {}) if start.live else {}
        return scene

    def end_stream(self, stream: str, end: StreamEnd) -> None:
        scene: Scene | None = self.ctx.streams.state(stream)
        if scene is not None and end.restarted:
            self.counts[stream] = {n: dict(c.counts) for n, c in scene.counters.items()} or scene.carried_counts
        elif not end.restarted:
            self.counts.pop(stream, None)

    def tick(self) -> list[Frame]:
        """Live: an edit of the analytics in the config file (by hand, or by the web view's editor) is taken
        within a second, without a restart."""
        if self._config.changed():
            assert self.ctx.config_path is not None
            self.reload(self.ctx.config_path)
        return []

    def reload(self, path: Path) -> bool:
        """Takes this stage's options from the config file at `path` if they are valid; else keeps the current ones."""
        from pydantic import ValidationError

        from pipeline.config import ConfigError, load_config

        try:
            cfg = load_config(path, only_stage=self.ctx.name)
            opts = AnalyzeOptions.model_validate(cfg.stage(self.ctx.name).options)
        except (ConfigError, ValidationError, KeyError) as exc:
            self.log.error("%s changed but its analytics are not valid; the analytics go on as they were: %s", path, exc)
            return False
        changed = sorted(sid for sid in set(opts.streams) | set(self.opts.streams) if opts.streams.get(sid) != self.opts.streams.get(sid))
        self.opts = opts
        for sid in changed:
            if sid not in self.ctx.streams:
                continue  # begins with the new options when it starts
            scene: Scene | None = self.ctx.streams.state(sid)
            if scene is not None and sid in opts.streams:
                scene.reconfigure(opts.streams[sid])
            else:  # analytics added to a running stream, or taken away
                self.ctx.streams.slots[sid].state = self.start_stream(sid, self.ctx.streams.start(sid)) if sid in opts.streams else None
        if changed:
            self.log.info("analytics reloaded from %s: streams %s", path, ", ".join(changed))
        return True

    def _alert_epoch(self, stream: str) -> int:
        """0 for files: a replay of the same file raises the same ids, as it should. A live source numbers its
        frames from 0 at every start, so its ids take the epoch."""
        start = self.ctx.streams.start(stream)
        return start.epoch if start.live else 0

    def process(self, batch: list[Frame]) -> list[Frame]:
        for frame in batch:
            scene: Scene | None = self.ctx.streams.state(frame.stream)
            if scene is None:
                continue
            if frame.seq <= self.last_seq.get(frame.stream, -1):
                continue  # seen already (a batch retried after an error): it keeps what it has
            self.last_seq[frame.stream] = frame.seq
            self._analyse(scene, frame)
        return batch

    def _analyse(self, scene: Scene, frame: Frame) -> None:
        suppressed = [r.suppressed for r in scene.rules]
        res = scene.update(frame.seq, frame.pts, frame.width, frame.height, frame.detections)
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
        frame.analytics = Analytics(
            crossings=res.crossings,
            counts={n: dict(c.counts) for n, c in scene.counters.items()} if scene.counters else None,
            occupancy=res.occupancy if scene.zones else None,
            alerts=[self._alert(scene, frame, f) for f in res.firings],
        )
        for f in res.firings:
            self.m_firings.labels(name, stream, f.rule, "raised").inc()
        for a in frame.analytics.alerts:  # rare events: each one said where it was made, and by what
            self.log.info("fired %s: %s frame %d, %s", a.id, stream, frame.seq, a.message)

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
            id=alert_id(frame.stream, self._alert_epoch(frame.stream), f.rule, f.track_ids, frame.seq),
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
            labels=scene.labels_of(frame.detections, f.track_ids),
            frame_size=[frame.width, frame.height],
            event=f.event,
        )

