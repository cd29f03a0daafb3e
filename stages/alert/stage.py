"""The alert stage: writes every alert it receives to the durable outbox, then delivers it to each sink.

An alert counts as raised once the outbox transaction that holds it has committed; from then on a sink
that is down only delays it, and a crash of this stage (even kill -9) loses nothing: the next start
delivers what is still pending. A repeat of an alert id (a replay of the same file, a batch retried)
is not raised twice. Frames pass on unchanged, except that their alerts lose the snapshot bytes.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.alert import Alert
from pipeline.metrics import PREFIX
from pipeline.protocol import Frame
from pipeline.retention import Every, RetentionOptions
from pipeline.stage import Stage, StageContext, StageFailure
from stages.alert.delivery import DeliveryMetrics, DeliveryWorker
from stages.alert.outbox import Outbox, OutboxReader, Recovery, is_corruption
from stages.alert.sinks import SinkConfig, build_sink

# Capture to raise: tens of milliseconds in a healthy pipeline, seconds when a stage lags.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class AlertOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    outbox: str = Field("alerts/outbox.db", description="SQLite file of the durable outbox (WAL mode); one alert process per file. Relative: to the working directory, in a replay to --out.")
    sinks: dict[str, SinkConfig] = Field(default_factory=dict, description="Where alerts go, by sink name; see the sink types below.")
    retry_initial_s: float = Field(0.5, gt=0, description="First wait before retrying a failed delivery (then doubled, with jitter).")
    retry_max_s: float = Field(60.0, gt=0, description="Longest wait between delivery attempts.")
    drain_s: float = Field(10.0, ge=0, description="On the way out, how long to keep delivering; what is left waits in the outbox.")
    retention: RetentionOptions = Field(
        default_factory=lambda: RetentionOptions(max_age_days=30, max_total_mb=1024),
        description="What the outbox keeps of alerts every sink has taken (never one still pending): by age, then the oldest over the size.",
    )
    disk_wait_s: float = Field(
        30.0, ge=0, description="Replay: how long alerts wait for an outbox that cannot be written (a full disk) before the stage fails; "
        "live mode waits as long as it takes (/healthz says why), dropping none.",
    )

    @field_validator("sinks")
    @classmethod
    def _names(cls, v: dict[str, SinkConfig]) -> dict[str, SinkConfig]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ValueError(f"sink name {name!r}: 1-64 letters, digits, '_', '.' or '-' (it is a metric label)")
        return v


class AlertStage(Stage):
    kind = "alert"
    Options = AlertOptions

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        opts: AlertOptions = self.options
        self.opts = opts
        path = Path(opts.outbox)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.outbox = Outbox(path, list(opts.sinks))
        except (sqlite3.OperationalError, OSError) as exc:  # a full disk, a folder it may not write: say which file
            raise StageFailure(f"cannot open the outbox {path}: {exc}") from None
        r = ctx.metrics.registry
        self.m_recoveries = Counter(f"{PREFIX}_outbox_recoveries", "Damaged outbox files moved aside for a fresh one.", ["stage"], registry=r)
        self.m_lost = Counter(f"{PREFIX}_outbox_alerts_lost", "Alerts of a damaged outbox that could not be read back (not delivered).", ["stage"], registry=r)
        self.m_requeued = Counter(f"{PREFIX}_outbox_alerts_requeued", "Pending alerts read back from a damaged outbox and queued again.", ["stage"], registry=r)
        for rec in self.outbox.recoveries:
            self._recovered(rec)
        self.m_pruned = Counter(f"{PREFIX}_outbox_pruned", "Delivered alerts forgotten by retention, by the limit.", ["stage", "reason"], registry=r)
        self.m_bytes = Gauge(f"{PREFIX}_outbox_bytes", "Bytes the outbox's alerts take (after retention).", ["stage"], registry=r)
        self._retention = Every(opts.retention.check_every_s)
        self.m_alerts = Counter(f"{PREFIX}_alerts", "Alerts raised (written to the outbox), by stream, rule and severity.", ["stage", "stream", "rule", "severity"], registry=r)
        self.m_repeats = Counter(f"{PREFIX}_alert_repeats", "Alerts received again with an id already in the outbox.", ["stage", "stream"], registry=r)
        self.m_latency = Histogram(f"{PREFIX}_alert_latency_seconds", "Raise time minus capture time of the frame that fired.", ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.delivery = DeliveryMetrics(r, ctx.name)
        self.sinks = [build_sink(name, cfg) for name, cfg in opts.sinks.items()]
        self.workers = [
            DeliveryWorker(self.outbox, s, self.delivery, ctx.name, opts.retry_initial_s, opts.retry_max_s, self.log) for s in self.sinks
        ]
        pending = self.outbox.depths()
        if any(pending.values()):
            self.log.info("outbox %s: pending from before: %s", path, ", ".join(f"{k} {v}" for k, v in pending.items() if v))
        for w in self.workers:
            w.start()  # delivers what an earlier run left pending, at once

    def process(self, batch: list[Frame]) -> list[Frame]:
        received: list[Alert] = []
        for frame in batch:
            if frame.analytics is not None:
                received += frame.analytics.alerts
        if received:
            new = self._add(received)
            for a in new:
                self.m_alerts.labels(self.ctx.name, a.stream, a.rule, a.severity).inc()
                self.m_latency.labels(self.ctx.name).observe(max(0.0, (a.raised_ts or 0.0) - a.capture_ts))
                self.log.info("raised %s [%s] %s", a.id, a.severity, a.message)
            repeats = len(received) - len(new)
            if repeats:
                self.m_repeats.labels(self.ctx.name, received[0].stream).inc(repeats)
            for w in self.workers:
                w.wake()
            for frame in batch:  # downstream gets the alerts, not the JPEG bytes again
                if frame.analytics is not None and frame.analytics.alerts:
                    frame.analytics.alerts = [replace(a, snapshot=None) for a in frame.analytics.alerts]
        return batch

    def tick(self) -> list[Frame]:
        now = time.time()
        if self.opts.retention.active and self._retention.due(now):
            self.apply_retention(now)
        return []

    def apply_retention(self, now: float) -> None:
        """Forgets delivered alerts past the age limit, then the oldest delivered ones over the size limit."""
        r = self.opts.retention
        try:
            n = self.outbox.prune(now - r.max_age_days * 86_400) if r.max_age_days is not None else 0
            m = self.outbox.prune_to(int(r.max_total_mb * 2**20)) if r.max_total_mb is not None else 0
        except sqlite3.DatabaseError as exc:  # a busy or full disk: the next round tries again
            self.log.warning("outbox retention failed: %s", exc)
            return
        self.m_pruned.labels(self.ctx.name, "age").inc(n)
        self.m_pruned.labels(self.ctx.name, "size").inc(m)
        self.m_bytes.labels(self.ctx.name).set(self.outbox.size())

    def _add(self, alerts: list[Alert]) -> list[Alert]:
        """Commit the alerts. A damaged outbox is moved aside for a fresh one; a full disk is waited out (live:
        an alert is never dropped; replay: for `disk_wait_s`, then the stage fails, and the run with it)."""
        waited = 0.0
        while True:
            try:
                added = self.outbox.add(alerts, time.time())
                if self.ctx.problem is not None:
                    self.log.info("outbox %s can be written again", self.outbox.path)
                    self.ctx.problem = None
                return added
            except sqlite3.DatabaseError as exc:
                if is_corruption(exc):
                    self._recovered(self.outbox.recover(exc))
                    continue
                problem = f"outbox {self.outbox.path}: {exc}"
                if self.ctx.stopping or (self.ctx.mode == "replay" and waited >= self.opts.disk_wait_s):
                    raise StageFailure(f"{problem}: {len(alerts)} alerts not raised") from None
                if self.ctx.problem is None:
                    self.log.error("%s; holding %d alerts until it can be written", problem, len(alerts))
                self.ctx.problem = problem
                self.ctx.metrics.beat()  # waiting on the disk, not hung
                time.sleep(1.0)
                waited += 1.0

    def _recovered(self, rec: Recovery) -> None:
        self.m_recoveries.labels(self.ctx.name).inc()
        self.m_requeued.labels(self.ctx.name).inc(rec.requeued)
        self.m_lost.labels(self.ctx.name).inc(rec.lost)
        self.log.error("outbox %s was damaged (%s): moved to %s; %d pending alerts queued again, %d could not be read",
                       self.outbox.path, rec.error, rec.moved_to, rec.requeued, rec.lost)  # fmt: skip

    def close(self) -> None:
        deadline = time.monotonic() + self.opts.drain_s
        while any(self.outbox.depth(s.name) for s in self.sinks) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = {k: v for k, v in self.outbox.depths().items() if v}
        if left:
            self.log.warning("stopping with alerts still pending (delivered at the next start): %s", left)
        for w in self.workers:
            w.stop(timeout=10)
        for s in self.sinks:
            try:
                s.close()
            except Exception:
                self.log.exception("closing sink %s failed", s.name)
        self.outbox.close()

    # -- vidpipe replay -----------------------------------------------------------------------

    @classmethod
    def replay_options(cls, options: dict[str, Any], out_dir: str) -> None:
        """A replay's alert files live under --out: the outbox and the file sinks' paths, where relative (or not
        given), are taken relative to the results folder instead of the working directory; absolute ones stay."""

        def under(path: Any) -> Any:
            return str(Path(out_dir) / path) if isinstance(path, str) and not os.path.isabs(path) else path

        options["outbox"] = under(options.get("outbox", AlertOptions.model_fields["outbox"].default))
        sinks = options.get("sinks")
        if isinstance(sinks, dict):
            options["sinks"] = {
                name: ({**sink, **{k: under(sink[k]) for k in ("path", "snapshots_dir") if k in sink}} if isinstance(sink, dict) and sink.get("type") == "jsonl" else sink)
                for name, sink in sinks.items()
            }

    @classmethod
    def replay_report(cls, options: Any, elapsed: float) -> int | None:
        """What the replay wrote of alerts: how many the outbox holds, and the file sinks' files."""
        outbox = OutboxReader(options.outbox)
        total, _ = outbox.history(limit=1)
        print(f"alerts: {total} in the outbox {options.outbox}")
        for name, sink in options.sinks.items():
            path = getattr(sink, "path", None)
            if getattr(sink, "type", None) == "jsonl" and path is not None:
                snaps = getattr(sink, "snapshots_dir", None)
                n_snaps = len(list(Path(snaps).glob("*.jpg"))) if snaps and Path(snaps).is_dir() else 0
                print(f"alerts: sink {name}: {path}" + (f", {n_snaps} snapshots in {snaps}" if snaps else ""))
        return None
