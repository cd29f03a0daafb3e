"""Alert sinks and delivery workers against real receivers: an HTTP server, a mosquitto broker,
a ZeroMQ SUB socket and files. Every server and process started here is stopped by this test."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from pipeline.alert import Alert, alert_id
from stages.alert.delivery import DeliveryMetrics, DeliveryWorker
from stages.alert.outbox import DELIVERED, PENDING, REJECTED, Outbox
from stages.alert.sink import DeliveryError, Sink
from stages.alert.sinks import build_sink, parse_sink_config
from tests.helpers.receivers import MOSQUITTO, Broker, Receiver, Subscriber

STAGE = "alert"
JPEG = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"


def make_alert(seq: int, stream: str = "cam1", rule: str = "door", snapshot: bytes | None = JPEG) -> Alert:
    return Alert(
        id=alert_id(stream, 0, rule, [seq], seq),
        stream=stream,
        rule=rule,
        kind="zone_intrusion",
        severity="critical",
        track_ids=[seq],
        seq=seq,
        pts=seq / 25,
        capture_ts=1_700_000_000.0 + seq / 25,
        message=f"person in {rule} at frame {seq}",
        details={"zone": rule, "dwell_s": 2.5},
        boxes=[[10.0, 20.0, 50.0, 120.0]],
        snapshot=snapshot,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Rig:
    """An outbox, one sink and its delivery worker, with the metrics registry."""

    box: Outbox
    sink: Sink
    worker: DeliveryWorker
    registry: CollectorRegistry

    def add(self, alerts: list[Alert]) -> list[Alert]:
        added = self.box.add(alerts, now=time.time())
        self.worker.wake()
        return added

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, {"stage": STAGE, "sink": self.sink.name, **labels})
        return value or 0.0


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(sink: Sink, retry_initial_s: float = 0.05, retry_max_s: float = 0.2, db: Path | None = None) -> Rig:
        box = Outbox(db or tmp_path / f"{sink.name}.db", [sink.name])
        registry = CollectorRegistry()
        worker = DeliveryWorker(box, sink, DeliveryMetrics(registry, STAGE), STAGE, retry_initial_s=retry_initial_s, retry_max_s=retry_max_s)
        worker.start()
        made.append(Rig(box, sink, worker, registry))
        return made[-1]

    try:
        yield make
    finally:
        for r in made:
            assert r.worker.stop(10), f"worker of {r.sink.name} did not stop"
            r.sink.close()
            r.box.close()


# ---------------------------------------------------------------- webhook


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*args: Any, **kw: Any) -> Receiver:
        made.append(Receiver(*args, **kw))
        return made[-1]

    try:
        yield make
    finally:
        for r in made:
            r.close()


def webhook(port: int, **opts: Any) -> Sink:
    return build_sink("hook", {"type": "webhook", "url": f"http://127.0.0.1:{port}/alerts?token=s3cret", **opts})


def test_webhook_delivers_json_with_idempotency_key(rig: Callable[..., Rig], receivers: Callable[..., Receiver]) -> None:
    recv = receivers()
    r = rig(webhook(recv.port, headers={"Authorization": "Bearer abc"}))
    alerts = r.add([make_alert(i) for i in range(3)])
    wait_until(lambda: r.metric("vidpipe_alert_deliveries_total") == 3, 10, "3 deliveries")
    assert recv.keys() == [a.id for a in alerts]
    for (key, body, headers), alert in zip(recv.received, alerts):
        assert body == alert.to_json()  # raised_ts and the base64 snapshot included
        assert headers["Content-Type"] == "application/json"
        assert headers["Authorization"] == "Bearer abc"
    assert r.metric("vidpipe_alert_delivery_seconds_count") == 3
    assert r.metric("vidpipe_outbox_depth") == 0
    assert r.box.counts("hook")[DELIVERED] == 3


def test_webhook_without_snapshot(receivers: Callable[..., Receiver]) -> None:
    recv = receivers()
    sink = webhook(recv.port, include_snapshot=False)
    alert = make_alert(1)
    sink.deliver(alert)
    sink.close()
    assert recv.received[0][1] == alert.to_json(snapshot=False) and "snapshot_jpeg" not in recv.received[0][1]


def test_webhook_5xx_is_retried_and_delivered_once(rig: Callable[..., Rig], receivers: Callable[..., Receiver]) -> None:
    recv = receivers(statuses=[500])
    r = rig(webhook(recv.port))
    (alert,) = r.add([make_alert(1)])
    wait_until(lambda: r.metric("vidpipe_alert_deliveries_total") == 1, 10, "the delivery")
    time.sleep(0.3)  # nothing more comes
    assert recv.keys() == [alert.id, alert.id]  # the 500, then the 200
    assert r.metric("vidpipe_alert_delivery_failures_total", reason="http_5xx") == 1
    assert r.metric("vidpipe_alert_delivery_retries_total") == 1
    assert r.metric("vidpipe_alert_deliveries_total") == 1
    d = r.box.delivery("hook", alert.id)
    assert (d.state, d.attempts) == (DELIVERED, 2)


def test_webhook_4xx_is_rejected_not_retried(rig: Callable[..., Rig], receivers: Callable[..., Receiver]) -> None:
    recv = receivers(statuses=[400])
    r = rig(webhook(recv.port))
    bad, good = r.add([make_alert(1), make_alert(2)])
    wait_until(lambda: r.metric("vidpipe_alert_deliveries_total") == 1, 10, "the second alert")
    time.sleep(0.3)
    assert recv.keys() == [bad.id, good.id]  # the refused one was sent once, and did not block the next
    assert r.metric("vidpipe_alert_rejected_total") == 1
    assert r.metric("vidpipe_alert_delivery_failures_total", reason="http_4xx") == 1
    assert r.metric("vidpipe_alert_delivery_retries_total") == 0
    d = r.box.delivery("hook", bad.id)
    assert d.state == REJECTED and "400" in (d.last_error or "")
    assert r.box.counts("hook") == {PENDING: 0, DELIVERED: 1, REJECTED: 1}


@pytest.mark.parametrize(
    ("status", "retryable", "reason"),
    [(408, True, "http_4xx"), (425, True, "http_4xx"), (429, True, "http_4xx"), (502, True, "http_5xx"),
     (301, True, "http_3xx"), (404, False, "http_4xx"), (422, False, "http_4xx")],
)
def test_webhook_status_classes(receivers: Callable[..., Receiver], status: int, retryable: bool, reason: str) -> None:
    recv = receivers(statuses=[status])
    sink = webhook(recv.port)
    with pytest.raises(DeliveryError) as err:
        sink.deliver(make_alert(1))
    assert (err.value.retryable, err.value.reason) == (retryable, reason)
    assert "s3cret" not in str(err.value)  # the query (a token) stays out of logs


def test_webhook_timeout_and_refused(receivers: Callable[..., Receiver]) -> None:
    slow = receivers(delay_s=1.0)
    with pytest.raises(DeliveryError) as err:
        webhook(slow.port, timeout_s=0.2).deliver(make_alert(1))
    assert err.value.retryable and err.value.reason == "timeout"
    with pytest.raises(DeliveryError) as err:
        webhook(free_port()).deliver(make_alert(1))
    assert err.value.retryable and err.value.reason == "connect"


def test_webhook_receiver_down_then_up(rig: Callable[..., Rig], receivers: Callable[..., Receiver]) -> None:
    port = free_port()  # nothing listens yet
    r = rig(webhook(port))
    alerts = r.add([make_alert(i) for i in range(5)])
    wait_until(lambda: r.metric("vidpipe_alert_delivery_failures_total", reason="connect") >= 3, 10, "failed attempts")
    assert r.metric("vidpipe_outbox_depth") == 5
    assert r.box.depth("hook") == 5
    assert r.metric("vidpipe_alert_deliveries_total") == 0
    recv = receivers(port=port)
    wait_until(lambda: r.metric("vidpipe_alert_deliveries_total") == 5, 10, "all 5 delivered")
    time.sleep(0.3)
    assert recv.keys() == [a.id for a in alerts]  # each once, in raise order
    assert r.metric("vidpipe_outbox_depth") == 0
    assert r.metric("vidpipe_alert_delivery_retries_total") >= 1


# ---------------------------------------------------------------- worker


class FlakySink(Sink):
    """Raises a plain exception (a sink bug) the first `fail` times."""

    def __init__(self, fail: int) -> None:
        super().__init__("flaky")
        self.fail = fail
        self.got: list[str] = []

    def deliver(self, alert: Alert) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("sink bug")
        self.got.append(alert.id)


def test_worker_survives_sink_bugs(rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    sink = FlakySink(fail=3)
    with caplog.at_level(logging.DEBUG, logger=f"vidpipe.{STAGE}"):
        r = rig(sink)
        alerts = r.add([make_alert(i) for i in range(3)])
        wait_until(lambda: len(sink.got) == 3, 10, "deliveries after the errors")
    assert sink.got == [a.id for a in alerts]
    assert r.worker.is_alive()
    assert r.metric("vidpipe_alert_delivery_failures_total", reason="error") == 3
    tracebacks = [rec for rec in caplog.records if rec.exc_info]
    assert len(tracebacks) == 1 and "sink bug" in caplog.text


def test_worker_backoff_and_stop(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", ["flaky"])
    worker = DeliveryWorker(box, FlakySink(0), DeliveryMetrics(CollectorRegistry(), STAGE), STAGE, retry_initial_s=0.5, retry_max_s=4.0)
    try:
        for attempts, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0), (10_000, 4.0)]:
            delays = [worker.backoff_s(attempts) for _ in range(50)]
            assert all(0.8 * base <= d <= 1.2 * base for d in delays)
            assert max(delays) - min(delays) > 0  # jittered
        worker.start()
        t0 = time.monotonic()
        assert worker.stop(5)
        assert time.monotonic() - t0 < 1.0
    finally:
        box.close()


# ---------------------------------------------------------------- MQTT

@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian package mosquitto); the MQTT sink test needs a real broker")
    b = Broker(tmp_path, free_port())
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_mqtt_delivers_and_survives_broker_restart(rig: Callable[..., Rig], broker: Broker) -> None:
    sub = Subscriber(broker.port)
    try:
        sink = build_sink("mqtt", {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "qos": 1, "connect_timeout_s": 1, "publish_timeout_s": 2})
        r = rig(sink, retry_max_s=0.3)
        first = r.add([make_alert(1, "cam1", "door"), make_alert(2, "cam2", "gate"), make_alert(3, "cam1", "gate")])
        wait_until(lambda: len(sub.messages) == 3, 10, "3 MQTT messages")
        assert [t for t, _ in sub.messages] == [f"vidpipe/alerts/{a.stream}/{a.rule}" for a in first]
        assert [m for _, m in sub.messages] == [a.to_json() for a in first]
        wait_until(lambda: r.metric("vidpipe_alert_deliveries_total") == 3, 5, "the PUBACKs")  # the broker forwards before it acks

        broker.stop()
        later = r.add([make_alert(4), make_alert(5)])
        wait_until(lambda: r.metric("vidpipe_alert_delivery_failures_total", reason="broker") >= 2, 10, "failures while the broker is down")
        wait_until(lambda: r.metric("vidpipe_outbox_depth") == 2, 5, "depth 2")
        assert r.box.depth("mqtt") == 2 and r.metric("vidpipe_alert_deliveries_total") == 3

        broker.start()
        wait_until(lambda: r.metric("vidpipe_alert_deliveries_total") == 5, 15, "delivery after the restart")
        # QoS 1 is at least once: the broker may resend what was in flight to the subscriber when it stopped.
        def ids() -> list[str]:
            return list(dict.fromkeys(m["id"] for _, m in sub.messages))

        wait_until(lambda: len(ids()) == 5, 10, "the subscriber to get the 2 held alerts")
        assert ids() == [a.id for a in first + later]
        assert r.metric("vidpipe_outbox_depth") == 0
    finally:
        sub.close()


def test_mqtt_broker_down_is_retryable() -> None:
    sink = build_sink("mqtt", {"type": "mqtt", "host": "127.0.0.1", "port": free_port(), "connect_timeout_s": 1})
    try:
        with pytest.raises(DeliveryError) as err:
            sink.deliver(make_alert(1))
        assert err.value.retryable and err.value.reason == "broker"
    finally:
        sink.close()


# ---------------------------------------------------------------- ZeroMQ PUB


def _receive(sub: zmq.Socket, sink: Sink, alert: Alert) -> list[bytes]:
    # PUB drops what it sends before the subscription has reached it: send until one arrives.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sink.deliver(alert)
        if sub.poll(100):
            return sub.recv_multipart()
    raise AssertionError("the SUB socket received nothing")


def test_zmq_pub_bind_and_connect() -> None:
    ctx = zmq.Context()
    port1, port2 = free_port(), free_port()
    sub1 = ctx.socket(zmq.SUB)
    sub2 = ctx.socket(zmq.SUB)
    sinks: list[Sink] = []
    try:
        for s in (sub1, sub2):
            s.setsockopt(zmq.LINGER, 0)
        # The sink binds (the default for PUB); the subscriber connects and filters by stream.
        sinks.append(build_sink("pub", {"type": "zmq_pub", "endpoint": f"tcp://127.0.0.1:{port1}"}))
        sub1.connect(f"tcp://127.0.0.1:{port1}")
        sub1.setsockopt(zmq.SUBSCRIBE, b"cam1/")
        alert = make_alert(7, "cam1", "door")
        topic, body = _receive(sub1, sinks[0], alert)
        assert topic == b"cam1/door" and json.loads(body) == alert.to_json()
        # '>' connects to a subscriber that binds.
        sub2.bind(f"tcp://127.0.0.1:{port2}")
        sub2.setsockopt(zmq.SUBSCRIBE, b"")
        sinks.append(build_sink("pub2", {"type": "zmq_pub", "endpoint": f">tcp://127.0.0.1:{port2}", "include_snapshot": False}))
        topic, body = _receive(sub2, sinks[1], make_alert(8, "cam2", "gate"))
        assert topic == b"cam2/gate" and "snapshot_jpeg" not in json.loads(body)
    finally:
        for sink in sinks:
            sink.close()
        sub1.close()
        sub2.close()
        ctx.term()


# ---------------------------------------------------------------- jsonl


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_appends_lines(rig: Callable[..., Rig], tmp_path: Path) -> None:
    path = tmp_path / "out" / "alerts.jsonl"  # the folder is created
    r = rig(build_sink("file", {"type": "jsonl", "path": str(path)}))
    alerts = r.add([make_alert(i) for i in range(3)])
    wait_until(lambda: r.metric("vidpipe_alert_deliveries_total") == 3, 10, "3 lines")
    assert read_lines(path) == [a.to_json() for a in alerts]


def test_jsonl_no_duplicate_after_crash(rig: Callable[..., Rig], tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    db = tmp_path / "outbox.db"
    box = Outbox(db, ["file"])
    a, b, c = box.add([make_alert(1), make_alert(2), make_alert(3)], now=time.time())
    box.close()
    # The process wrote `a` and died before the outbox recorded it, and died again halfway through `b`'s line.
    crashed = build_sink("file", {"type": "jsonl", "path": str(path)})
    crashed.deliver(a)
    crashed.close()
    with open(path, "ab") as f:
        f.write(b'{"id": "' + b.id.encode() + b'", "stream": "ca')

    r = rig(build_sink("file", {"type": "jsonl", "path": str(path)}), db=db)
    wait_until(lambda: r.box.depth("file") == 0, 10, "the pending alerts")
    assert [line["id"] for line in read_lines(path)] == [a.id, b.id, c.id]  # each once, no torn line
    assert r.box.counts("file")[DELIVERED] == 3


def test_jsonl_snapshots_dir(tmp_path: Path) -> None:
    path, snaps = tmp_path / "alerts.jsonl", tmp_path / "snaps"
    sink = build_sink("file", {"type": "jsonl", "path": str(path), "snapshots_dir": str(snaps), "fsync": False})
    with_snap, without = make_alert(1), make_alert(2, snapshot=None)
    try:
        sink.deliver(with_snap)
        sink.deliver(without)
    finally:
        sink.close()
    first, second = read_lines(path)
    assert Path(first["snapshot_path"]) == snaps / f"{with_snap.id}.jpg"
    assert Path(first["snapshot_path"]).read_bytes() == JPEG
    assert "snapshot_jpeg" not in first and "snapshot_path" not in second
    assert Alert.from_json(first) == dataclasses.replace(with_snap, snapshot=None)  # the rest of the alert as it was
    assert sorted(p.name for p in snaps.iterdir()) == [f"{with_snap.id}.jpg"]  # no temp files left


# ---------------------------------------------------------------- config


def test_sink_config_validation() -> None:
    assert parse_sink_config({"type": "mqtt", "host": "h"}).topic == "vidpipe/alerts/{stream}/{rule}"
    bad = [
        {"type": "webhook", "url": "ftp://example.com/x"},
        {"type": "webhook", "url": "http:///nohost"},
        {"type": "webhook", "url": "http://h/x", "headers": {"Idempotency-Key": "mine"}},
        {"type": "webhook", "url": "http://h/x", "timeout": 3},  # unknown key
        {"type": "mqtt", "host": "h", "topic": "alerts/{camera}"},
        {"type": "mqtt", "host": "h", "topic": "alerts/#"},
        {"type": "mqtt", "host": "h", "qos": 3},
        {"type": "mqtt", "host": "h", "password": "p"},
        {"type": "zmq_pub", "endpoint": "tcp://nowhere"},
        {"type": "zmq_pub", "endpoint": "tcp://*:5590"},  # every alert to any host: only with allow_insecure
        {"type": "jsonl", "path": " "},
        {"type": "sms", "to": "123"},
    ]
    for cfg in bad:
        with pytest.raises(ValidationError):
            parse_sink_config(cfg)
    parse_sink_config({"type": "zmq_pub", "endpoint": "tcp://*:5590", "allow_insecure": True})
    sink = build_sink("m", {"type": "mqtt", "host": "h", "topic": "a/{severity}/{kind}/{stream}"})
    assert sink.topic(make_alert(1, stream="x/y+z")) == "a/critical/zone_intrusion/x_y_z"  # type: ignore[attr-defined]
