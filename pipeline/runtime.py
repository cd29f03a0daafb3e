"""Runs one stage process: sockets, batching, delivery modes, metrics, errors and shutdown.

Replay: sends block, nothing is shed, batches follow from the input alone, and a
stop (SIGTERM/SIGINT) drains: sources end their stream and every stage finishes
what it holds before it exits. Live: a source keeps at most `live.source_queue`
frames and sheds the oldest when downstream is full; stages shed frames that are
already too old on arrival or that cannot be handed on in time; every shed frame
is counted with its reason.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import zmq

from pipeline.batching import Batcher
from pipeline.config import PipelineConfig
from pipeline.curve import Curve, ZapHandler, load_public, load_secret
from pipeline.metrics import MetricsServer, StageMetrics
from pipeline.protocol import KIND_EOS, KIND_HEARTBEAT, KIND_STARTED, Control, Frame, ProtocolError, StreamEnd, StreamStart
from pipeline.registry import resolve_stage
from pipeline.stage import Source, Stage, StageContext, StageFailure
from pipeline.transport import PUB, Receiver, Secure, Sender

POLL_MS = 200
# Replay: the stage stopped before all of its streams ended complete. A supervisor restarts it (and the
# streams from their start: see Launcher), so the output ends up as if nothing had happened.
EXIT_INCOMPLETE = 3
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
HEALTHY_WITHIN_S = 15.0
# A stopping replay stage leaves once its input has been quiet this long. The launcher stops stages in
# order and signals one only after its upstream stages exited, and a sender exits only once its queue was
# handed on (linger; it queues only to connected peers), so by then everything is already in the socket.
DRAIN_QUIET_S = 0.25


# The launcher's "stop now, nothing to drain" (a stop before every stage was in its loop: nothing has reached
# the results yet); SIGTERM stops a replay stage after it drained.
STOP_NOW = signal.SIGUSR2


class _StoppedLoading(BaseException):  # not an Exception: no `except Exception` in a loader may swallow it
    """A stop while the stage was still being built (loading models): no socket is open yet, so nothing can
    have been sent to it, and there is nothing to drain."""


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _carries_alerts(frame: Frame) -> bool:
    return frame.analytics is not None and bool(frame.analytics.alerts)


class StageRunner:
    def __init__(self, config: PipelineConfig, stage_name: str, stream: str | None = None, metrics_port: int | None = None,
                 restarted: bool = False, config_path: Path | None = None):  # fmt: skip
        self.config = config
        self.restarted = restarted  # this process replaces one of the stage that was lost (see _refused_epoch)
        self.stage_config = config.stage(stage_name)
        self.name = stage_name
        self.cls = resolve_stage(self.stage_config.kind)
        if self.cls.source and stream is None:
            raise ValueError(f"stage {stage_name} is a source: name the stream it reads (--stream)")
        if stream is not None and stream not in [s.id for s in config.streams]:
            raise ValueError(f"no stream named {stream!r} in the config")
        self.stream = stream
        if stream is not None:
            try:
                next(s for s in config.streams if s.id == stream).resolved_source()
            except ValueError as exc:  # a config problem: said once, not a crash the supervisor retries
                raise ValueError(f"stream {stream}: source: {exc}") from None
        self.log = logging.getLogger(f"vidpipe.{stage_name}" + (f".{stream}" if stream else ""))
        self.metrics = StageMetrics(stage_name)
        options = self.cls.Options.model_validate(self.stage_config.options)
        self.ctx = StageContext(stage_name, config, self.stage_config, options, self.metrics, self.log, stream, config_path=config_path)
        self.live = config.mode == "live"
        self.zctx: zmq.Context = zmq.Context.instance()
        self._stop_at: float | None = None
        self._loading = False  # a stop now interrupts building the stage (see _StoppedLoading)
        self._now = False  # told to stop without draining (STOP_NOW)
        self._refused = 0
        self._curve_keys: Curve | None = None
        self._zap: ZapHandler | None = None
        self._curve()  # a missing or unreadable key stops the stage before it opens anything
        port = metrics_port if metrics_port is not None else config.metrics_port(stage_name, stream)
        self.server: MetricsServer | None = None
        if port is not None:
            self.server = MetricsServer(self.metrics.registry, config.metrics.host, port, self._healthy)
            self.log.info("metrics on http://%s:%d/metrics", config.metrics.host, self.server.port)

    # -- lifecycle ---------------------------------------------------------------------

    def _healthy(self) -> bool:
        return self.ctx.problem is None and time.time() - self.metrics.last_beat < HEALTHY_WITHIN_S

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == STOP_NOW:
            self._now = True
        if not self.ctx.stop_event.is_set():
            self.log.info("%s: stopping (%s)", signal.Signals(signum).name, "draining" if not (self.live or self._now) else "now")
            self._stop_at = time.monotonic()
        self.ctx.stop_event.set()
        if self._loading:
            raise _StoppedLoading

    def _drain_expired(self) -> bool:
        return self._now or self._stop_at is not None and time.monotonic() - self._stop_at > self.config.transport.drain_timeout_s

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(STOP_NOW, self._on_signal)
        stage: Stage | None = None
        try:
            self._loading = True
            try:
                stage = self.cls(self.ctx)
            finally:
                self._loading = False
            if isinstance(stage, Source):
                complete = self._run_source(stage)
            else:
                complete = self._run_processor(stage)
            return 0 if complete or self.live else EXIT_INCOMPLETE
        except (_StoppedLoading, Exception) as exc:
            if isinstance(exc, _StoppedLoading) or (stage is None and self.ctx.stop_event.is_set()):
                # Stopped while loading (also when the stop hit an extension module's import, which then
                # reports an error of its own): nothing was received, nothing to drain.
                self.log.info("stopped while loading")
                return 0 if self.live else EXIT_INCOMPLETE
            if isinstance(exc, StageFailure):
                self.log.error("stage failed: %s", exc)  # says what and where; no traceback needed
            else:
                self.log.exception("stage failed")
            return 1
        finally:
            if stage is not None:
                try:
                    stage.close()
                except Exception:
                    self.log.exception("close failed")
            # Sockets are closed by now; terming the context waits (up to their linger) until
            # what they still queue has been handed to the peer. Exiting without this drops it:
            # the tail of a stream and its end-of-stream, whenever downstream was still busy.
            if self._zap is not None:
                self._zap.close()  # its socket too must close before the context can end
            self.zctx.term()
            if self.server:
                self.server.close()

    def _linger_ms(self) -> int:
        return 0 if self.live else int(self.config.transport.drain_timeout_s * 1000)

    def _open_outputs(self) -> tuple[Sender | None, Sender | None]:
        hwm = self.config.transport.hwm
        endpoint = self.config.output_endpoint(self.name)
        out = None
        if endpoint:
            out = Sender(self.zctx, endpoint, hwm=hwm, linger_ms=self._linger_ms(), secure=self._client_of(self.config.downstream(self.name)))
        pub = None
        publish = self.config.publish_endpoint(self.name)
        if publish:
            pub = Sender(self.zctx, publish, pattern=PUB, hwm=hwm, secure=self._server("publish", self.config.observers(self.name)))
        return out, pub

    # -- CURVE (pipeline/curve.py) ------------------------------------------------------------

    def _curve(self) -> Curve | None:
        folder = self.config.transport.curve_keys
        if folder is None:
            return None
        if self._curve_keys is None:
            public, secret = load_secret(folder, self.name)
            self._curve_keys = Curve(self.name, public, secret)
        return self._curve_keys

    def _server(self, domain: str, peers: list[str]) -> Secure | None:
        """A CURVE server answering only `peers` (their public keys from the keys folder)."""
        curve = self._curve()
        if curve is None:
            return None
        folder = self.config.transport.curve_keys
        assert folder is not None
        keys = {load_public(folder, p): p for p in peers}
        if self._zap is None:
            self._zap = ZapHandler(self.zctx, curve)
        return lambda sock: curve.server(sock, domain, keys)

    def _client_of(self, server: str | None) -> Secure | None:
        """A CURVE client that talks only to stage `server` (pinned by its public key)."""
        curve = self._curve()
        if curve is None or not server:
            return None
        folder = self.config.transport.curve_keys
        assert folder is not None
        key = load_public(folder, server)
        return lambda sock: curve.client(sock, key)

    # -- sending -----------------------------------------------------------------------

    def _send(self, sender: Sender, msg: Frame | Control, blocking: bool) -> bool:
        """Blocking sends wait in slices so that a stop is noticed; they give up only when a drain expires."""
        pixels = self.stage_config.forward_pixels
        if not blocking:
            return sender.send(msg, pixels, timeout_ms=self.config.live.send_timeout_ms)
        while True:
            if sender.send(msg, pixels, timeout_ms=POLL_MS):
                return True
            self.metrics.beat()
            if self._drain_expired():
                return False

    def _emit(self, out: Sender | None, pub: Sender | None, frame: Frame) -> None:
        frame.sender = self.name
        if out is not None:
            # Live mode sheds a frame downstream cannot take in time, but never the alerts analyze raised.
            if not self._send(out, frame, blocking=not self.live or _carries_alerts(frame)):
                reason = "send_timeout" if self.live else "drain_timeout"
                self.metrics.frames_shed.labels(self.name, frame.stream, reason).inc()
                return
        if pub is not None:
            pub.send(frame, self.stage_config.forward_pixels, timeout_ms=0)  # observers may lag: never wait
        self.metrics.frames_out.labels(self.name, frame.stream).inc()

    def _emit_control(self, out: Sender | None, pub: Sender | None, msg: Control) -> None:
        msg.sender = self.name
        if msg.kind == KIND_HEARTBEAT:  # only says "still here": never worth waiting for
            if out is not None:
                out.send(msg, timeout_ms=0)
            if pub is not None:
                pub.send(msg, timeout_ms=0)
            return
        # Other control messages are never shed, except by a live stage that is stopping: its
        # downstream may be gone already, and live stops must be prompt.
        blocking = not (self.live and self.ctx.stopping)
        if out is not None and not self._send(out, msg, blocking=blocking) and not self._now:
            self.log.error("could not hand on %s of stream %s before the drain timeout", msg.kind, msg.stream)
        if pub is not None:
            pub.send(msg, timeout_ms=0)

    # -- source ------------------------------------------------------------------------

    def _run_source(self, stage: Source) -> bool:
        """Reads the stream and hands it on; True when it ended by itself (not stopped)."""
        assert self.stream is not None
        out, pub = self._open_outputs()
        queue: deque[Frame] = deque()
        limit = self.config.live.source_queue
        m = self.metrics
        ended = complete = False
        epoch = 0
        try:
            for item in stage.frames():
                m.beat()
                self._count_refused(pub)
                epoch = max(epoch, item.epoch)  # heartbeats before a first start carry none
                if isinstance(item, Control):
                    self._flush_source_queue(queue, out, pub, final=True)
                    ended = item.kind == KIND_EOS
                    complete = ended and item.end is not None and not item.end.stopped
                    item.stream = item.stream or self.stream
                    self._emit_control(out, pub, item)
                    if ended:
                        break
                    continue
                m.frames_in.labels(self.name, item.stream).inc()
                if not self.live:
                    self._emit(out, pub, item)
                    continue
                if len(queue) >= limit:
                    old = queue.popleft()
                    m.frames_shed.labels(self.name, old.stream, "downstream_full").inc()
                queue.append(item)
                self._flush_source_queue(queue, out, pub, final=False)
            if not ended:
                self._flush_source_queue(queue, out, pub, final=True)
                self._emit_control(out, pub, Control(KIND_EOS, self.stream, payload=StreamEnd(stopped=self.ctx.stopping), epoch=epoch))
        finally:
            self._close_outputs(out, pub)
        return complete

    def _close_outputs(self, out: Sender | None, pub: Sender | None) -> None:
        if out is not None:
            if self.live and not self.ctx.stopping:
                # A live stage whose streams ended (not stopped) still owes downstream the end-of-stream
                # it queued; with live's linger of 0 it would be dropped whenever downstream was busy.
                out.sock.setsockopt(zmq.LINGER, int(self.config.transport.drain_timeout_s * 1000))
            elif self._now:  # told to stop without draining: nothing queued is waited for
                out.sock.setsockopt(zmq.LINGER, 0)
            out.close()
        if pub is not None:
            pub.close()

    def _flush_source_queue(self, queue: deque[Frame], out: Sender | None, pub: Sender | None, final: bool) -> None:
        """Hand on queued frames without waiting (live); at the end, wait up to the send timeout for each."""
        while queue:
            frame = queue[0]
            frame.sender = self.name
            ok = True
            if out is not None:
                ok = out.send(frame, self.stage_config.forward_pixels, timeout_ms=self.config.live.send_timeout_ms if final else 0)
            if not ok:
                if final:
                    queue.popleft()
                    self.metrics.frames_shed.labels(self.name, frame.stream, "send_timeout").inc()
                    continue
                return
            queue.popleft()
            if pub is not None:
                pub.send(frame, self.stage_config.forward_pixels, timeout_ms=0)
            self.metrics.frames_out.labels(self.name, frame.stream).inc()

    # -- processing stage ---------------------------------------------------------------

    def _run_processor(self, stage: Stage) -> bool:
        """Processes until every stream has ended (or a stop); True when every stream ended complete.

        In replay a stream whose source was stopped (an end of stream that says so) may start again (the
        supervisor restarts a stopped source): the stage waits for that, unless it is stopping itself."""
        endpoint = self.config.input_endpoint(self.name)
        if endpoint is None:
            raise ValueError(f"stage {self.name} has no input endpoint")
        t = self.config.transport
        upstream = self.config.upstream(self.name)
        if self.stage_config.input_pattern == "sub":  # an observer is a client of the one publisher (config checks)
            server_name = upstream[0] if upstream else None
            secure = self._client_of(server_name)
        else:
            secure, server_name = self._server("input", upstream), None
        receiver = Receiver(
            self.zctx, endpoint, pattern=self.stage_config.input_pattern, hwm=t.hwm, max_message_bytes=int(t.max_message_mb * 2**20),
            secure=secure, server_name=server_name,
        )  # fmt: skip
        out, pub = self._open_outputs()
        bc = self.stage_config.batch
        batcher = Batcher(bc.max_size, bc.max_wait_ms / 1000.0, deterministic=not self.live)
        expected = {s.id for s in self.config.streams}
        senders = set(self.config.upstream(self.name))
        self.metrics.disconnections.labels(self.name)  # the series exists from 0
        ended: set[str] = set()  # streams whose current epoch ended
        complete: set[str] = set()  # ... and not because its source was stopped
        m = self.metrics
        max_age = self.config.live.max_frame_age_s
        idle_since: float | None = None
        try:
            while True:
                m.beat()
                now = time.monotonic()
                if self.ctx.stopping:
                    if self.live or self._drain_expired() or expected <= ended:
                        break
                    # Replay drain: finish what is queued; stop once the input has been quiet for a while.
                    idle_since = idle_since or now
                    if now - idle_since > DRAIN_QUIET_S:
                        break
                deadline = batcher.next_deadline()
                timeout = POLL_MS if deadline is None else max(0, min(POLL_MS, int((deadline - now) * 1000) + 1))
                try:
                    msg = receiver.recv(timeout)
                except ProtocolError as exc:
                    m.messages_rejected.labels(self.name, exc.reason).inc()
                    self.log.error("rejected a message: %s", exc)
                    continue
                if msg is not None:
                    idle_since = None
                dropped = receiver.disconnections()
                if dropped:
                    m.disconnections.labels(self.name).inc(dropped)
                self._count_refused(receiver, pub)
                for batch in batcher.due(time.monotonic()):
                    self._run_batch(stage, batch, out, pub)
                for frame in stage.tick():
                    self._emit(out, pub, frame)
                if msg is None:
                    continue
                refused = self._refusal(msg, expected, senders)
                if refused:
                    m.messages_rejected.labels(self.name, refused[0]).inc()
                    self._log_refusal(refused[1])
                    continue
                m.last_seen.labels(self.name, msg.stream).set(time.time())
                if isinstance(msg, Frame):
                    m.frames_in.labels(self.name, msg.stream).inc()
                    age = time.time() - msg.capture_ts
                    m.frame_age.labels(self.name).observe(max(age, 0.0))
                    if self.live and age > max_age and not _carries_alerts(msg):  # an alert raised is never shed
                        m.frames_shed.labels(self.name, msg.stream, "stale").inc()
                        continue
                    superseded = self._refused_epoch(msg.stream, msg.epoch)
                    if superseded or not self._admit(stage, batcher, msg.stream, msg.epoch, None, out, pub):
                        m.frames_shed.labels(self.name, msg.stream, superseded or "old_epoch").inc()
                        continue
                    for batch in batcher.add(msg, time.monotonic()):
                        self._run_batch(stage, batch, out, pub)
                elif msg.kind == KIND_EOS:
                    # A stream that ends before its first frame (a file that cannot be opened) is begun here,
                    # so the stage always sees start_stream before end_stream.
                    if self._refused_epoch(msg.stream, msg.epoch) or not self._admit(stage, batcher, msg.stream, msg.epoch, None, out, pub):
                        continue  # the end of an epoch left behind already (its source restarted)
                    self._end_epoch(stage, batcher, msg.stream, msg.end, out, pub)
                    m.streams_ended.labels(self.name, msg.stream, msg.end.outcome).inc()
                    self._emit_control(out, pub, msg)
                    ended.add(msg.stream)
                    if not msg.end.stopped:
                        complete.add(msg.stream)
                    if expected <= complete or (expected <= ended and (self.live or self.ctx.stopping)):
                        self.log.info("all %d streams ended", len(expected))
                        break
                elif msg.kind == KIND_STARTED:
                    if self._admit(stage, batcher, msg.stream, msg.epoch, msg.start, out, pub):
                        ended.discard(msg.stream)
                        complete.discard(msg.stream)
                        self._emit_control(out, pub, msg)
                else:
                    self._emit_control(out, pub, msg)
            shed_reason = "shutdown" if self.live else None
            for batch in batcher.flush_all():
                if shed_reason:
                    for f in batch:
                        m.frames_shed.labels(self.name, f.stream, shed_reason).inc()
                else:
                    self._run_batch(stage, batch, out, pub)
            for frame in stage.flush(None):
                if shed_reason:
                    m.frames_shed.labels(self.name, frame.stream, shed_reason).inc()
                else:
                    self._emit(out, pub, frame)
        finally:
            receiver.close()
            self._close_outputs(out, pub)
        return expected <= complete

    # -- what a stage accepts -------------------------------------------------------------

    def _count_refused(self, *sockets: Receiver | Sender | None) -> None:
        for sock in sockets:
            if sock is not None and sock.monitor is not None:
                for reason, n in sock.refused().items():
                    if n:
                        self.metrics.peers_refused.labels(self.name, reason).inc(n)

    def _refusal(self, msg: Frame | Control, streams: set[str], senders: set[str]) -> tuple[str, str] | None:
        """(metric reason, log line) when a message did not come from where this stage's messages come from."""
        if msg.stream not in streams:
            return "unknown_stream", f"a message of stream {msg.stream!r}, which is not in the config ({', '.join(sorted(streams))})"
        if msg.sender not in senders:
            return "sender", f"a message of stream {msg.stream} from {msg.sender!r}, not from {' or '.join(sorted(senders))}"
        return None

    def _log_refusal(self, text: str) -> None:
        """The first ten refusals, then every thousandth: a flood of forged messages must not flood the log."""
        self._refused += 1
        if self._refused <= 10 or self._refused % 1000 == 0:
            self.log.error("refused %s (%d refused so far)", text, self._refused)

    # -- stream lifecycle ------------------------------------------------------------------

    def _refused_epoch(self, stream: str, epoch: int) -> str | None:
        """"superseded": a replay stage that replaces a lost one (`restarted`) takes no frame of an epoch it did not
        see start. Its supervisor starts every stream again (pipeline/launcher.py), so that epoch's frames are
        superseded, and taking them would track, count and alert from the middle of a stream."""
        if self.restarted and not self.live and self.ctx.streams.classify(stream, epoch) == "new":
            return "superseded"
        return None

    def _admit(self, stage: Stage, batcher: Batcher, stream: str, epoch: int, start: StreamStart | None,
               out: Sender | None, pub: Sender | None) -> bool:
        """Places a message of `epoch` in its stream's lifecycle; False when that epoch was left behind.

        A new epoch ends the one the stage holds (its batched and held frames go first) and starts the new
        one; a "started" message of the epoch already begun by its frames (they can overtake it through
        parallel upstream workers) only fills in what the source said of itself.
        """
        streams = self.ctx.streams
        where = streams.classify(stream, epoch)
        if where == "old":
            return False
        if where == "current":
            slot = streams.slots[stream]
            if start is not None and not slot.announced:
                slot.start, slot.announced = start, True
            return True
        if stream in streams:
            self.log.info("stream %s restarted (epoch %d -> %d)", stream, streams.epoch(stream), epoch)
            self._end_epoch(stage, batcher, stream, StreamEnd(restarted=True), out, pub)
            self.metrics.streams_ended.labels(self.name, stream, "restarted").inc()
        announced = start is not None
        if start is None:  # joined mid-stream: all that is known is in the config
            cfg = next((s for s in self.config.streams if s.id == stream), None)
            start = StreamStart(epoch, live=bool(cfg and cfg.live))
        streams.begin(stage, stream, start, announced)
        return True

    def _end_epoch(self, stage: Stage, batcher: Batcher, stream: str, end: StreamEnd, out: Sender | None, pub: Sender | None) -> None:
        """The stream's current epoch is over: what is batched and held for it goes on, then the stage is told."""
        for batch in batcher.flush_stream(stream):
            self._run_batch(stage, batch, out, pub)
        for frame in stage.flush(stream):
            self._emit(out, pub, frame)
        self.ctx.streams.finish(stage, stream, end)

    def _run_batch(self, stage: Stage, batch: list[Frame], out: Sender | None, pub: Sender | None) -> None:
        m = self.metrics
        m.batch_size.labels(self.name).observe(len(batch))
        t0 = time.perf_counter()
        try:
            results = stage.process(batch)
        except StageFailure:
            raise  # not a frame's fault: retrying frame by frame would only lose them (see StageFailure)
        except Exception as exc:
            self.log.warning("batch of %d raised %r; retrying its frames one by one", len(batch), exc)
            results = []
            for frame in batch:
                try:
                    results += stage.process([frame])
                except StageFailure:
                    raise
                except Exception as exc1:
                    m.frames_failed.labels(self.name, frame.stream).inc()
                    self.log.error("frame %s#%d failed and was skipped: %r", frame.stream, frame.seq, exc1, exc_info=exc1)
        m.processing.labels(self.name).observe(time.perf_counter() - t0)
        for frame in results:
            self._emit(out, pub, frame)


def keep_frame_buffers_mapped() -> None:
    """Stop glibc from returning each multi-MB frame buffer to the kernel after use.

    By default a buffer above the mmap threshold is unmapped on free and faulted in
    page by page on the next message: 350-520 page faults per 1080p frame, about 30%
    of a hop's throughput (bench/transport.py). Raising the mmap and trim thresholds
    keeps freed buffers in the heap for reuse, at the cost of the frames in flight.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):  # not glibc
        pass


def run_stage(config: PipelineConfig, stage_name: str, stream: str | None = None, metrics_port: int | None = None,
              restarted: bool = False, config_path: Path | None = None) -> int:  # fmt: skip
    """Entry point of a stage process; returns its exit code."""
    keep_frame_buffers_mapped()
    runner = StageRunner(config, stage_name, stream, metrics_port, restarted, config_path)
    runner.log.info("started (pid %d, mode %s)", os.getpid(), config.mode)
    return runner.run()
