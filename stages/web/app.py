"""The web stage's HTTP server: the page, the live pictures (MJPEG), the alert feed (server-sent events) and
history, the recordings, and the JSON API under it (OpenAPI at /openapi.json, browsable at /docs).

Access: every route but /healthz needs the token when one is configured (a bearer header, the `vidpipe_token`
cookie the page sets, or `?token=` for a first visit); the stage refuses to serve beyond loopback without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from stages.alert.outbox import OutboxReader
from stages.web.editor import GeometryRejected, read_geometry, write_geometry
from stages.web.hub import Hub
from stages.web.recordings import SAFE_NAME, VIDEO_TYPES, export_clip, list_recordings, moment

PAGE = Path(__file__).with_name("page.html")
COOKIE = "vidpipe_token"
BOUNDARY = "vidpipe-frame"


class GeometryEdit(BaseModel):
    """A stream's zones and lines as the editor draws them: pixels of `frame_size` (the picture it drew on)."""

    frame_size: tuple[int, int] = Field(description="[width, height] of the picture the points are in")
    zones: dict[str, list[tuple[float, float]]] = Field(default_factory=dict, description="polygons by name, [[x, y], ...]")
    lines: dict[str, list[tuple[float, float]]] = Field(default_factory=dict, description="directed lines by name, [[x, y], [x, y]] (a -> b)")


def build_app(hub: Hub, token: str | None, recordings: Path | None, title: str = "vidpipe", config_path: Path | None = None,
              editable: bool = False, outbox: Path | None = None) -> FastAPI:  # fmt: skip
    reader = OutboxReader(outbox) if outbox is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub.attach(asyncio.get_running_loop())  # from now on the stage's thread can wake the waiting requests
        yield

    app = FastAPI(title=f"{title} web view", description="Live streams, alerts and recordings of a vidpipe pipeline.", version="1", lifespan=lifespan)

    @app.middleware("http")
    async def check_token(request: Request, call_next: Any) -> Response:
        if token is None or request.url.path == "/healthz":
            return await call_next(request)  # type: ignore[no-any-return]
        given = request.query_params.get("token") or request.cookies.get(COOKIE)
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"detail": "a token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN once"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        response: Response = await call_next(request)
        if request.query_params.get("token"):  # a first visit by link: the page's own requests carry the cookie
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text().replace("{{title}}", title))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/streams", summary="Every stream: frames seen, fps, frame age, line counts and zone occupancy")
    async def streams() -> list[dict[str, Any]]:
        return hub.infos()

    @app.get("/streams/{stream}/frame.jpg", summary="A stream's newest annotated picture", response_class=Response)
    async def frame(stream: str) -> Response:
        jpeg, _, ts, seq = hub.picture(stream)
        if jpeg is None:
            raise HTTPException(404, f"no picture of stream {stream!r} yet")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store", "X-Capture-Ts": f"{ts:.6f}", "X-Seq": str(seq)})

    @app.get("/streams/{stream}/live.mjpg", summary="A stream live, as MJPEG (multipart/x-mixed-replace)", response_class=StreamingResponse)
    async def live(stream: str, request: Request) -> StreamingResponse:
        if stream not in {s["id"] for s in hub.infos()}:
            raise HTTPException(404, f"no stream {stream!r}")

        async def parts() -> AsyncIterator[bytes]:
            hub.viewer(stream, +1)
            try:
                sent = -1
                while not await request.is_disconnected():
                    jpeg, version, ts, seq = hub.picture(stream)
                    if jpeg is not None and version != sent:
                        sent = version
                        # The frame's capture time and seq ride in each part's headers: a client measures frame age with them.
                        head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\nX-Capture-Ts: {ts:.6f}\r\nX-Seq: {seq}\r\n\r\n"
                        yield head.encode() + jpeg + b"\r\n"
                    else:
                        await hub.changed(1.0)
            finally:
                hub.viewer(stream, -1)

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}", headers={"Cache-Control": "no-store"})

    @app.get("/api/alerts", summary="Alert history, newest first, with filters and paging: the alert stage's outbox when there is one, "
             "else the alerts this server saw since it started")
    async def alerts(
        stream: str | None = None, rule: str | None = None, since: float | None = Query(None, description="Unix seconds"),
        until: float | None = None, limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:  # fmt: skip
        if reader is not None and reader.path.is_file():
            total, page = await asyncio.to_thread(reader.history, stream, rule, since, until, limit, offset)
            rows = [{**a.to_json(snapshot=False), "snapshot_url": f"/api/alerts/{a.id}/snapshot.jpg" if a.snapshot else None} for a in page]
            return {"source": "outbox", "total": total, "offset": offset, "alerts": rows}
        held, _ = hub.alerts_since(0)
        rows = [
            a for a in reversed(held)
            if (stream is None or a["stream"] == stream) and (rule is None or a["rule"] == rule)
            and (since is None or a["capture_ts"] >= since) and (until is None or a["capture_ts"] <= until)
        ]  # fmt: skip
        return {"source": "feed", "total": len(rows), "offset": offset, "alerts": rows[offset : offset + limit]}

    @app.get("/api/alerts/{alert_id}/snapshot.jpg", summary="An alert's snapshot: the frame with its zone or line and objects", response_class=Response)
    async def alert_snapshot(alert_id: str) -> Response:
        jpeg = hub.snapshot(alert_id)
        if jpeg is None and reader is not None:
            alert = await asyncio.to_thread(reader.get, alert_id)
            jpeg = alert.snapshot if alert is not None else None
        if jpeg is None:
            raise HTTPException(404, "no snapshot of that alert")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/alerts/live", summary="New alerts as server-sent events (event: alert, data: the alert as JSON)", response_class=StreamingResponse)
    async def alerts_live(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            _, count = hub.alerts_since(0)
            yield b": connected\n\n"
            while not await request.is_disconnected():
                new, count = hub.alerts_since(count)
                for a in new:
                    yield f"event: alert\nid: {a['id']}\ndata: {json.dumps(a)}\n\n".encode()
                if not new:
                    await hub.changed(5.0)
                    yield b": keep-alive\n\n"  # a comment: keeps proxies from closing an idle stream

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/streams/{stream}/geometry", summary="A stream's zones and lines, in pixels of its analytics frame size, as the config file has them")
    async def geometry(stream: str) -> dict[str, Any]:
        if config_path is None:
            raise HTTPException(404, "the web stage does not know the config file")
        try:
            out = await asyncio.to_thread(read_geometry, config_path, stream)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        return {**out, "editable": editable}

    @app.put("/api/streams/{stream}/geometry", summary="Replace a stream's zones and lines: checked like `vidpipe check`, written into the config file, taken by analyze without a restart")
    async def set_geometry(stream: str, edit: GeometryEdit) -> dict[str, Any]:
        if config_path is None or not editable:
            raise HTTPException(409, "only a live pipeline's config is edited here (a replay's is a copy): edit the file and run again")
        try:
            await asyncio.to_thread(write_geometry, config_path, stream, edit.frame_size, {k: [list(p) for p in v] for k, v in edit.zones.items()},
                                    {k: [list(p) for p in v] for k, v in edit.lines.items()})  # fmt: skip
        except GeometryRejected as exc:
            return JSONResponse({"detail": "not saved: the config would not be valid", "problems": [{"path": p, "message": m} for p, m in exc.problems]},
                                status_code=422)  # type: ignore[return-value]  # fmt: skip
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except OSError as exc:
            raise HTTPException(409, f"cannot write {config_path}: {exc.strerror or exc}") from None
        return {"saved": str(config_path), **(await asyncio.to_thread(read_geometry, config_path, stream))}

    @app.get("/api/recordings", summary="The recorded videos, newest first: live segments with their stream, times, frames and alerts")
    async def recordings_list() -> list[dict[str, Any]]:
        return [r.info() for r in list_recordings(recordings)]

    @app.get("/api/recordings/moment", summary="The recorded segment of a stream that holds a capture time, and the offset into it")
    async def recordings_moment(stream: str, ts: float = Query(description="capture time, Unix seconds")) -> dict[str, Any]:
        found = moment(list_recordings(recordings), stream, ts)
        if found is None:
            raise HTTPException(404, f"no closed segment of stream {stream!r} holds that time (yet)")
        rec, offset = found
        return {**rec.info(), "offset_s": round(offset, 3)}

    @app.get("/api/clip", summary="An MP4 of a stream between two capture times, cut from the segments without re-encoding", response_class=FileResponse)
    async def clip(stream: str, start: float, end: float) -> FileResponse:
        if not end > start or end - start > 3600:
            raise HTTPException(422, "end must be after start, at most an hour later")
        folder = Path(tempfile.mkdtemp(prefix="vidpipe-clip-"))
        path = folder / f"{stream}-{int(start)}-{int(end)}.mp4"
        try:
            await asyncio.to_thread(export_clip, list_recordings(recordings), stream, start, end, path)
        except ValueError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise HTTPException(404, str(exc)) from None
        return FileResponse(path, media_type="video/mp4", filename=path.name, background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))

    @app.get("/recordings/{name}", summary="A recorded video (byte ranges supported, for seeking)", response_class=FileResponse)
    async def recording(name: str) -> FileResponse:
        if recordings is None or not SAFE_NAME.fullmatch(name) or Path(name).suffix not in VIDEO_TYPES:
            raise HTTPException(404, "no such recording")
        path = recordings / name
        if not path.is_file():
            raise HTTPException(404, "no such recording")
        return FileResponse(path, media_type=VIDEO_TYPES[path.suffix])

    return app

