"""A replay's progress on a terminal: a bar per stream (frames, fps, time) drawn by rich, with every log line, the
launcher's and the stages', printed above it instead of through it."""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn


class _ConsoleLines:
    """A text stream for logging handlers whose lines the console prints above the live display."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass


class ReplayProgress:
    """Per stream: frames done of the expected total (None: unknown), fps and the time since `started`.

    Used as a context manager; `enabled` False (not a terminal, --quiet) makes every call a no-op, and log lines go
    to stderr as they are.
    """

    def __init__(self, totals: dict[str, int | None], started: float, enabled: bool) -> None:
        self.enabled = enabled
        self.started = started
        self.console = Console(file=sys.stderr) if enabled else None
        self.bars: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.totals = totals
        self._handlers: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []

    def __enter__(self) -> ReplayProgress:
        if self.console is None:
            return self
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[clock]}"), console=self.console, auto_refresh=True, refresh_per_second=4,
        )  # fmt: skip
        for sid, total in self.totals.items():
            self.tasks[sid] = self.bars.add_task(sid, total=total or None, rate="starting", clock="0.0s")
        self.bars.start()
        # This process's own log lines (the launcher's) go above the bars too.
        lines = _ConsoleLines(self.console)
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__):
                self._handlers.append((h, h.setStream(lines)))  # type: ignore[arg-type]
        return self

    def log(self, line: str) -> None:
        """A stage's log line."""
        if self.console is not None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            sys.stderr.write(line + "\n")

    def update(self, done: dict[str, float], now: float) -> None:
        if self.bars is None:
            return
        seconds = max(now - self.started, 1e-6)
        for sid, task in self.tasks.items():
            n = int(done.get(sid, 0))
            self.bars.update(task, completed=n, rate=f"{n / seconds:.1f} fps" if n else "starting", clock=f"{seconds:.1f}s")

    def finish(self, frames: dict[str, tuple[int, int | None]], elapsed: float) -> None:
        """The end: each stream's frames done and of how many (what the results say), and the run's time, the
        same that the end-of-run summary prints."""
        if self.bars is None:
            return
        for sid, task in self.tasks.items():
            n, total = frames.get(sid, (int(self.bars.tasks[task].completed), None))
            total = total if total is not None else (self.totals.get(sid) or n)
            self.bars.update(task, completed=n, total=total, rate=f"{n / max(elapsed, 1e-6):.1f} fps", clock=f"{elapsed:.1f}s")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for h, stream in self._handlers:
            h.setStream(stream)
        self._handlers.clear()
        if self.bars is not None:
            self.bars.stop()
            self.bars = None
