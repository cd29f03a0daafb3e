"""decode: reads one stream (file, image folder, RTSP/HTTP URL or V4L2 device) into frames.

Files and folders end; a corrupt or truncated file ends its stream with an error
that says so, and other streams (their own processes) go on. Network and device
sources are live: when they fail to open or stop delivering, the stream is marked
down, and they are reopened with exponential backoff.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pipeline.config import StreamConfig
from pipeline.protocol import KIND_EOS, KIND_HEARTBEAT, KIND_STARTED, Control, Frame, Heartbeat, StreamEnd, StreamStart
from pipeline.secrets import redact_url
from pipeline.stage import Source

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
FOLDER_DEFAULT_FPS = 10.0


def source_kind(source: str | int) -> str:
    """device, url, folder or file."""
    if isinstance(source, int):
        return "device"
    if source.lower().startswith(NETWORK_SCHEMES):
        return "url"
    if os.path.isdir(source):
        return "folder"
    return "file"


def redact(source: str | int) -> str:
    """The source as it may be logged or sent on: no password from rtsp://user:pass@host, no query string."""
    return f"/dev/video{source}" if isinstance(source, int) else redact_url(source)


MAX_DAMAGED_RUN = 50  # failed reads in a row that end a file: past this, nothing decodable follows


class SourceError(Exception):
    """A problem with the source that ends (file) or interrupts (live) the stream; `reason` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def open_live(stream: StreamConfig) -> cv2.VideoCapture:
    """A camera or URL source opened within its reconnect settings' timeouts (`stream.source` resolved already);
    SourceError when it does not open."""
    rc = stream.reconnect
    source = stream.source
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(rc.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(rc.read_timeout_s * 1000),
    ]
    if isinstance(source, int):
        cap = cv2.VideoCapture(source, cv2.CAP_V4L2)
    else:
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        what = f"V4L2 device /dev/video{source}" if isinstance(source, int) else redact(source)
        raise SourceError("open_failed", f"cannot open {what} (unreachable, refused or not a video stream)")
    return cap


def probe(stream: StreamConfig) -> str:
    """Whether a camera or URL source answers: opened and one frame read, as the decode stage would (`vidpipe check
    --cameras`). Returns what it sends (size, rate); SourceError (or ValueError: an unset ${NAME}) otherwise."""
    stream = stream.model_copy(update={"source": stream.resolved_source()})
    cap = open_live(stream)
    try:
        ok, image = cap.read()
        if not ok or image is None:
            raise SourceError("read_failed", f"{redact(stream.source)} opened but sent no frame within {stream.reconnect.read_timeout_s:g}s")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        return f"{image.shape[1]}x{image.shape[0]}" + (f" at {fps:g} fps" if fps else "")
    finally:
        cap.release()


class DecodeStage(Source):
    kind = "decode"

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        stream: StreamConfig = next(s for s in ctx.config.streams if s.id == ctx.stream)
        self.stream = stream.model_copy(update={"source": stream.resolved_source()})
        self.kind_of_source = source_kind(self.stream.source)
        self.realtime = ctx.config.realtime(self.stream)
        self.seq = 0
        self.damaged = 0  # frames of a file that could not be decoded, skipped
        # This process's epoch of the stream, in milliseconds of its start: a restarted decoder numbers its
        # frames from 0 again under a new epoch (even when its source then fails to open: its end of stream
        # ends the old epoch downstream).
        self.epoch = time.time_ns() // 1_000_000
        self._last_slot = -1
        self._up = ctx.metrics.stream_up.labels(ctx.name, self.stream.id)

    # -- helpers -----------------------------------------------------------------------

    def _error(self, reason: str) -> None:
        self.ctx.metrics.decode_errors.labels(self.ctx.name, self.stream.id, reason).inc()

    def _keep(self, pts: float) -> bool:
        """fps cap: keep a frame when it starts a new 1/fps slot (deterministic for files)."""
        if self.stream.fps is None or self.kind_of_source == "folder":
            return True
        slot = math.floor(pts * self.stream.fps + 1e-6)
        if slot <= self._last_slot:
            return False
        self._last_slot = slot
        return True

    def _frame(self, image: np.ndarray, pts: float, native_fps: float) -> Frame:
        if self.stream.resize is not None:
            w, h = self.stream.resize
            if (image.shape[1], image.shape[0]) != (w, h):
                image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        frame = Frame(
            stream=self.stream.id,
            seq=self.seq,
            pts=round(pts, 6),
            capture_ts=time.time(),
            width=image.shape[1],
            height=image.shape[0],
            image=image,
            epoch=self.epoch,
        )
        self.seq += 1
        return frame

    def _heartbeat(self, attempt: int) -> Control:
        """Tells downstream that this source is alive while its stream is down."""
        return Control(KIND_HEARTBEAT, self.stream.id, payload=Heartbeat(False, attempt), epoch=self.epoch)

    def _started(self, native_fps: float | None, frames: int | None = None, attempt: int = 1) -> Control:
        """Says the source is delivering. A live source that reconnects within the process keeps its epoch and
        goes on numbering (the frames in between never came)."""
        fps = self.stream.fps or native_fps
        start = StreamStart(self.epoch, redact(self.stream.source), self.stream.live, None if fps is None else round(fps, 3), frames, attempt)
        return Control(KIND_STARTED, self.stream.id, payload=start)

    def _eos(self, error: str | None = None) -> Control:
        self._up.set(0)
        end = StreamEnd(self.seq, redact(self.stream.source), error or None, self.ctx.stopping, damaged=self.damaged)
        return Control(KIND_EOS, self.stream.id, payload=end, epoch=self.epoch)

    # -- the stream ----------------------------------------------------------------------

    def frames(self) -> Iterator[Frame | Control]:
        try:
            if self.kind_of_source == "folder":
                yield from self._folder()
            elif self.kind_of_source == "file":
                yield from self._file()
            else:
                yield from self._live()
        except SourceError as exc:
            self._error(exc.reason)
            self.log.error("stream %s ends: %s", self.stream.id, exc)
            yield self._eos(str(exc))
            return
        yield self._eos()

    def _folder(self) -> Iterator[Frame | Control]:
        folder = Path(str(self.stream.source))
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError("open_failed", f"image folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        fps = self.stream.fps or FOLDER_DEFAULT_FPS
        self._up.set(1)
        yield self._started(self.stream.fps or FOLDER_DEFAULT_FPS, len(files))
        start = time.monotonic()
        index = 0
        while not self.ctx.stopping:
            for path in files:
                if self.ctx.stopping:
                    return
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    self._error("bad_image")
                    self.log.error("stream %s: cannot read image %s; skipped", self.stream.id, path.name)
                    continue
                pts = index / fps
                index += 1
                self._pace(start, pts)
                yield self._frame(image, pts, fps)
            if not self.stream.loop:
                return

    def _open_file(self, path: str) -> tuple[cv2.VideoCapture, int, float]:
        if not os.path.exists(path):
            raise SourceError("open_failed", f"file not found: {path}")
        if not os.access(path, os.R_OK):
            raise SourceError("open_failed", f"file not readable (permissions): {path}")
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise SourceError("open_failed", f"not a readable video (corrupt, truncated or unsupported format): {path}")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        if not (0 < fps < 1000):
            fps = 25.0
        return cap, count, fps

    def _file(self) -> Iterator[Frame | Control]:
        path = str(self.stream.source)
        cap, count, fps = self._open_file(path)
        self._up.set(1)
        yield self._started(fps, count or None)
        start = time.monotonic()
        offset = 0.0  # pts carried over loops
        try:
            while not self.ctx.stopping:
                index = 0
                last_ms = -1.0  # where in the file the last decoded frame was
                damaged = False  # a read failed in this pass over the file
                while not self.ctx.stopping:
                    ok, image = cap.read()
                    if not ok:
                        # A damaged packet fails one read; reading on gets the frames after it. Only when no
                        # frame comes any more is this the end of the file.
                        after = self._skip_damaged(cap)
                        if after is None:
                            break
                        image, failed = after
                        index += failed  # the frames that failed keep their places in the timeline
                        damaged = True
                    last_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                    if damaged:
                        # Around damage the decoder may also drop frames without failing a read: the container's
                        # clock says where this frame is, so the frames after keep their times.
                        at = round(last_ms / 1000.0 * fps)
                        if at > index:
                            self._count_damaged(at - index)
                            index = at
                    pts = offset + index / fps
                    index += 1
                    if not self._keep(pts):
                        continue
                    self._pace(start, pts)
                    yield self._frame(image, pts, fps)
                if self.ctx.stopping:
                    return
                # Container frame counts are estimates for some formats: only a clear shortfall is an error.
                if index == 0:
                    raise SourceError("truncated", f"no frame could be decoded from {path} (corrupt or not a video)")
                tolerance = max(2, count // 100)
                if count > 0 and index < count - tolerance:
                    if last_ms / 1000.0 * fps < count - 1 - tolerance:
                        raise SourceError(
                            "truncated", f"{path} ended after {index} of {count} frames (truncated or corrupt file)"
                        )
                    # It was read to its end, but the decoder dropped frames around damage without failing a read.
                    self._count_damaged(count - index)
                if self.damaged:
                    self.log.warning("stream %s: %d damaged frames of %s were skipped", self.stream.id, self.damaged, path)
                if not self.stream.loop:
                    return
                offset += index / fps
                cap.release()
                cap, count, fps = self._open_file(path)
        finally:
            cap.release()

    def _skip_damaged(self, cap: cv2.VideoCapture) -> tuple[np.ndarray, int] | None:
        """After a failed read: the next frame that decodes and the failed reads before it (each counted as a
        damaged frame); None at the end of the file (no frame within MAX_DAMAGED_RUN reads)."""
        for failed in range(1, MAX_DAMAGED_RUN + 1):
            ok, image = cap.read()
            if ok:
                self._count_damaged(failed)
                return image, failed
        return None

    def _count_damaged(self, n: int) -> None:
        self.damaged += n
        self.ctx.metrics.decode_errors.labels(self.ctx.name, self.stream.id, "damaged_frame").inc(n)

    def _pace(self, start: float, pts: float) -> None:
        """Real-time pacing of files and folders standing in for cameras."""
        if self.realtime:
            delay = start + pts - time.monotonic()
            if delay > 0:
                self.ctx.stop_event.wait(delay)

    def _live(self) -> Iterator[Frame | Control]:
        rc = self.stream.reconnect
        backoff = rc.initial_s
        attempt = 0
        start = time.monotonic()
        while not self.ctx.stopping:
            attempt += 1
            try:
                cap = open_live(self.stream)
            except SourceError as exc:
                self._error(exc.reason)
                self._up.set(0)
                if rc.max_attempts is not None and attempt >= rc.max_attempts:
                    raise SourceError(exc.reason, f"{exc}; gave up after {attempt} attempts") from None
                self.log.warning("stream %s: %s (attempt %d); retrying in %.1fs", self.stream.id, exc, attempt, backoff)
                yield self._heartbeat(attempt)
                self.ctx.stop_event.wait(backoff)
                backoff = min(backoff * 2, rc.max_s)
                continue
            native = cap.get(cv2.CAP_PROP_FPS) or 0.0
            native = native if 0 < native < 1000 else 25.0
            self.log.info("stream %s: opened %s (%.1f fps)", self.stream.id, redact(self.stream.source), native)
            self._up.set(1)
            yield self._started(native, attempt=attempt)
            got = 0
            try:
                while not self.ctx.stopping:
                    ok, image = cap.read()
                    if not ok:
                        break
                    got += 1
                    pts = time.monotonic() - start
                    if self._keep(pts):
                        yield self._frame(image, pts, native)
            finally:
                cap.release()
            if self.ctx.stopping:
                return
            self._error("read_failed")
            self._up.set(0)
            if got:
                backoff, attempt = rc.initial_s, 0  # it worked for a while: start the backoff again
            self.log.warning(
                "stream %s: source stopped delivering after %d frames; reconnecting in %.1fs", self.stream.id, got, backoff
            )
            yield self._heartbeat(attempt)
            self.ctx.stop_event.wait(backoff)
            backoff = min(backoff * 2, rc.max_s)
