"""The webhook sink's credentials against real servers: `user:pass@` in the URL as Basic auth, header values from
the environment, delivery through a real forwarding proxy (the `proxy` option, HTTP(S)_PROXY, NO_PROXY, https by
CONNECT), and errors that never show a password or a token. Every server started here is stopped by this test."""

from __future__ import annotations

import base64
import secrets
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from stages.alert.sink import DeliveryError, Sink
from stages.alert.sinks import build_sink
from tests.helpers.certs import make_pki
from tests.helpers.procs import free_ports
from tests.helpers.proxy import Proxy
from tests.helpers.receivers import Receiver
from tests.test_sinks import make_alert

T = TypeVar("T", Receiver, Proxy)
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUEST_METHOD")


@pytest.fixture(autouse=True)
def no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the proxy a test sets up: none from the environment this test runs in."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


class Started:
    """Keeps every receiver and proxy a test starts, to close them at its end."""

    def __init__(self) -> None:
        self.made: list[Receiver | Proxy] = []

    def __call__(self, server: T) -> T:
        self.made.append(server)
        return server


@pytest.fixture
def started() -> Iterator[Started]:
    keep = Started()
    try:
        yield keep
    finally:
        for server in reversed(keep.made):
            server.close()


def hook(url: str, **opts: Any) -> Sink:
    return build_sink("hook", {"type": "webhook", "url": url, "timeout_s": 5, **opts})


def deliver(sink: Sink) -> None:
    try:
        sink.deliver(make_alert(1))
    finally:
        sink.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def authorization(headers: dict[str, str]) -> list[str]:
    """Every Authorization header a request carried (any spelling of the name)."""
    return [v for k, v in headers.items() if k.lower() == "authorization"]


# ---------------------------------------------------------------- credentials


def test_url_credentials_become_basic_auth_unless_a_header_says_otherwise(started: Started) -> None:
    recv = started(Receiver())
    deliver(hook(f"http://user:p%40ss@127.0.0.1:{recv.port}/x"))
    (_, body, headers) = recv.received[0]
    assert body["id"] == make_alert(1).id
    (value,) = authorization(headers)
    scheme, _, token = value.partition(" ")
    assert scheme == "Basic" and base64.b64decode(token).decode() == "user:p@ss"  # percent-decoded

    for name in ("Authorization", "authorization"):
        deliver(hook(f"http://user:p%40ss@127.0.0.1:{recv.port}/x", headers={name: "Bearer explicit"}))
        assert authorization(recv.received[-1][2]) == ["Bearer explicit"]  # the header wins, and it is the only one


def test_a_header_reference_arrives_resolved(started: Started, monkeypatch: pytest.MonkeyPatch) -> None:
    recv = started(Receiver())
    token = "tok-" + secrets.token_hex(8)
    monkeypatch.setenv("TEST_HOOK_TOKEN", token)
    monkeypatch.setenv("TEST_HOOK_URL", f"http://127.0.0.1:{recv.port}/alerts")
    deliver(hook("${TEST_HOOK_URL}", headers={"Authorization": "Bearer ${TEST_HOOK_TOKEN}", "X-Static": "$${literal}"}))
    headers = recv.received[0][2]
    assert authorization(headers) == [f"Bearer {token}"]
    assert headers["X-Static"] == "${literal}"


# ---------------------------------------------------------------- proxy


def test_plain_http_through_the_proxy_option_with_its_credentials(started: Started) -> None:
    recv = started(Receiver())
    proxy = started(Proxy(credentials=("pu", "p@ss:word")))
    deliver(hook(f"http://127.0.0.1:{recv.port}/alerts?k=1", proxy=f"http://pu:p%40ss%3Aword@127.0.0.1:{proxy.port}"))
    assert len(recv.received) == 1
    ((method, target, headers),) = proxy.requests
    assert (method, target) == ("POST", f"http://127.0.0.1:{recv.port}/alerts?k=1")  # the absolute URI
    assert headers["Proxy-Authorization"] == basic("pu", "p@ss:word")
    assert headers["Host"] == f"127.0.0.1:{recv.port}"


def test_http_proxy_from_the_environment_and_no_proxy(started: Started, monkeypatch: pytest.MonkeyPatch) -> None:
    recv = started(Receiver())
    proxy = started(Proxy(credentials=("envuser", "envpass")))
    monkeypatch.setenv("HTTP_PROXY", f"http://envuser:envpass@127.0.0.1:{proxy.port}")
    deliver(hook(f"http://127.0.0.1:{recv.port}/alerts"))
    assert [(m, t) for m, t, _ in proxy.requests] == [("POST", f"http://127.0.0.1:{recv.port}/alerts")]
    assert proxy.requests[0][2]["Proxy-Authorization"] == basic("envuser", "envpass")
    assert len(recv.received) == 1

    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    deliver(hook(f"http://127.0.0.1:{recv.port}/alerts"))
    assert len(proxy.requests) == 1 and len(recv.received) == 2  # straight to the receiver
    assert "Proxy-Authorization" not in recv.received[1][2]


@pytest.mark.parametrize("how", ["option", "HTTPS_PROXY"])
def test_https_goes_through_a_connect_tunnel(started: Started, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str) -> None:
    pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))  # the sink trusts the system's CAs: here, the test CA
    recv = started(Receiver(tls=pki.server_context()))
    proxy = started(Proxy(credentials=("tu", "tunnel-pass")))
    proxy_url = f"http://tu:tunnel-pass@127.0.0.1:{proxy.port}"
    opts: dict[str, Any] = {"headers": {"Authorization": "Bearer for-the-receiver"}}
    if how == "option":
        opts["proxy"] = proxy_url
    else:
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
    deliver(hook(f"https://127.0.0.1:{recv.port}/alerts?k=1", **opts))
    ((method, target, headers),) = proxy.requests
    assert (method, target) == ("CONNECT", f"127.0.0.1:{recv.port}")
    assert headers["Proxy-Authorization"] == basic("tu", "tunnel-pass")
    assert "Authorization" not in headers  # the receiver's credentials travel inside the tunnel only
    assert proxy.tunnelled > 1000  # the TLS handshake and the alert went through it
    ((_, body, rheaders),) = recv.received
    assert body["id"] == make_alert(1).id
    assert authorization(rheaders) == ["Bearer for-the-receiver"]
    assert "Proxy-Authorization" not in rheaders  # the proxy's credentials stay with the proxy


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_refusing_our_credentials_is_retried_not_rejected(started: Started, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, scheme: str) -> None:
    """A 407 is about the proxy's credentials, never about the alert: it must not reject (drop) the alert."""
    pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    recv = started(Receiver(tls=pki.server_context() if scheme == "https" else None))
    proxy = started(Proxy(credentials=("pu", "right-pass")))
    with pytest.raises(DeliveryError) as err:
        deliver(hook(f"{scheme}://127.0.0.1:{recv.port}/alerts", proxy=f"http://pu:wrong-pass@127.0.0.1:{proxy.port}"))
    assert err.value.retryable, err.value
    assert "407" in str(err.value) and "wrong-pass" not in str(err.value)
    assert len(proxy.requests) == 1 and recv.received == []


# ---------------------------------------------------------------- errors


def test_delivery_errors_show_neither_password_nor_token(started: Started) -> None:
    password, token, proxy_password = (f"{what}-{secrets.token_hex(6)}" for what in ("hookpw", "qtok", "proxypw"))
    secret_texts = [password, token, proxy_password, base64.b64encode(f"user:{password}".encode()).decode()]

    def failure(url: str, **opts: Any) -> DeliveryError:
        with pytest.raises(DeliveryError) as err:
            deliver(hook(url, **opts))
        text = "".join(traceback.format_exception(err.value))  # the message and every exception chained to it
        for s in secret_texts:
            assert s not in text, (s, text)
        return err.value

    (closed,) = free_ports(1)
    failing = started(Receiver(statuses=[500, 401]))
    refusing_proxy = started(Proxy(credentials=("pu", "other")))
    creds = f"user:{password}@"
    assert failure(f"http://{creds}127.0.0.1:{closed}/x?token={token}").reason == "connect"
    assert failure(f"http://{creds}127.0.0.1:{failing.port}/x?token={token}").reason == "http_5xx"
    assert failure(f"http://{creds}127.0.0.1:{failing.port}/x?token={token}").reason == "http_4xx"
    slow = started(Receiver(delay_s=1.0))
    assert failure(f"http://{creds}127.0.0.1:{slow.port}/x?token={token}", timeout_s=0.2).reason == "timeout"
    for scheme in ("http", "https"):  # a proxy that refuses us, and one that is not there
        failure(f"{scheme}://{creds}127.0.0.1:{failing.port}/x?token={token}", proxy=f"http://pu:{proxy_password}@127.0.0.1:{refusing_proxy.port}")
        err = failure(f"{scheme}://{creds}127.0.0.1:{failing.port}/x?token={token}", proxy=f"http://pu:{proxy_password}@127.0.0.1:{closed}")
        assert err.reason == "connect" and f"127.0.0.1:{closed}" in str(err)  # it says which proxy failed
    assert len(failing.received) == 2  # only the two direct attempts reached it
