"""The MQTT sink: a publish to a broker, with paho-mqtt 2.x.

With QoS 1 or 2 an alert counts as delivered only once the broker acknowledged it (PUBACK /
PUBCOMP); with QoS 0, once it was written to the connection. The connection opens on the first
alert and again after a loss; paho's own reconnecting is off, and a connection that failed is
dropped with whatever paho still queued, so an alert is never published later behind the
outbox's back (the outbox retries it itself). A lost acknowledgement means the broker may see
an alert twice: receivers recognise the repeat by its `id`.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import string
import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.alert import Alert
from pipeline.paths import InputPath
from pipeline.secrets import Secret

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

from stages.alert.sink import DeliveryError, Sink, alert_json

_TOPIC_UNSAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})


class _Connection:
    """One paho client with its network thread, from connect to drop."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.connack = threading.Event()
        self.lost = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: mqtt.ReasonCode, properties: object) -> None:
        self.reason = reason_code
        self.connack.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object, properties: object) -> None:
        self.lost.set()
        self.connack.set()  # a broker that hangs up before CONNACK: stop waiting for it

    def drop(self) -> None:
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001, S110 - dropping a broken connection must not raise
            pass
        if not self.lost.wait(1.0):
            # A broker that does not close its end would keep paho's loop (and loop_stop) waiting.
            sock = self.client.socket()
            if isinstance(sock, socket.socket):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        try:
            self.client.loop_stop()
        except AttributeError:
            pass  # paho clears its thread handle as the thread ends: nothing left to join


TOPIC_FIELDS = ("stream", "rule", "kind", "severity")  # fields of the alert a topic template may use


class MqttTls(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: InputPath | None = Field(None, description="PEM file of the CA that signed the broker's certificate; default: the system's CAs.")
    cert_file: InputPath | None = Field(None, description="PEM client certificate, for a broker that authenticates clients by certificate.")
    key_file: InputPath | None = Field(None, description="PEM private key of `cert_file` (default: in `cert_file`).")
    key_password: Secret | None = Field(None, description="Password of an encrypted `key_file` (secret: `${NAME}` or `file:PATH`).")
    verify_hostname: bool = Field(True, description="Check that the broker's certificate names `host`; turn off only for a broker addressed by an IP its certificate lacks.")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, v: str | None) -> str | None:
        if v is not None and not os.access(os.path.expanduser(v), os.R_OK):
            raise ValueError(f"cannot read {v!r}")
        return v

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.key_file is not None or self.key_password is not None) and self.cert_file is None:
            raise ValueError("key_file and key_password belong to a client certificate: set cert_file too")
        return self

    def context(self) -> ssl.SSLContext:
        """The TLS settings as an SSLContext (ValueError naming the file that does not load)."""
        try:
            ctx = ssl.create_default_context(cafile=os.path.expanduser(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tls.ca_file {self.ca_file!r}: {exc}") from None
        ctx.check_hostname = self.verify_hostname
        if self.cert_file is not None:
            try:
                ctx.load_cert_chain(
                    os.path.expanduser(self.cert_file),
                    os.path.expanduser(self.key_file) if self.key_file else None,
                    self.key_password.get_secret_value() if self.key_password else None,
                )
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"tls.cert_file {self.cert_file!r}: {exc}") from None
        return ctx


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
    password: Secret | None = Field(None, description="Password for `username` (secret: `${NAME}` or `file:PATH`); use it over `tls`, or it crosses the network in clear.")
    tls: MqttTls | None = Field(None, description="Connect over TLS (usually port 8883): the broker's CA, and a client certificate if it asks for one.")
    keepalive: int = Field(30, ge=5, le=3600, description="Seconds between keep-alive pings.")
    include_snapshot: bool = Field(True, description="Send the JPEG snapshot, base64, as `snapshot_jpeg`.")
    availability_topic: str | None = Field(
        "vidpipe/{sink}/availability",
        description="Retained `online` once connected, `offline` when the sink closes or (the broker's last will) when its connection "
        "dies; {sink} is the sink's name. null: none.",
    )
    home_assistant: bool = Field(
        False, description="Announce each stream's rules to Home Assistant (MQTT discovery: one `event` entity per stream and rule, "
        "retained, with the availability topic) as their first alert goes out.",
    )
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix.")
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

    @field_validator("availability_topic", "discovery_prefix")
    @classmethod
    def _plain_topic(cls, v: str | None) -> str | None:
        if v is not None:
            if not v or "+" in v or "#" in v:
                raise ValueError("must not be empty or contain the wildcards + and #")
            try:
                v.format(sink="x")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"may use {{sink}} only ({exc})") from None
        return v

    @model_validator(mode="after")
    def _credentials(self) -> MqttOptions:
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        return self


class MqttSink(Sink):
    type = "mqtt"
    Options = MqttOptions

    def __init__(self, name: str, options: MqttOptions) -> None:
        super().__init__(name)
        self.options = options
        self.client_id = options.client_id or f"vidpipe-{name}-{socket.gethostname()}-{os.getpid()}"
        self._conn: _Connection | None = None
        self.availability = options.availability_topic.format(sink=name) if options.availability_topic else None
        self._announced: set[tuple[str, str]] = set()  # (stream, rule) announced to Home Assistant on this connection

    def discovery(self, alert: Alert) -> tuple[str, dict[str, object]]:
        """Home Assistant's discovery topic and config of the event entity of the alert's stream and rule."""
        uid = f"vidpipe_{self.name}_{alert.stream}_{alert.rule}".translate(_TOPIC_UNSAFE).replace("-", "_").replace(".", "_")
        config: dict[str, object] = {
            "name": f"{alert.stream} {alert.rule}",
            "unique_id": uid,
            "state_topic": self.topic(alert),
            "event_types": ["new", "update", "end"],
            # The alert JSON says `event`; Home Assistant reads `event_type` (the other keys become attributes).
            "value_template": "{{ {'event_type': value_json.event, 'message': value_json.message, 'severity': value_json.severity, "
            "'labels': value_json.labels, 'id': value_json.id} | to_json }}",
            "device": {"identifiers": [f"vidpipe_{alert.stream}"], "name": f"vidpipe {alert.stream}", "manufacturer": "vidpipe"},
        }
        if self.availability is not None:
            config["availability_topic"] = self.availability
        return f"{self.options.discovery_prefix}/event/{uid}/config", config

    def topic(self, alert: Alert) -> str:
        fields = {"stream": alert.stream, "rule": alert.rule, "kind": alert.kind, "severity": alert.severity}
        return self.options.topic.format(**{k: str(v).translate(_TOPIC_UNSAFE) for k, v in fields.items()})

    def _connect(self) -> _Connection:
        import paho.mqtt.client as mqtt  # here: reading a config does not load paho
        from paho.mqtt.enums import CallbackAPIVersion

        o = self.options
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        client.connect_timeout = o.connect_timeout_s
        if o.username is not None:
            client.username_pw_set(o.username, o.password.get_secret_value() if o.password is not None else None)
        if o.tls is not None:
            try:
                client.tls_set_context(o.tls.context())
            except ValueError as exc:
                raise DeliveryError(f"broker {o.host}:{o.port}: {exc}", reason="tls") from exc
        if self.availability is not None:
            # Published by the broker when this connection dies without a goodbye (a crash, a cut network).
            client.will_set(self.availability, "offline", qos=1, retain=True)
        conn = _Connection(client)
        where = f"broker {o.host}:{o.port}"
        try:
            client.connect(o.host, o.port, o.keepalive)
        except ssl.SSLError as exc:  # the broker's certificate, or ours, refused
            raise DeliveryError(f"{where}: TLS failed: {exc}", reason="tls") from exc
        except (OSError, ValueError) as exc:
            raise DeliveryError(f"{where}: cannot connect: {exc}", reason="broker") from exc
        client.loop_start()
        if not conn.connack.wait(o.connect_timeout_s) or conn.reason is None or conn.reason.is_failure:
            why = f"refused the connection: {conn.reason}" if conn.reason is not None else "no CONNACK"
            if conn.reason is None and o.tls is not None:
                # TLS 1.3 brokers check a client certificate after the handshake and just close the connection.
                why += " (over TLS: a broker that requires a client certificate closes without one; see tls.cert_file)"
            conn.drop()
            raise DeliveryError(f"{where}: {why}", reason="broker")
        if self.availability is not None:
            client.publish(self.availability, "online", qos=1, retain=True)
        self._announced = set()  # a new connection: discovery again (the broker may have lost what it kept)
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.drop()

    def deliver(self, alert: Alert) -> None:
        import paho.mqtt.client as mqtt

        o = self.options
        payload = alert_json(alert, o.include_snapshot)
        topic = self.topic(alert)
        if self._conn is None or self._conn.lost.is_set():
            self._drop()
            self._conn = self._connect()
        conn = self._conn
        if o.home_assistant and (alert.stream, alert.rule) not in self._announced:
            where, config = self.discovery(alert)
            conn.client.publish(where, json.dumps(config), qos=1, retain=True)  # ordered before the alert on this connection
            self._announced.add((alert.stream, alert.rule))
        try:
            info = conn.client.publish(topic, payload, qos=o.qos)
        except ValueError as exc:  # a topic or payload MQTT cannot carry: no retry fixes it
            raise DeliveryError(f"cannot publish to {topic!r}: {exc}", retryable=False, reason="publish") from exc
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._drop()
            raise DeliveryError(f"publish failed: {mqtt.error_string(info.rc)}", reason="broker")
        deadline = time.monotonic() + o.publish_timeout_s
        # Wait in slices, so a connection lost meanwhile fails now rather than at the timeout.
        while not info.is_published():
            if conn.lost.is_set():
                self._drop()
                raise DeliveryError(f"broker {o.host}:{o.port}: connection lost before the acknowledgement", reason="broker")
            left = deadline - time.monotonic()
            if left <= 0:
                self._drop()
                raise DeliveryError(f"broker {o.host}:{o.port}: no acknowledgement within {o.publish_timeout_s}s", reason="timeout")
            info.wait_for_publish(min(0.1, left))

    def close(self) -> None:
        conn = self._conn
        if conn is not None and self.availability is not None and not conn.lost.is_set():
            info = conn.client.publish(self.availability, "offline", qos=1, retain=True)  # a goodbye: no last will
            with suppress(Exception):
                info.wait_for_publish(2.0)
        self._drop()
