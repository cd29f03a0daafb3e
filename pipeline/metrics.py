"""Prometheus metrics of one process, served with a health check on /metrics and /healthz."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pipeline.protocol import PROTOCOL_VERSION

PREFIX = "vidpipe"
BEAT_FILE_ENV = "VIDPIPE_BEAT_FILE"  # set by the launcher for each stage it runs

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def version() -> str:
    """The installed vidpipe version (the source tree's, when it is not installed)."""
    try:
        return importlib.metadata.version("vidpipe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_info() -> dict[str, str]:
    import zmq

    return {"version": version(), "python": platform.python_version(), "zmq": zmq.zmq_version(), "protocol": str(PROTOCOL_VERSION)}


class StageMetrics:
    """The metrics every stage process exposes; stage kinds may add their own to `registry`."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.registry = CollectorRegistry()
        r = self.registry
        # process_cpu_seconds_total and process_resident_memory_bytes: what each stage costs (bench/vs_loop.py).
        ProcessCollector(registry=r)
        self.frames_in = Counter(f"{PREFIX}_frames_in", "Frames received (or read, for a source).", ["stage", "stream"], registry=r)
        self.frames_out = Counter(f"{PREFIX}_frames_out", "Frames handed on downstream.", ["stage", "stream"], registry=r)
        self.frames_shed = Counter(f"{PREFIX}_frames_shed", "Frames dropped on purpose in live mode, by reason.", ["stage", "stream", "reason"], registry=r)
        self.frames_failed = Counter(f"{PREFIX}_frames_failed", "Frames whose processing raised; skipped.", ["stage", "stream"], registry=r)
        self.disconnections = Counter(f"{PREFIX}_input_disconnections", "Peers whose connection to this stage's input ended: gone away, or dropped by ZeroMQ for sending a message over transport.max_message_mb.", ["stage"], registry=r)
        self.peers_refused = Counter(f"{PREFIX}_peers_refused", "Connections refused at the CURVE handshake: auth (a key that is not one of the stages wired here), handshake (no keys, or expecting another server).", ["stage", "reason"], registry=r)
        self.messages_rejected = Counter(f"{PREFIX}_messages_rejected", "Messages refused: not decodable (malformed, version, size), of a stream not in the config (unknown_stream), or not from this stage's upstream (sender).", ["stage", "reason"], registry=r)
        self.processing = Histogram(f"{PREFIX}_processing_seconds", "Time to process one batch.", ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.frame_age = Histogram(f"{PREFIX}_frame_age_seconds", "Now minus capture time, as a frame reaches this stage.", ["stage"], buckets=_AGE_BUCKETS, registry=r)
        self.batch_size = Histogram(f"{PREFIX}_batch_size", "Frames per processed batch.", ["stage"], buckets=_BATCH_BUCKETS, registry=r)
        self.stream_up = Gauge(f"{PREFIX}_stream_up", "1 while a stream delivers frames, 0 while it is down or ended.", ["stage", "stream"], registry=r)
        self.decode_errors = Counter(f"{PREFIX}_decode_errors", "Source open/read failures, by reason.", ["stage", "stream", "reason"], registry=r)
        self.streams_ended = Counter(f"{PREFIX}_streams_ended", "Streams (or epochs of them) ended, by outcome: complete, error, stopped, or restarted (the source started again with a new epoch).", ["stage", "stream", "outcome"], registry=r)
        self.last_seen = Gauge(f"{PREFIX}_stream_last_seen_timestamp_seconds", "Last frame or heartbeat of a stream received here.", ["stage", "stream"], registry=r)
        self.heartbeat = Gauge(f"{PREFIX}_heartbeat_timestamp_seconds", "Last time the stage loop ran.", ["stage"], registry=r)
        # What runs, for dashboards and bug reports: the same labels on every stage process.
        Info(f"{PREFIX}_build", "The vidpipe version and platform of this process.", registry=r).info(build_info())
        self.last_beat = time.time()
        # The series exists from the start (healthz answers from then on): a scrape never misses it while the stage builds.
        self.heartbeat.labels(self.stage).set(self.last_beat)
        self.beat_file = os.environ.get(BEAT_FILE_ENV) or None
        self._touched = 0.0

    def beat(self) -> None:
        self.last_beat = time.time()
        self.heartbeat.labels(self.stage).set(self.last_beat)
        if self.beat_file is not None and self.last_beat - self._touched >= 1.0:
            # For the supervisor, which sees a hang as this file growing old (see pipeline/launcher.py).
            self._touched = self.last_beat
            with open(self.beat_file, "a"):
                os.utime(self.beat_file)


class MetricsServer:
    """/metrics in the Prometheus text format; /healthz 200 while `healthy()` holds, else 503."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, healthy: Callable[[], bool]) -> None:
        reg, ok = registry, healthy

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, status = generate_latest(reg), CONTENT_TYPE_LATEST, 200
                elif path == "/healthz":
                    good = ok()
                    body, ctype, status = (b"ok\n" if good else b"unhealthy\n"), "text/plain", 200 if good else 503
                else:
                    body, ctype, status = b"not found: try /metrics or /healthz\n", "text/plain", 404
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # scrapes are not worth a log line
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        # close() waits for the serving loop to notice: at the default 0.5 s poll that was half a second
        # added to the end of every replay.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
