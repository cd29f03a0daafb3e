"""What every alert sink is: a named receiver that either takes an alert or says why not.

A sink delivers one alert at a time, from its own delivery thread; it is never called from two
threads at once. Delivery is at least once: a sink may see an alert again (a lost acknowledgement,
a restart before the outbox recorded the delivery), so receivers recognise repeats by `alert.id`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel

from pipeline.alert import Alert


class DeliveryError(Exception):
    """A delivery that did not happen.

    `retryable` False means the receiver refused this alert for good (retrying would never help):
    the outbox marks it rejected. `reason` is a short label for the failure metrics ("connect",
    "timeout", "http_5xx", "http_4xx", "broker", ...). `retry_after_s` is the receiver's own
    hint (HTTP Retry-After), a lower bound on the next attempt.
    """

    def __init__(self, message: str, *, retryable: bool = True, reason: str = "error", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reason = reason
        self.retry_after_s = retry_after_s


class Sink(ABC):
    """One configured destination; `name` is its key in the outbox and its metric label.

    A sink kind sets `type` (what the config's `type` names) and `Options` (its pydantic options, with a
    `type: Literal[...]` field), in a module of its own in stages/alert/sinks/."""

    type: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]]
    name: str

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def deliver(self, alert: Alert) -> None:
        """Hand the alert over; return only once the receiver has it (as far as the protocol can tell).
        Raises DeliveryError."""

    def close(self) -> None:
        """Release connections and files; the sink is not used again."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def alert_json(alert: Alert, snapshot: bool, extra: dict[str, Any] | None = None) -> bytes:
    """The alert as compact UTF-8 JSON; an alert that JSON cannot express is rejected, not retried."""
    data = alert.to_json(snapshot=snapshot)
    if extra:
        data.update(extra)
    try:
        # allow_nan=False: NaN/Infinity are not JSON, and strict receivers would refuse the whole body.
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise DeliveryError(f"alert {alert.id} cannot be encoded as JSON: {exc}", retryable=False, reason="encode") from exc
