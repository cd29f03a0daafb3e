"""The ZeroMQ PUB sink: each alert as a two-part message [b"<stream>/<rule>", JSON].

PUB is fire-and-forget by design: a subscriber that is not connected when an alert goes out
misses it, and a slow one past its high-water mark loses alerts. That is the pattern (live
dashboards, other processes on the host), so here "delivered" means handed to the socket; use
the webhook, MQTT or jsonl sink where every alert must arrive. Subscribers filter by topic
prefix, e.g. b"cam1/".
"""

from __future__ import annotations

import os
from typing import Literal

import zmq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.alert import Alert
from pipeline.transport import PUB, is_loopback, parse_endpoint
from stages.alert.sink import DeliveryError, Sink, alert_json

_HWM = 1000
_LINGER_MS = 500  # on close, a moment to flush what is queued to connected subscribers


class ZmqPubOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["zmq_pub"] = Field(description="A ZeroMQ PUB socket: fire-and-forget to whoever subscribes.")
    endpoint: str = Field(
        "tcp://127.0.0.1:5590", description="PUB endpoint; binds unless prefixed '>' (connect), as stage endpoints do."
    )
    include_snapshot: bool = Field(True, description="Send the JPEG snapshot, base64, as `snapshot_jpeg`.")
    allow_insecure: bool = Field(
        False, description="Let the endpoint bind tcp:// where other hosts can reach it: anyone who connects gets every alert and snapshot."
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parse_endpoint(v, "pub")
        return v

    @model_validator(mode="after")
    def _reachable(self) -> ZmqPubOptions:
        bind, addr = parse_endpoint(self.endpoint, "pub")
        if bind and addr.startswith("tcp://") and not is_loopback(addr) and not self.allow_insecure:
            raise ValueError(f"endpoint {self.endpoint} binds where other hosts can reach it, and any of them would get every alert "
                             "and snapshot: bind 127.0.0.1 (subscribers on this host), or set allow_insecure: true")  # fmt: skip
        return self


class ZmqPubSink(Sink):
    type = "zmq_pub"
    Options = ZmqPubOptions

    def __init__(self, name: str, options: ZmqPubOptions, ctx: zmq.Context | None = None) -> None:
        super().__init__(name)
        self.options = options
        self._ctx = ctx or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._ipc_path: str | None = None
        # Bind now if we can, so subscribers can join before the first alert; if the address
        # is taken, the first delivery tries again.
        try:
            self._open()
        except DeliveryError:
            pass

    def _open(self) -> zmq.Socket:
        if self._sock is None:
            bind, addr = parse_endpoint(self.options.endpoint, PUB)
            sock = self._ctx.socket(zmq.PUB)
            sock.setsockopt(zmq.LINGER, _LINGER_MS)
            sock.setsockopt(zmq.SNDHWM, _HWM)
            try:
                if bind and addr.startswith("ipc://"):
                    os.makedirs(os.path.dirname(addr[len("ipc://") :]) or ".", exist_ok=True)
                if bind:
                    sock.bind(addr)
                else:
                    sock.connect(addr)
            except (zmq.ZMQError, OSError) as exc:
                sock.close(0)
                raise DeliveryError(f"cannot {'bind' if bind else 'connect'} {self.options.endpoint}: {exc}", reason="bind") from exc
            self._sock = sock
            self._ipc_path = addr[len("ipc://") :] if bind and addr.startswith("ipc://") else None
        return self._sock

    def deliver(self, alert: Alert) -> None:
        body = alert_json(alert, self.options.include_snapshot)
        sock = self._open()
        try:
            # PUB never blocks: past the high-water mark a subscriber's copy is dropped.
            sock.send_multipart([f"{alert.stream}/{alert.rule}".encode(), body], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            raise DeliveryError(f"{self.options.endpoint}: send failed: {exc}", reason="send") from exc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._ipc_path:
            # ZeroMQ leaves a bound ipc socket file behind.
            try:
                os.unlink(self._ipc_path)
            except FileNotFoundError:
                pass
            self._ipc_path = None
