"""What a stage kind implements. The runtime owns sockets, batching, metrics, shutdown and errors."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from pydantic import BaseModel, ConfigDict

from pipeline.protocol import Control, Frame, StreamEnd, StreamStart
from pipeline.streams import Streams

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig, StageConfig
    from pipeline.metrics import StageMetrics


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageFailure(Exception):
    """What a stage cannot skip a frame past (its results cannot be written: a full disk): the runtime does not
    retry frame by frame, the stage exits with an error naming it, and its supervisor restarts it (replay:
    until max_restarts, then the run fails; nothing is counted as done that was not)."""


@dataclass
class StageContext:
    name: str
    config: "PipelineConfig"
    stage_config: "StageConfig"
    options: Any
    metrics: "StageMetrics"
    log: logging.Logger
    stream: str | None = None  # set for per-stream processes (decode)
    stop_event: threading.Event = field(default_factory=threading.Event)
    streams: Streams = field(default_factory=Streams)  # the framework's record of each stream's epoch and state
    problem: str | None = None  # set by a stage that cannot do its work right now: /healthz answers 503 with it
    config_path: Path | None = None  # the file the config was read from (`vidpipe stage --config`), for stages that follow its edits

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()


class Stage:
    """A processing stage: says what it does to a batch of frames.

    `process` gets frames from any streams (in live mode) or from one stream in
    sequence order (in replay mode) and returns the frames to hand on, usually the
    same objects with metadata added. A stage that returns nothing is a sink.
    Every frame it gets belongs to its stream's current epoch: `start_stream` came
    before it, and `end_stream` comes after the epoch's last frame.
    If `process` raises, the runtime retries the frames one at a time and counts
    and skips the ones that still raise, so it must tolerate being called again
    with frames it has partly seen.
    """

    kind: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    source: ClassVar[bool] = False

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.options = ctx.options
        self.log = ctx.log

    def process(self, batch: list[Frame]) -> list[Frame]:
        raise NotImplementedError

    def tick(self) -> list[Frame]:
        """Called every loop turn (at least every 200 ms): frames a stage that holds frames is now done with."""
        return []

    def flush(self, stream: str | None) -> list[Frame]:
        """Frames still held for `stream` (None: all streams, on the way out), handed on before its end of stream."""
        return []

    def start_stream(self, stream: str, start: StreamStart) -> Any:
        """A stream begins, or begins again with a new epoch (its source restarted), before its first frame.

        Returns the stage's state for it, which the framework keeps as `self.ctx.streams.state(stream)`
        until `end_stream`. `start` says what is known of the source (a stage that joins mid-stream gets
        only the epoch and whether the source is live).
        """
        return None

    def end_stream(self, stream: str, end: StreamEnd) -> None:
        """Called after the last frame of `stream`'s epoch (`end.restarted`: a new epoch follows)."""

    def close(self) -> None:
        """Release resources; called once on the way out, also after errors."""

    # -- hooks of `vidpipe replay`: called on the class, in the CLI process ----------------

    @classmethod
    def replay_options(cls, options: dict[str, Any], out_dir: str) -> None:
        """Point a stage that writes results at the replay's results folder (`options` as written in the YAML)."""

    @classmethod
    def replay_report(cls, options: Any, elapsed: float) -> int | None:
        """After a replay: print what the stage wrote; the exit status that implies, or None if it wrote nothing."""
        return None


class Source(Stage):
    """A stage that produces frames instead of receiving them (one process per stream)."""

    source: ClassVar[bool] = True

    def frames(self) -> Iterator[Frame | Control]:
        """Yield frames (and control messages) until the stream ends or ctx.stopping is set.

        The last item must be an end-of-stream Control; the runtime sends one if it is missing.
        """
        raise NotImplementedError

    def process(self, batch: list[Frame]) -> list[Frame]:  # pragma: no cover - sources do not receive
        raise TypeError("a source stage does not process batches")
