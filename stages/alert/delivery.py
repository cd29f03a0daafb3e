"""Delivery workers: one thread per sink, taking its pending alerts from the outbox in raise order.

A retryable failure puts the alert back with an exponential, jittered delay and ends the round:
the alerts behind it wait (head of line), so a sink's alerts arrive in order and a receiver that
is down is asked once per delay, not once per alert. A refusal (not retryable) marks the alert
rejected and the round goes on. Nothing a sink raises stops the thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.alert import Alert
from pipeline.metrics import PREFIX
from stages.alert.outbox import Outbox
from stages.alert.sink import DeliveryError, Sink

# Raise to delivery: milliseconds when all is well, up to an hour while a receiver is down.
_DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class DeliveryMetrics:
    """The alert delivery metrics of one stage, labelled by sink."""

    def __init__(self, registry: CollectorRegistry, stage: str) -> None:
        self.stage = stage
        r = registry
        self.deliveries = Counter(f"{PREFIX}_alert_deliveries", "Alerts delivered, per sink.", ["stage", "sink"], registry=r)
        self.failures = Counter(
            f"{PREFIX}_alert_delivery_failures", "Failed delivery attempts (each one), by reason.", ["stage", "sink", "reason"], registry=r
        )
        self.retries = Counter(f"{PREFIX}_alert_delivery_retries", "Delivery attempts after an alert's first.", ["stage", "sink"], registry=r)
        self.rejected = Counter(f"{PREFIX}_alert_rejected", "Alerts a sink refused for good; kept in the outbox, not retried.", ["stage", "sink"], registry=r)
        self.depth = Gauge(f"{PREFIX}_outbox_depth", "Alerts waiting in the outbox for delivery, per sink.", ["stage", "sink"], registry=r)
        self.latency = Histogram(
            f"{PREFIX}_alert_delivery_seconds", "Time from raise (outbox commit) to delivery.", ["stage", "sink"], buckets=_DELIVERY_BUCKETS, registry=r
        )

    def add_sink(self, sink: str) -> None:
        """Create the sink's series at zero, so dashboards and alert rules see them before the first alert."""
        for metric in (self.deliveries, self.retries, self.rejected, self.depth, self.latency):
            metric.labels(self.stage, sink)


class DeliveryWorker(threading.Thread):
    POLL_S = 0.5  # longest wait between looks at the outbox, woken or not
    BATCH = 50  # alerts taken from the outbox per round

    def __init__(
        self,
        outbox: Outbox,
        sink: Sink,
        metrics: DeliveryMetrics,
        stage: str,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 60.0,
        log: logging.Logger | None = None,
    ) -> None:
        super().__init__(name=f"alert-{sink.name}", daemon=True)
        if retry_initial_s <= 0 or retry_max_s < retry_initial_s:
            raise ValueError("need 0 < retry_initial_s <= retry_max_s")
        self.outbox = outbox
        self.sink = sink
        self.metrics = metrics
        self.stage = stage
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.log = log or logging.getLogger(f"vidpipe.{stage}.{sink.name}")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._streak = 0  # failed attempts in a row
        self._traced = False  # a traceback of an unexpected error already logged in this streak
        self._outbox_failing = False
        metrics.add_sink(sink.name)

    def wake(self) -> None:
        """Look at the outbox now (the stage calls this after adding alerts)."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> bool:
        """End the thread once the alert in hand is done; True when it ended within `timeout`."""
        self._stopping.set()
        self._wake.set()
        if self.ident is not None:
            self.join(timeout)
        return not self.is_alive()

    def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before the round: a wake() during it is not lost
            wait = self.POLL_S
            try:
                if self.run_once():
                    continue  # a full batch went out: more may be due
                wait = self._wait_s()
                if self._outbox_failing:
                    self.log.info("sink %s: outbox readable again", self.sink.name)
                    self._outbox_failing = False
            except Exception:  # the outbox itself failed (disk full, I/O error): wait, try again
                if not self._outbox_failing:
                    self.log.exception("sink %s: outbox failed; trying again every %.1fs", self.sink.name, self.POLL_S)
                    self._outbox_failing = True
            self._wake.wait(wait)

    def _wait_s(self) -> float:
        due = self.outbox.next_due(self.sink.name)
        if due is None:
            return self.POLL_S
        return min(self.POLL_S, max(0.01, due - time.time()))

    def run_once(self) -> bool:
        """One round: deliver what is due, in order, until the first retryable failure. True when a
        full batch went out (more may be due)."""
        name = self.sink.name
        batch = self.outbox.due(name, time.time(), self.BATCH)
        try:
            for alert, attempts in batch:
                if self._stopping.is_set() or not self._attempt(alert, attempts):
                    return False
            return len(batch) == self.BATCH
        finally:
            self.metrics.depth.labels(self.stage, name).set(self.outbox.depth(name))

    def _attempt(self, alert: Alert, attempts: int) -> bool:
        """Deliver one alert and record the outcome; False ends the round."""
        name, m = self.sink.name, self.metrics
        if attempts > 0:
            m.retries.labels(self.stage, name).inc()
        try:
            self.sink.deliver(alert)
        except DeliveryError as exc:
            m.failures.labels(self.stage, name, exc.reason).inc()
            if not exc.retryable:
                self.outbox.mark_rejected(name, alert.id, str(exc))
                m.rejected.labels(self.stage, name).inc()
                self.log.error("sink %s refused alert %s (%s/%s), not retried: %s", name, alert.id, alert.stream, alert.rule, exc)
                return True
            self._failed(alert, attempts, exc.reason, str(exc), exc.retry_after_s, trace=False)
            return False
        except Exception as exc:  # noqa: BLE001 - a bug in a sink must not end delivery
            m.failures.labels(self.stage, name, "error").inc()
            self._failed(alert, attempts, "error", f"{type(exc).__name__}: {exc}", None, trace=not self._traced)
            self._traced = True
            return False
        now = time.time()
        self.outbox.mark_delivered(name, alert.id, now)
        m.deliveries.labels(self.stage, name).inc()
        if alert.raised_ts is not None:
            m.latency.labels(self.stage, name).observe(max(0.0, now - alert.raised_ts))
        if self._streak:
            self.log.info("sink %s: delivering again after %d failed attempt(s)", name, self._streak)
        self._streak, self._traced = 0, False
        return True

    def backoff_s(self, attempts: int) -> float:
        """Delay after the failure of attempt number `attempts` + 1: exponential, capped, ±20% jitter
        (so sinks and restarted stages do not retry in lockstep)."""
        base = min(self.retry_max_s, self.retry_initial_s * 2.0 ** min(attempts, 60))
        return base * random.uniform(0.8, 1.2)

    def _failed(self, alert: Alert, attempts: int, reason: str, error: str, retry_after_s: float | None, trace: bool) -> None:
        delay = self.backoff_s(attempts)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.retry_max_s))  # the receiver's hint, within our cap
        self.outbox.mark_failed(self.sink.name, alert.id, error, time.time() + delay)
        self._streak += 1
        # The first failure of a streak, then every 10th, 100th, ...: an outage is visible, not a flood.
        streak = self._streak
        loud = trace or streak == 1 or (streak >= 10 and str(streak).strip("0") == "1")
        self.log.log(
            logging.WARNING if loud else logging.DEBUG,
            "sink %s: delivery of alert %s failed (%s, attempt %d, %d in a row): %s; retrying in %.1fs, alerts wait in the outbox",
            self.sink.name, alert.id, reason, attempts + 1, streak, error, delay,
            exc_info=trace,
        )
