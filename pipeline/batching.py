"""Groups arriving frames into batches.

Live mode: frames of any streams, in arrival order, until `max_size` or until the
oldest has waited `max_wait`. Replay mode: batch composition must follow from the
input alone, so a batch is `max_size` consecutive frames of one stream (the last
one shorter at end of stream), never cut by a timer.
"""

from __future__ import annotations

from collections import OrderedDict

from pipeline.protocol import Frame


class Batcher:
    def __init__(self, max_size: int, max_wait_s: float, deterministic: bool) -> None:
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.deterministic = deterministic
        self._live: list[Frame] = []
        self._live_since = 0.0
        self._per_stream: OrderedDict[str, list[Frame]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live) + sum(len(v) for v in self._per_stream.values())

    def add(self, frame: Frame, now: float) -> list[list[Frame]]:
        """Add a frame; returns the batches that became complete."""
        if self.deterministic:
            pending = self._per_stream.setdefault(frame.stream, [])
            pending.append(frame)
            if len(pending) >= self.max_size:
                del self._per_stream[frame.stream]
                return [pending]
            return []
        if not self._live:
            self._live_since = now
        self._live.append(frame)
        if len(self._live) >= self.max_size:
            return [self._take_live()]
        return []

    def due(self, now: float) -> list[list[Frame]]:
        """Live batches whose wait ran out."""
        if self._live and not self.deterministic and now - self._live_since >= self.max_wait_s:
            return [self._take_live()]
        return []

    def next_deadline(self) -> float | None:
        if self._live and not self.deterministic:
            return self._live_since + self.max_wait_s
        return None

    def flush_stream(self, stream: str) -> list[list[Frame]]:
        """Everything that must go before `stream`'s end-of-stream."""
        if self.deterministic:
            pending = self._per_stream.pop(stream, None)
            return [pending] if pending else []
        return [self._take_live()] if self._live else []

    def flush_all(self) -> list[list[Frame]]:
        out = [self._take_live()] if self._live else []
        out += [v for v in self._per_stream.values() if v]
        self._per_stream.clear()
        return out

    def _take_live(self) -> list[Frame]:
        batch, self._live = self._live, []
        return batch
