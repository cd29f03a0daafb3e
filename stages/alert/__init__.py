"""alert: the durable outbox and the sinks that deliver alerts (stage in stages.alert.stage)."""

from stages.alert.stage import AlertStage

__all__ = ["AlertStage"]
