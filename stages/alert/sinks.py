"""The sinks an alert stage can deliver to: their options, as configured, and the factory.

A sink's options name its `type`; the rest is checked here, at config load, so a bad URL or topic
stops the pipeline before it starts. The sink modules are imported only when a sink is built,
so reading a config does not load paho-mqtt or open sockets.
"""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from pipeline.transport import parse_endpoint
from stages.alert.sink import Sink

# Fields of the alert an MQTT topic template may use.
TOPIC_FIELDS = ("stream", "rule", "kind", "severity")
# Set by the sink itself; a configured header of the same name would contradict it.
_RESERVED_HEADERS = {"content-type", "content-length", "idempotency-key", "host"}


class WebhookOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook"] = Field(description="An HTTP(S) POST of the alert as JSON.")
    url: str = Field(description="http:// or https:// URL the alert is POSTed to; redirects are not followed.")
    timeout_s: float = Field(5.0, gt=0, le=300, description="Longest connecting, sending or the answer may stall (a socket timeout).")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers (e.g. Authorization); Content-Type and Idempotency-Key are set by the sink."
    )
    include_snapshot: bool = Field(True, description="Send the JPEG snapshot, base64, as `snapshot_jpeg`.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not key or any(c in key for c in " :\r\n\t"):
                raise ValueError(f"header name {key!r} is not valid")
            if key.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {key!r} is set by the sink")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {key!r}: value must be one line")
        return v


class MqttOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["mqtt"] = Field(description="A publish to an MQTT broker (paho-mqtt, MQTT 3.1.1).")
    host: str = Field(description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    topic: str = Field(
        "vidpipe/alerts/{stream}/{rule}",
        description="Topic template; may use {stream}, {rule}, {kind} and {severity} ('/', '+', '#' in values become '_').",
    )
    qos: Literal[0, 1, 2] = Field(1, description="MQTT QoS; with 1 or 2 an alert counts as delivered only once the broker acknowledged it.")
    client_id: str | None = Field(None, description="MQTT client id; default vidpipe-<sink name>-<host>-<pid>.")
    username: str | None = Field(None, description="User name, if the broker asks for one.")
    password: str | None = Field(None, description="Password for `username`.")
    keepalive: int = Field(30, ge=5, le=3600, description="Seconds between keep-alive pings.")
    include_snapshot: bool = Field(True, description="Send the JPEG snapshot, base64, as `snapshot_jpeg`.")
    connect_timeout_s: float = Field(5.0, gt=0, le=300, description="Longest a connection to the broker may take, CONNACK included.")
    publish_timeout_s: float = Field(5.0, gt=0, le=300, description="Longest to wait for the broker's acknowledgement of one alert.")

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        try:
            names = [name for _, name, spec, conv in string.Formatter().parse(v) if name is not None]
        except ValueError as exc:
            raise ValueError(f"bad template: {exc}") from None
        unknown = sorted({n for n in names if n not in TOPIC_FIELDS})
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}: use {', '.join('{' + f + '}' for f in TOPIC_FIELDS)}")
        if not v or "+" in v or "#" in v:
            raise ValueError("must not be empty or contain the wildcards + and #")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> MqttOptions:
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        return self


class ZmqPubOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["zmq_pub"] = Field(description="A ZeroMQ PUB socket: fire-and-forget to whoever subscribes.")
    endpoint: str = Field(
        "tcp://127.0.0.1:5590", description="PUB endpoint; binds unless prefixed '>' (connect), as stage endpoints do."
    )
    include_snapshot: bool = Field(True, description="Send the JPEG snapshot, base64, as `snapshot_jpeg`.")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parse_endpoint(v, "pub")
        return v


class JsonlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["jsonl"] = Field(description="One JSON line per alert, appended to a file.")
    path: str = Field(description="The file (created with its folder if missing).")
    snapshots_dir: str | None = Field(
        None, description="Write snapshots to this folder as <id>.jpg and put `snapshot_path` in the line instead of base64."
    )
    fsync: bool = Field(True, description="fsync after every line, so an alert counted as delivered survives a power cut.")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


SinkConfig = Annotated[WebhookOptions | MqttOptions | ZmqPubOptions | JsonlOptions, Field(discriminator="type")]
SINK_TYPES: tuple[str, ...] = ("webhook", "mqtt", "zmq_pub", "jsonl")
_ADAPTER: TypeAdapter[Any] = TypeAdapter(SinkConfig)


def parse_sink_config(data: Any) -> WebhookOptions | MqttOptions | ZmqPubOptions | JsonlOptions:
    """Validate one sink's options (a mapping with `type`); raises pydantic.ValidationError."""
    return _ADAPTER.validate_python(data)


def build_sink(name: str, config: WebhookOptions | MqttOptions | ZmqPubOptions | JsonlOptions | dict[str, Any]) -> Sink:
    """The sink for validated options (or a mapping, validated here). Nothing here fails for an unreachable
    receiver: connections and files open on the first delivery (a zmq_pub sink tries to bind at once, so
    subscribers can join before the first alert), and one sink that is down does not stop the others."""
    opts = parse_sink_config(config) if isinstance(config, dict) else config
    if isinstance(opts, WebhookOptions):
        from stages.alert.webhook import WebhookSink

        return WebhookSink(name, opts)
    if isinstance(opts, MqttOptions):
        from stages.alert.mqtt import MqttSink

        return MqttSink(name, opts)
    if isinstance(opts, ZmqPubOptions):
        from stages.alert.zmq_pub import ZmqPubSink

        return ZmqPubSink(name, opts)
    if isinstance(opts, JsonlOptions):
        from stages.alert.jsonl import JsonlSink

        return JsonlSink(name, opts)
    raise TypeError(f"sink {name!r}: unknown options {type(opts).__name__}")
