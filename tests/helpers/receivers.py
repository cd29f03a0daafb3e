"""Real receivers of alerts for tests: an HTTP server for webhooks, a mosquitto broker and an MQTT subscriber.

Each one is stopped by whoever started it (close()/stop()), on a loopback port chosen by the test.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.certs import Pki


class Receiver:
    """A real HTTP server recording (Idempotency-Key, JSON body, headers); answers the queued statuses, then 200.
    With `tls` (a server-side SSLContext) it speaks HTTPS."""

    def __init__(self, port: int = 0, statuses: list[int] | None = None, delay_s: float = 0.0, tls: ssl.SSLContext | None = None) -> None:
        self.received: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.statuses = list(statuses or [])
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if delay_s:
                    time.sleep(delay_s)
                with lock:
                    outer.received.append((self.headers.get("Idempotency-Key", ""), json.loads(body), dict(self.headers)))
                    status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def keys(self) -> list[str]:
        return [k for k, _, _ in self.received]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


MOSQUITTO = shutil.which("mosquitto", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")


MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")


class Broker:
    """A real mosquitto on a loopback port, persisting sessions, so a subscriber survives its restart.

    `users` (name -> password) turns anonymous access off: only they may connect (a password_file made with
    mosquitto_passwd). `listener` adds options to the listener (its TLS settings: see TlsBroker)."""

    def __init__(self, folder: Path, port: int, users: dict[str, str] | None = None, listener: list[str] | None = None) -> None:
        self.port = port
        self.folder = folder
        self.conf = folder / "mosquitto.conf"
        # `user`: as root, mosquitto would otherwise switch to the user "mosquitto", which cannot write here.
        lines = [f"listener {port} 127.0.0.1", *(listener or []), f"user {pwd.getpwuid(os.getuid()).pw_name}",
                 "persistence true", f"persistence_location {folder}/"]
        if users:
            assert MOSQUITTO_PASSWD, "mosquitto_passwd is not installed (Debian package mosquitto)"
            passwords = folder / "mosquitto.passwd"
            passwords.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwords), name, password], check=True, capture_output=True)
            lines += [f"password_file {passwords}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO
        with open(self.folder / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, "mosquitto exited: " + (self.folder / "mosquitto.log").read_text()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("mosquitto did not listen within 10s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # it saves its sessions on the way out
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


class TlsBroker(Broker):
    """A mosquitto that speaks MQTT over TLS only, with the server certificate of `pki` (tests/helpers/certs.py);
    with `require_certificate`, a client must also show a certificate signed by its CA."""

    def __init__(self, folder: Path, port: int, pki: Pki, users: dict[str, str] | None = None, require_certificate: bool = False) -> None:
        super().__init__(folder, port, users, listener=[
            f"cafile {pki.ca}", f"certfile {pki.server_cert}", f"keyfile {pki.server_key}",
            f"require_certificate {'true' if require_certificate else 'false'}",
        ])


class Subscriber:
    """A paho client with a persistent session subscribed to all alerts; reconnects on its own. `tls` (a client
    SSLContext) and `auth` (user, password) for a broker that asks for them."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="vidpipe-test-sub", clean_session=False)
        if tls is not None:
            c.tls_set_context(tls)
        if auth is not None:
            c.username_pw_set(*auth)
        c.on_connect = lambda client, userdata, flags, rc, props: client.subscribe("vidpipe/alerts/#", qos=1)
        c.on_subscribe = lambda client, userdata, mid, rcs, props: self.subscribed.set()
        c.on_message = lambda client, userdata, msg: self.messages.append((msg.topic, json.loads(msg.payload)))
        c.reconnect_delay_set(0.1, 0.5)
        c.connect("127.0.0.1", port, 30)
        c.loop_start()
        self.client = c
        assert self.subscribed.wait(5), "subscription not acknowledged"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
