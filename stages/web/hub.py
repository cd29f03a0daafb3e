"""What the web stage's thread hands the HTTP server's thread: each stream's newest picture and figures, and the
alerts, with a way for the server's coroutines to wait for the next of each without ever blocking the stage.

The stage thread writes under a lock and wakes the server's event loop with call_soon_threadsafe; a slow browser
only ever gets the newest picture (the ones in between are skipped for it), so it costs the pipeline nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

SNAPSHOTS_KEPT = 100  # alert snapshots held in memory (about 100 KB each)


@dataclass
class StreamView:
    stream: str
    jpeg: bytes | None = None  # the newest annotated picture sent to viewers
    version: int = 0  # bumped with every new picture
    picture_ts: float = 0.0  # capture time of the pictured frame
    picture_seq: int = -1
    frames: int = 0  # frames seen
    seq: int = -1
    width: int = 0
    height: int = 0
    fps: float = 0.0  # frames seen per second, smoothed
    frame_age_s: float = 0.0  # capture to here, of the newest frame
    counts: dict[str, dict[str, int]] | None = None
    occupancy: dict[str, int] | None = None
    ended: bool = False
    last_seen: float = 0.0

    def info(self) -> dict[str, Any]:
        return {
            "id": self.stream, "frames": self.frames, "seq": self.seq, "width": self.width, "height": self.height,
            "fps": round(self.fps, 2), "frame_age_s": round(self.frame_age_s, 3), "counts": self.counts,
            "occupancy": self.occupancy, "ended": self.ended, "live_url": f"/streams/{self.stream}/live.mjpg",
        }  # fmt: skip


@dataclass
class Hub:
    max_alerts: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)
    streams: dict[str, StreamView] = field(default_factory=dict)
    alerts: deque[dict[str, Any]] = field(default_factory=deque)
    alert_count: int = 0  # alerts ever added: an SSE client resumes after the last one it got
    viewers: dict[str, int] = field(default_factory=dict)  # open live connections per stream
    snapshots: dict[str, bytes] = field(default_factory=dict)  # of the newest alerts, by id (the outbox has them all)
    loop: asyncio.AbstractEventLoop | None = None
    _changed: asyncio.Event | None = None

    # -- the stage's thread ------------------------------------------------------------------------

    def view(self, stream: str) -> StreamView:
        with self.lock:
            return self.streams.setdefault(stream, StreamView(stream))

    def publish(self, stream: str, jpeg: bytes | None, **figures: Any) -> None:
        """A stream's newest figures and (if encoded) picture."""
        with self.lock:
            v = self.streams.setdefault(stream, StreamView(stream))
            for k, value in figures.items():
                setattr(v, k, value)
            if jpeg is not None:
                v.jpeg = jpeg
                v.version += 1
        self._wake()

    def add_alerts(self, alerts: list[dict[str, Any]], snapshots: dict[str, bytes] | None = None) -> None:
        """Alerts as JSON maps (no snapshot in them); `snapshots` by alert id, the newest SNAPSHOTS_KEPT held."""
        with self.lock:
            for a in alerts:
                a["snapshot_url"] = f"/api/alerts/{a['id']}/snapshot.jpg" if snapshots and a["id"] in snapshots else None
                self.alerts.append(a)
                self.alert_count += 1
            while len(self.alerts) > self.max_alerts:
                self.alerts.popleft()
            self.snapshots.update(snapshots or {})
            while len(self.snapshots) > SNAPSHOTS_KEPT:
                self.snapshots.pop(next(iter(self.snapshots)))
        self._wake()

    def snapshot(self, alert_id: str) -> bytes | None:
        with self.lock:
            return self.snapshots.get(alert_id)

    def watched(self, stream: str) -> bool:
        with self.lock:
            return self.viewers.get(stream, 0) > 0

    def _wake(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._set_changed)
            except RuntimeError:  # the loop closed in between: the server is stopping
                pass

    # -- the server's event loop ---------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._changed = asyncio.Event()

    def _set_changed(self) -> None:
        # Every waiter wakes on the event that was current; the next wait gets a fresh one.
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        """Returns at the next publish or alert (or after `timeout` seconds)."""
        event = self._changed
        if event is None:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def picture(self, stream: str) -> tuple[bytes | None, int, float, int]:
        """The newest picture, its version, and its frame's capture time and seq."""
        with self.lock:
            v = self.streams.get(stream)
            return (v.jpeg, v.version, v.picture_ts, v.picture_seq) if v is not None else (None, 0, 0.0, -1)

    def infos(self) -> list[dict[str, Any]]:
        now = time.time()
        with self.lock:
            out = []
            for v in sorted(self.streams.values(), key=lambda s: s.stream):
                info = v.info()
                info["seconds_since_frame"] = round(now - v.last_seen, 3) if v.last_seen else None
                out.append(info)
            return out

    def alerts_since(self, count: int) -> tuple[list[dict[str, Any]], int]:
        """The alerts added after the first `count` ever added (those still held), and the count now."""
        with self.lock:
            new = min(self.alert_count - count, len(self.alerts))
            return (list(self.alerts)[len(self.alerts) - new :] if new > 0 else []), self.alert_count

    def viewer(self, stream: str, delta: int) -> None:
        with self.lock:
            self.viewers[stream] = max(0, self.viewers.get(stream, 0) + delta)
