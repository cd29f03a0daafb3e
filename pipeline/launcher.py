"""Runs a whole config as supervised OS processes, one per stage (one source per stream).

A stage that exits with status 0 has finished its work (its streams ended) and is
left alone; one that crashes, is killed or is stopped before its streams ended is
restarted with exponential backoff, logged and counted in `vidpipe_stage_restarts_total`.

Replay is exactly-once across such a restart: the frames a stage held when it died are
gone, so every source starts its stream again from the start (a new epoch). Downstream
stages begin the stream afresh at the new epoch, drop what is left of the old one, and
record rewrites its outputs; processing is deterministic, so the results equal those of
an uninterrupted run (alerts raised twice keep their ids and are delivered once). The
cost is the work redone.

Stopping (Ctrl-C, SIGTERM) in replay mode stops the sources first and then each stage
in turn, once the end of its streams reached it; in live mode every stage is stopped at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import IO, Callable

import setproctitle
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.config import PipelineConfig
from pipeline.metrics import BEAT_FILE_ENV, PREFIX, MetricsServer
from pipeline.runtime import EXIT_INCOMPLETE, STOP_NOW
from pipeline.transport import bound_ipc_path, ensure_private_dir

log = logging.getLogger("vidpipe.launcher")

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    # Own process group: the terminal's Ctrl-C reaches the launcher alone, which stops the
    # stages in order. And the kernel ends a stage whose launcher died, so none is orphaned.
    os.setpgrp()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class ForkedStage:
    """A stage process forked from the launcher, with the part of `subprocess.Popen` the launcher uses.

    A fork starts a stage in about 10 ms of CPU where a new interpreter takes 0.3-0.4 s to import what the launcher
    has loaded already (numpy, zmq, pydantic, the config schema, the stage's option classes, OpenCV): on a 2-core
    machine four stages starting at once took 0.8 s of wall time before their first frame.
    """

    def __init__(self, pid: int, stderr: IO[bytes] | None) -> None:
        self.pid = pid
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"stage pid {self.pid}", timeout or 0.0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # a reaped pid may belong to another process by now
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _fork_stage(argv: list[str], env: dict[str, str], pipe_stderr: bool, close: list[socket.socket]) -> ForkedStage:
    """Runs `vidpipe ARGV` (a `stage` command) in a forked child, as a new interpreter would run it.

    The child takes on no state of the launcher's that matters: default signal handlers, the stage's environment,
    fresh stdout/stderr objects (a launcher thread may hold the old ones' locks at the fork), no logging handlers
    (the progress display's), the launcher's listening sockets closed, the working directory off sys.path (as
    `python -P`). It never returns into the launcher: it ends with os._exit.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe() if pipe_stderr else (-1, -1)
    with warnings.catch_warnings():
        # Python 3.12+ warns when a process with threads forks (a restart: the launcher's log and metrics
        # threads run). The child takes none of their locks: new std streams, logging's own at-fork reset.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid:
        if w >= 0:
            os.close(w)
        return ForkedStage(pid, os.fdopen(r, "rb") if r >= 0 else None)
    code = 70  # EX_SOFTWARE: the child failed before the stage ran
    try:
        if w >= 0:
            os.dup2(w, 2)
            os.close(w)
            os.close(r)
        _child_setup()
        # What `ps` and a test's process lookup show: the stage's command, as an exec'd stage's would read.
        # Before the environment is replaced: setproctitle finds the room for the title next to it.
        setproctitle.setproctitle(" ".join(["vidpipe", *argv]))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        faulthandler.unregister(signal.SIGUSR1)  # the CLI's: else the stage's own registration is a no-op
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for sock in close:
            sock.close()
        os.environ.clear()
        os.environ.update(env)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process's own streams, never closed
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        cwd = os.getcwd()
        sys.path[:] = [p for p in sys.path if p not in ("", ".", cwd)]
        from pipeline import cli

        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:  # noqa: BLE001 - reported as a crashed interpreter would, never raised into the launcher
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# Runtimes whose thread pools do not survive a fork: a process that loaded one (a test, a notebook) starts its
# stages as new interpreters.
_NOT_FORK_SAFE = ("torch", "onnxruntime", "openvino", "tensorflow")


def _can_fork() -> bool:
    return hasattr(os, "fork") and os.environ.get("VIDPIPE_START") != "exec" and not any(m in sys.modules for m in _NOT_FORK_SAFE)


def _forward_lines(pipe: IO[bytes], write: Callable[[str], None]) -> None:
    """A stage's stderr, line by line, to `write`, until the stage closes it (exits)."""
    with pipe:
        for line in iter(pipe.readline, b""):
            write(line.decode(errors="replace").rstrip("\n"))


@dataclass
class Child:
    stage: str
    stream: str | None
    source: bool
    proc: subprocess.Popen[bytes] | ForkedStage | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    crashes_in_row: int = 0
    restart_at: float | None = None
    finished: bool = False
    exit_codes: list[int] = field(default_factory=list)
    beat_file: str | None = None  # its loop touches this file every second (pipeline/metrics.py)

    @property
    def label(self) -> str:
        return self.stage + (f"[{self.stream}]" if self.stream else "")


class Launcher:
    def __init__(self, config: PipelineConfig, config_path: str, log_level: str = "INFO", env: dict[str, str] | None = None,
                 stage_log: Callable[[str], None] | None = None):  # fmt: skip
        """`stage_log`: where the stages' log lines go (each a line of their stderr); None: straight to this
        process's stderr. The progress display takes them so that they print above it, not through it."""
        self.config = config
        self.stage_log = stage_log
        self.config_path = os.path.abspath(config_path)
        self.log_level = log_level
        self.env = dict(os.environ if env is None else env)
        # Stages must import this package however the launcher was started (e.g. from a checkout).
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (root, self.env.get("PYTHONPATH", "")) if p)
        # Idle OpenMP threads sleep instead of spinning: a spinning model thread in one stage takes the core
        # that the next stage needs (stages share the machine's cores).
        self.env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.children = [
            Child(stage, stream, config.is_source(stage)) for stage, stream in config.process_names()
        ]
        self.stopping = threading.Event()
        self.failed = False  # a stage kept crashing: the pipeline was stopped
        self.stop_signal: int | None = None  # the signal that stopped the pipeline (Ctrl-C: SIGINT)
        self.registry = CollectorRegistry()
        self.restarts = Counter(f"{PREFIX}_stage_restarts", "Stage processes restarted after a crash.", ["stage", "stream"], registry=self.registry)
        self.up = Gauge(f"{PREFIX}_stage_up", "1 while the stage process runs.", ["stage", "stream"], registry=self.registry)
        self.hangs = Counter(f"{PREFIX}_stage_hangs", "Stage processes killed (then restarted) because their loop stopped running.", ["stage", "stream"], registry=self.registry)
        self.beats: str | None = None  # the folder of the heartbeat files, made private in run()
        self.server: MetricsServer | None = None
        if config.metrics.port_base is not None:
            self.server = MetricsServer(self.registry, config.metrics.host, config.metrics.port_base, lambda: not self.stopping.is_set())

    def _start(self, child: Child) -> None:
        # -P: the working directory is not put on sys.path, so a user's `http.py` (say) next to
        # their videos cannot shadow a module a stage imports.
        cmd = [sys.executable, "-P", "-m", "pipeline.cli", "--log-level", self.log_level, "stage", child.stage, "--config", self.config_path]
        if child.stream:
            cmd += ["--stream", child.stream]
        if self.config.mode == "replay" and child.restarts and not child.source:
            cmd.append("--restarted")  # it was lost mid-stream: the streams are starting again (_restart_sources)
        env = self.env
        if self.beats is not None:
            child.beat_file = os.path.join(self.beats, child.label.replace("[", "-").replace("]", "") + ".beat")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(child.beat_file)  # the last process's: its age says nothing of this one
            env = {**self.env, BEAT_FILE_ENV: child.beat_file}
        if _can_fork():
            close = [self.server.httpd.socket] if self.server is not None else []
            child.proc = _fork_stage(cmd[4:], env, self.stage_log is not None, close)
        else:
            child.proc = subprocess.Popen(cmd, env=env, preexec_fn=_child_setup, stderr=subprocess.PIPE if self.stage_log else None)
        if self.stage_log is not None and child.proc.stderr is not None:
            threading.Thread(target=_forward_lines, args=(child.proc.stderr, self.stage_log), daemon=True, name=f"log-{child.label}").start()
        child.started_at = time.monotonic()
        child.restart_at = None
        self.up.labels(child.stage, child.stream or "").set(1)
        # The series exists from the start at 0, so Prometheus's increase() sees the first restart too.
        self.restarts.labels(child.stage, child.stream or "")
        log.info("started %s (pid %d)", child.label, child.proc.pid)

    def _ipc_folders(self) -> set[str]:
        """The folders of the ipc:// sockets the stages bind, checked once here so that a bad one is one clear
        error, not every stage failing in turn."""
        out = set()
        for st in self.config.stages:
            for endpoint, pattern in ((self.config.input_endpoint(st.name), st.input_pattern), (self.config.publish_endpoint(st.name), "pub")):
                path = bound_ipc_path(endpoint, pattern) if endpoint else None
                if path:
                    out.add(os.path.dirname(path) or ".")
        return out

    def pids(self) -> dict[str, int]:
        return {c.label: c.proc.pid for c in self.children if c.proc and c.proc.poll() is None}

    def request_stop(self, signum: int | None = None, *_args: object) -> None:
        if self.stop_signal is None and signum is not None:
            self.stop_signal = signum
        if not self.stopping.is_set():
            log.info("stopping the pipeline (%s)", "sources first, then draining" if self.config.mode == "replay" else "all stages")
        self.stopping.set()

    def dump_stacks(self, *_args: object) -> None:
        """SIGUSR1: the launcher, then each stage in turn, print their threads' stacks to stderr.

        Stages print theirs from faulthandler's signal handler (registered by the CLI), so even a stage stuck in
        native code answers. One at a time, each under a heading, so that their lines do not interleave.
        """
        sys.stderr.write(f"--- stacks of the launcher (pid {os.getpid()})\n")
        sys.stderr.flush()
        faulthandler.dump_traceback(all_threads=True)
        for c in self.children:
            if c.proc and c.proc.poll() is None:
                sys.stderr.write(f"--- stacks of {c.label} (pid {c.proc.pid})\n")
                sys.stderr.flush()
                c.proc.send_signal(signal.SIGUSR1)
                time.sleep(0.3)

    def run(self, on_tick: Callable[[], None] | None = None) -> int:
        """Runs until every stage has finished, or a stop is requested; returns the exit status."""
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGUSR1, self.dump_stacks)
        try:
            for folder in self._ipc_folders():
                ensure_private_dir(folder)
            self.beats = self.config.resolved_run_dir()
            ensure_private_dir(self.beats)
        except PermissionError as exc:
            log.error("%s", exc)
            return 2
        # Downstream first, so that sockets that bind exist before senders connect.
        for child in reversed(self.children):
            self._start(child)
        sup = self.config.supervisor
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                for child in self.children:
                    if child.finished:
                        continue
                    if child.proc is None or child.restart_at is not None:
                        if child.restart_at is not None and now >= child.restart_at:
                            self._start(child)
                        continue
                    rc = child.proc.poll()
                    if rc is None:
                        if child.backoff and now - child.started_at > sup.stable_after_s:
                            child.backoff, child.crashes_in_row = 0.0, 0
                        self._check_hang(child, now)
                        continue
                    self.up.labels(child.stage, child.stream or "").set(0)
                    child.exit_codes.append(rc)
                    if rc == 0:
                        child.finished = True
                        log.info("%s finished", child.label)
                        continue
                    how = f"signal {signal.Signals(-rc).name}" if rc < 0 else "a stop before its streams ended" if rc == EXIT_INCOMPLETE else f"status {rc}"
                    if self.config.mode == "replay" and not child.source:
                        self._restart_sources(child)
                    child.crashes_in_row += 1
                    if sup.max_restarts is not None and child.crashes_in_row > sup.max_restarts:
                        log.error("%s exited with %s, %d times in a row: giving up", child.label, how, child.crashes_in_row)
                        self.failed = True
                        self.stopping.set()
                        break
                    child.backoff = min(sup.restart_max_s, child.backoff * 2 if child.backoff else sup.restart_initial_s)
                    child.restart_at = now + child.backoff
                    child.restarts += 1
                    self.restarts.labels(child.stage, child.stream or "").inc()
                    log.error("%s exited with %s; restart #%d in %.1fs", child.label, how, child.restarts, child.backoff)
                if all(c.finished for c in self.children):
                    log.info("all stages finished")
                    return 0
                if on_tick:
                    on_tick()
                self.stopping.wait(0.025)  # a finished stage is noticed soon: the end of a replay waits on it
            status = self._shutdown()
            return 1 if self.failed else status
        finally:
            for child in self.children:
                if child.proc and child.proc.poll() is None:
                    child.proc.kill()
                    child.proc.wait()
                if child.beat_file is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(child.beat_file)
            if self.server:
                self.server.close()

    def _check_hang(self, child: Child, now: float) -> None:
        """Kills a stage whose loop stopped: the next poll sees it exit and restarts it like any crash."""
        if child.beat_file is None or child.proc is None:
            return
        sup = self.config.supervisor
        try:
            silent = time.time() - os.stat(child.beat_file).st_mtime
            limit, what = sup.hang_after_s, "its loop has not run"
        except FileNotFoundError:  # not in its loop yet: loading its models
            silent = now - child.started_at
            limit, what = sup.startup_s, "it has not started its loop"
        if silent > limit:
            log.error("%s: %s for %.0fs (supervisor limit %.0fs): killing it", child.label, what, silent, limit)
            self.hangs.labels(child.stage, child.stream or "").inc()
            child.proc.kill()

    def _restart_sources(self, lost: Child) -> None:
        """Replay: `lost` died with frames in flight; every stream starts again from its start (see the module)."""
        log.warning("%s lost the frames it held: the sources start their streams again", lost.label)
        for c in self.children:
            if not c.source:
                continue
            if c.proc is not None and c.proc.poll() is None:
                c.proc.kill()  # no end of stream: the new epoch ends the old one downstream
                c.proc.wait()
            c.finished = False
            if c.restart_at is None:
                self._start(c)

    def _signal(self, children: list[Child], sig: int) -> None:
        for c in children:
            if c.proc and c.proc.poll() is None:
                c.proc.send_signal(sig)

    def _wait(self, children: list[Child], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for c in children:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
        return True

    @staticmethod
    def _in_loop(child: Child) -> bool:
        """Whether the stage got past loading: it runs its loop (which touches the beat file) or has exited."""
        exited = child.proc is not None and child.proc.poll() is not None
        return exited or child.beat_file is None or os.path.exists(child.beat_file)

    def _shutdown(self) -> int:
        # After a give-up there is nothing worth draining into: a short grace, then kill.
        drain = self.config.transport.drain_timeout_s if not self.failed else 0.0
        alive = [c for c in self.children if c.proc and c.restart_at is None]
        if self.config.mode == "replay" and not self.failed:
            if not all(self._in_loop(c) for c in alive):
                # Stopped while starting: what a stage still loading has not passed on, nothing after it has
                # seen, so there is nothing to drain; every stage stops at once (one loading stops its loading).
                self._signal(alive, STOP_NOW)
            else:
                # Sources end their streams (as stopped); each stage in turn is then told to stop, and leaves
                # once that end of stream has reached it, having handed on everything before it.
                for stage in self.config.stages:
                    group = [c for c in alive if c.stage == stage.name]
                    self._signal(group, signal.SIGTERM)
                    if not self._wait(group, drain + 5):
                        log.warning("%s not drained within %.0fs", stage.name, drain + 5)
        self._signal(alive, signal.SIGTERM)
        if not self._wait(alive, drain + 5):
            still = [c.label for c in alive if c.proc and c.proc.poll() is None]
            log.error("still running after the drain timeout, killed: %s", ", ".join(still))
            self._signal(alive, signal.SIGKILL)
            self._wait(alive, 5)
            return 1
        log.info("pipeline stopped")
        return 0
