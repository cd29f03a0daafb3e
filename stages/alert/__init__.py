"""alert: the durable outbox and the sinks that deliver alerts (stage in stages.alert.stage)."""
