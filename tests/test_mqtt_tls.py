"""The MQTT sink over TLS against a real mosquitto with a TLS listener and a password file: the broker's CA
(`tls.ca_file`), the password from the environment, a refused CA or password, and a client certificate (with an
encrypted key) for a broker that requires one. Every broker started here is stopped by this test."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stages.alert.sink import DeliveryError
from stages.alert.sinks import build_sink
from tests.helpers.certs import Pki, make_pki
from tests.helpers.procs import free_ports, wait_for
from tests.helpers.receivers import MOSQUITTO, MOSQUITTO_PASSWD, Subscriber, TlsBroker
from tests.test_sinks import make_alert

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None, reason="mosquitto is not installed (Debian package mosquitto); these tests need a real broker"
)

SINK_USER, WATCHER = "vidpipe", "watcher"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", client_key_password="key-" + secrets.token_hex(6))


@pytest.fixture
def passwords(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The broker's users; the sink's password is in TEST_MQTT_PASSWORD only."""
    users = {SINK_USER: "mq-" + secrets.token_hex(8), WATCHER: "w-" + secrets.token_hex(8)}
    monkeypatch.setenv("TEST_MQTT_PASSWORD", users[SINK_USER])
    return users


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki, passwords: dict[str, str]) -> Iterator[Callable[..., TlsBroker]]:
    made: list[TlsBroker] = []

    def start(require_certificate: bool = False) -> TlsBroker:
        folder = tmp_path / f"broker{len(made)}"
        folder.mkdir()
        (port,) = free_ports(1)
        made.append(TlsBroker(folder, port, pki, users=passwords, require_certificate=require_certificate))
        made[-1].start()
        return made[-1]

    try:
        yield start
    finally:
        for b in made:
            b.stop()


def sink_options(port: int, tls: dict[str, Any], password: str = "${TEST_MQTT_PASSWORD}") -> dict[str, Any]:
    return {"type": "mqtt", "host": "127.0.0.1", "port": port, "qos": 1, "username": SINK_USER, "password": password,
            "tls": tls, "connect_timeout_s": 3, "publish_timeout_s": 5}


def deliver(options: dict[str, Any]) -> None:
    """One alert through a new sink; returns once the broker acknowledged it (QoS 1)."""
    sink = build_sink("mqtt", options)
    try:
        sink.deliver(make_alert(1))
    finally:
        sink.close()


def failure(options: dict[str, Any], *secret_texts: str) -> DeliveryError:
    with pytest.raises(DeliveryError) as err:
        deliver(options)
    for s in secret_texts:
        assert s not in str(err.value)
    return err.value


def client_with_cert(pki: Pki) -> ssl.SSLContext:
    ctx = pki.client_context()
    ctx.load_cert_chain(pki.client_cert, pki.client_key, pki.client_key_password)
    return ctx


def test_tls_with_the_brokers_ca_and_a_password_from_the_environment(tls_broker: Callable[..., TlsBroker], pki: Pki, passwords: dict[str, str]) -> None:
    broker = tls_broker()
    sub = Subscriber(broker.port, tls=pki.client_context(), auth=(WATCHER, passwords[WATCHER]))
    try:
        deliver(sink_options(broker.port, {"ca_file": str(pki.ca)}))
        wait_for(lambda: sub.messages, 10, 0.02, "the alert at the subscriber")
        assert sub.messages == [("vidpipe/alerts/cam1/door", make_alert(1).to_json())]
    finally:
        sub.close()


def test_a_broker_certificate_from_an_unknown_ca_fails_as_tls(tls_broker: Callable[..., TlsBroker], passwords: dict[str, str]) -> None:
    broker = tls_broker()
    err = failure(sink_options(broker.port, {}), passwords[SINK_USER])  # the system's CAs do not know the test CA
    assert err.reason == "tls" and err.retryable
    assert "certificate verify failed" in str(err)


def test_a_wrong_password_is_refused_by_the_broker(tls_broker: Callable[..., TlsBroker], pki: Pki, passwords: dict[str, str]) -> None:
    broker = tls_broker()
    wrong = "wrong-" + secrets.token_hex(6)
    err = failure(sink_options(broker.port, {"ca_file": str(pki.ca)}, password=wrong), wrong, passwords[SINK_USER])
    assert err.reason == "broker" and "refused the connection" in str(err)
    deliver(sink_options(broker.port, {"ca_file": str(pki.ca)}))  # the same sink settings with the right one pass


def test_a_client_certificate_for_a_broker_that_requires_one(
    tls_broker: Callable[..., TlsBroker], pki: Pki, passwords: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = tls_broker(require_certificate=True)
    monkeypatch.setenv("TEST_KEY_PASSWORD", pki.client_key_password)
    with_cert = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key), "key_password": "${TEST_KEY_PASSWORD}"}
    sub = Subscriber(broker.port, tls=client_with_cert(pki), auth=(WATCHER, passwords[WATCHER]))
    try:
        deliver(sink_options(broker.port, with_cert))
        wait_for(lambda: sub.messages, 10, 0.02, "the alert at the subscriber")
        assert [m["id"] for _, m in sub.messages] == [make_alert(1).id]
    finally:
        sub.close()
    # Without a certificate the broker refuses us (under TLS 1.3 it says so after the handshake: the sink sees the
    # connection closed before the CONNACK); with a wrong key password we cannot even offer one.
    err = failure(sink_options(broker.port, {"ca_file": str(pki.ca)}), passwords[SINK_USER])
    assert err.reason in ("tls", "broker") and err.retryable
    err = failure(sink_options(broker.port, {**with_cert, "key_password": "not-the-key-password"}), "not-the-key-password")
    assert err.reason == "tls" and "cert_file" in str(err)
