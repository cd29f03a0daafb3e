"""web: serves the pipeline over HTTP while it runs (stages/web/app.py): every stream live with its boxes, labels,
track ids, zones, lines and counts drawn, fps and frame age; the alerts as they are raised; the recordings.

It is an observer: `input_pattern: sub` on a stage's `publish` mirror (`publish: auto` on the stage before), so a
slow browser never slows the pipeline (the mirror drops what the web stage cannot take, and a viewer only ever
gets the newest picture). Pictures are annotated and JPEG-encoded at most `max_fps` a second per stream, and
only while someone watches (once a second otherwise, for /frame.jpg).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from pathlib import Path
from typing import Any

import cv2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.paths import InputPath
from pipeline.protocol import Frame, StreamEnd, StreamStart
from pipeline.secrets import Secret, is_reference
from pipeline.stage import Stage, StageContext
from stages.analyze.overlay import OverlayGeometry
from stages.web.hub import Hub


class WebOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address to listen on. Beyond loopback a `token` is required.")
    port: int = Field(8080, ge=1, le=65535, description="Port to listen on.")
    token: Secret | None = Field(None, description="Access token (`${ENV}` or `file:PATH`): requests need it as a bearer token, a cookie set by `?token=`, or the query.")
    tls_certfile: InputPath | None = Field(None, description="PEM certificate: serve HTTPS (with tls_keyfile).")
    tls_keyfile: InputPath | None = Field(None, description="PEM private key of tls_certfile.")
    max_fps: float = Field(10.0, gt=0, le=60, description="Live pictures per second per stream, at most.")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the live pictures.")
    max_width: int = Field(1280, ge=64, description="Live pictures wider than this are scaled down.")
    recordings: str | None = Field(None, description="Folder of the recordings to list and play; default: the record stage's out_dir.")
    outbox: str | None = Field(None, description="The alert stage's outbox, read for the alert history and snapshots; default: that stage's `outbox`.")
    alerts_kept: int = Field(1000, ge=1, le=1_000_000, description="Alerts held for the feed's history.")

    @field_validator("token", mode="before")
    @classmethod
    def _token_is_a_reference(cls, v: Any) -> Any:
        # Runs before the secret is resolved: a token written into the YAML itself ends up in every copy of it.
        if isinstance(v, str) and not is_reference(v):
            raise ValueError("write the token's place, not the token: ${WEB_TOKEN} (an environment variable) or file:PATH")
        return v

    @model_validator(mode="after")
    def _check(self) -> "WebOptions":
        if self.token is None and not _loopback(self.host):
            raise ValueError(f"host {self.host} is reachable from other machines: set a token (token: ${{WEB_TOKEN}} or file:PATH), or listen on 127.0.0.1")
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together")
        for f in (self.tls_certfile, self.tls_keyfile):
            if f is not None and not Path(f).is_file():
                raise ValueError(f"{f}: no such file")
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebStage(Stage):
    kind = "web"
    Options = WebOptions

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        o: WebOptions = self.options
        self.hub = Hub(max_alerts=o.alerts_kept)
        self.overlay = OverlayGeometry(ctx.config, ctx.config_path)  # follows edits of the zones and lines
        self._last_encode: dict[str, float] = {}  # per stream: when the bucket was last filled
        self._credit: dict[str, float] = {}
        self._last_frame: dict[str, float] = {}
        self._warned_no_pixels = False
        recordings = Path(o.recordings) if o.recordings else _record_dir(ctx)
        outbox = Path(o.outbox) if o.outbox else _outbox(ctx)
        # Bound here, so a port in use is this stage's error at start, not a log line from a server thread.
        family = socket.AF_INET6 if ":" in o.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((o.host, o.port))
        except OSError as exc:
            self.sock.close()
            raise RuntimeError(f"web: cannot listen on {o.host}:{o.port}: {exc.strerror or exc}") from None
        self.sock.listen(128)
        import uvicorn

        from stages.web.app import build_app

        token = o.token.get_secret_value() if o.token is not None else None
        # The editor writes the file the pipeline was started from; a replay runs from a copy, so nothing to edit there.
        app = build_app(self.hub, token, recordings, title=f"vidpipe: {ctx.config.mode}", config_path=ctx.config_path, editable=ctx.mode == "live",
                        outbox=outbox)  # fmt: skip
        config = uvicorn.Config(app, log_level="warning", ssl_certfile=o.tls_certfile, ssl_keyfile=o.tls_keyfile, timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="web-server", daemon=True)
        self.thread.start()
        scheme = "https" if o.tls_certfile else "http"
        self.log.info("web view on %s://%s:%d/", scheme, o.host, self.sock.getsockname()[1])

    def start_stream(self, stream: str, start: StreamStart) -> None:
        self.hub.publish(stream, None, ended=False)

    def end_stream(self, stream: str, end: StreamEnd) -> None:
        self.hub.publish(stream, None, ended=True)

    def process(self, batch: list[Frame]) -> list[Frame]:
        now = time.time()
        for frame in batch:
            self._figures(frame, now)
            if frame.analytics is not None and frame.analytics.alerts:
                self.hub.add_alerts([{**a.to_json(snapshot=False), "received_ts": now} for a in frame.analytics.alerts],
                                    {a.id: a.snapshot for a in frame.analytics.alerts if a.snapshot})  # fmt: skip
            self._picture(frame, now)
        return []

    def _figures(self, frame: Frame, now: float) -> None:
        view = self.hub.view(frame.stream)
        last = self._last_frame.get(frame.stream)
        self._last_frame[frame.stream] = now
        fps = view.fps
        if last is not None and now > last:
            fps = 1.0 / (now - last) if fps == 0 else 0.9 * fps + 0.1 / (now - last)  # smoothed over ~10 frames
        an = frame.analytics
        self.hub.publish(
            frame.stream, None, frames=view.frames + 1, seq=frame.seq, width=frame.width, height=frame.height, fps=fps,
            frame_age_s=max(0.0, now - frame.capture_ts), last_seen=now,
            counts=an.counts if an is not None and an.counts is not None else view.counts,
            occupancy=an.occupancy if an is not None and an.occupancy is not None else view.occupancy,
        )  # fmt: skip

    def _picture(self, frame: Frame, now: float) -> None:
        # A token bucket (at most 2 pictures ahead): max_fps on average, whatever the jitter of arrivals (a plain
        # minimum interval skips every frame that comes a little early: 6.6 of a 10 fps camera's 10 a second).
        rate = self.options.max_fps if self.hub.watched(frame.stream) else 1.0
        last = self._last_encode.get(frame.stream)
        credit = 1.0 if last is None else min(2.0, self._credit.get(frame.stream, 0.0) + (now - last) * rate)
        self._last_encode[frame.stream] = now
        if credit < 1.0:
            self._credit[frame.stream] = credit
            return
        self._credit[frame.stream] = credit - 1.0
        if frame.image is None:
            if not self._warned_no_pixels:
                self.log.warning("frames arrive without pixels: no live pictures (forward_pixels is off on the stage this one observes)")
                self._warned_no_pixels = True
            return
        self.hub.publish(frame.stream, self.render(frame), picture_ts=frame.capture_ts, picture_seq=frame.seq)

    def render(self, frame: Frame) -> bytes:
        """The frame as the live view shows it: detections, zones, lines and counts drawn, JPEG."""
        from stages.record import annotated_picture

        image = frame.image
        assert image is not None
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        out = annotated_picture(image, frame, self.overlay.get(frame.stream))
        o: WebOptions = self.options
        if out.shape[1] > o.max_width:
            out = cv2.resize(out, (o.max_width, round(out.shape[0] * o.max_width / out.shape[1])), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, o.jpeg_quality])
        if not ok:
            raise RuntimeError("JPEG encoding of a live picture failed")
        return bytes(buf.tobytes())

    def close(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.should_exit = True
            self.thread.join(timeout=3.0)
        sock = getattr(self, "sock", None)
        if sock is not None:
            sock.close()


def _outbox(ctx: StageContext) -> Path | None:
    from pipeline.registry import resolve_stage

    for st in ctx.config.stages:
        if st.kind == "alert":
            return Path(resolve_stage("alert").Options.model_validate(st.options).outbox)  # type: ignore[attr-defined]
    return None


def _record_dir(ctx: StageContext) -> Path | None:
    from pipeline.registry import resolve_stage

    for st in ctx.config.stages:
        if st.kind == "record":
            return Path(resolve_stage("record").Options.model_validate(st.options).out_dir)  # type: ignore[attr-defined]
    return None
