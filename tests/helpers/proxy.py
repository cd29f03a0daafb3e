"""A real forwarding HTTP proxy for tests, on a loopback port it picks: absolute-URI requests are forwarded to
their target and the answer relayed back; CONNECT opens a byte tunnel (how https goes through a proxy).

With `credentials`, a request without the matching `Proxy-Authorization: Basic ...` is answered 407 and goes
nowhere. Every request is recorded as (method, target, headers), refused ones included. Stop it with close().
"""

from __future__ import annotations

import base64
import http.client
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Headers for the proxy itself (hop-by-hop): not forwarded to the target.
_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}


class Proxy:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.tunnelled = 0  # bytes relayed through CONNECT tunnels, both ways
        lock = threading.Lock()
        expected = "Basic " + base64.b64encode(":".join(credentials).encode()).decode() if credentials else None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _admit(self) -> bool:
                with lock:
                    outer.requests.append((self.command, self.path, dict(self.headers)))
                if expected is not None and self.headers.get("Proxy-Authorization") != expected:
                    self.send_response(407)
                    self.send_header("Proxy-Authenticate", 'Basic realm="test proxy"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return False
                return True

            def do_POST(self) -> None:
                if not self._admit():
                    return
                target = urlsplit(self.path)
                if target.scheme != "http" or not target.hostname:
                    self.send_error(400, "a proxy request names an absolute http:// URL")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
                try:
                    upstream.request("POST", (target.path or "/") + (f"?{target.query}" if target.query else ""), body, headers)
                    resp = upstream.getresponse()
                    data = resp.read()
                except OSError:
                    self.send_error(502)
                    return
                finally:
                    upstream.close()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP | {"content-length", "date", "server"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_CONNECT(self) -> None:
                if not self._admit():
                    return
                host, _, port = self.path.rpartition(":")
                try:
                    upstream = socket.create_connection((host, int(port)), timeout=10)
                except (OSError, ValueError):
                    self.send_error(502)
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                ends = [self.connection, upstream]
                try:
                    while True:
                        readable, _, _ = select.select(ends, [], [], 10)
                        if not readable:
                            return
                        for end in readable:
                            data = end.recv(65536)
                            if not data:
                                return
                            (upstream if end is self.connection else self.connection).sendall(data)
                            with lock:
                                outer.tunnelled += len(data)
                finally:
                    upstream.close()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
