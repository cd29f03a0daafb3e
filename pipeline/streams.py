"""The streams a stage has seen: for each, its current epoch, how it started, and the stage's state for it.

The framework owns this, so no stage guesses a restart: a source that starts again sends a new epoch
(in its "started" message and in every frame), and the runtime ends the old epoch in the stage
(flush, then `end_stream`) before the new one begins (`start_stream`). Frames of an epoch that has
been left behind are dropped and counted, never mixed into the new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pipeline.protocol import StreamEnd, StreamStart

if TYPE_CHECKING:
    from pipeline.stage import Stage


@dataclass
class StreamSlot:
    start: StreamStart
    state: Any = None  # what the stage's start_stream returned for this epoch
    announced: bool = False  # its "started" message was seen (else it was begun by a frame: joined mid-stream)


class Streams:
    def __init__(self) -> None:
        self.slots: dict[str, StreamSlot] = {}

    def __contains__(self, stream: str) -> bool:
        return stream in self.slots

    def epoch(self, stream: str) -> int | None:
        slot = self.slots.get(stream)
        return None if slot is None else slot.start.epoch

    def classify(self, stream: str, epoch: int) -> Literal["current", "new", "old"]:
        """Where a message of `epoch` stands against what the stage holds for its stream."""
        current = self.epoch(stream)
        if current is None or epoch > current:
            return "new"
        return "current" if epoch == current else "old"

    def start(self, stream: str) -> StreamStart:
        return self.slots[stream].start

    def state(self, stream: str) -> Any:
        return self.slots[stream].state

    def begin(self, stage: Stage, stream: str, start: StreamStart, announced: bool = True) -> None:
        """Begins an epoch in `stage` (the runtime does this; so may an in-process caller of a stage)."""
        slot = self.slots[stream] = StreamSlot(start, announced=announced)
        slot.state = stage.start_stream(stream, start)

    def finish(self, stage: Stage, stream: str, end: StreamEnd) -> None:
        """Ends the current epoch in `stage`, after its held frames were flushed."""
        try:
            stage.end_stream(stream, end)
        finally:
            self.slots.pop(stream, None)
