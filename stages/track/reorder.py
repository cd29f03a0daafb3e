"""Puts each stream's frames back in sequence order when several upstream workers deliver them.

Frames wait for the ones before them, within bounds: at most `window` frames per stream are held, and
(live mode) none longer than `max_delay_s`. When a bound is hit the missing frames are given up: they
were shed upstream, failed, or are too late to be useful; one that turns up afterwards is reported late.
Replay passes no clock, so what is released depends on the arrival order and the bounds alone.

Restarts are not guessed here: the framework ends a stream's epoch (`flush`) and begins the next
(`start`), whose frames are numbered from 0 again.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from pipeline.protocol import Frame


@dataclass
class _Stream:
    next_seq: int | None = None  # the frame expected next; None until the first arrives
    heap: list[tuple[int, float, Frame]] = field(default_factory=list)  # (seq, arrival time, frame)


class ReorderBuffer:
    def __init__(self, window: int, max_delay_s: float | None = None) -> None:
        if window < 1:
            raise ValueError("the reorder window must hold at least one frame")
        self.window = window
        self.max_delay_s = max_delay_s
        self.streams: dict[str, _Stream] = {}
        self.late: list[Frame] = []  # frames that came after their place was given up: the caller counts them
        self.skipped = 0  # frames given up (never came in time), all streams

    def held(self, stream: str | None = None) -> int:
        if stream is not None:
            return len(self.streams[stream].heap) if stream in self.streams else 0
        return sum(len(s.heap) for s in self.streams.values())

    def start(self, stream: str, from_start: bool) -> None:
        """A stream (epoch) begins: at frame 0 when its start was announced, else (this stage joined it
        midway) at the first frame that arrives."""
        self.streams[stream] = _Stream(0 if from_start else None)

    def push(self, frame: Frame, now: float = 0.0) -> list[Frame]:
        """Add a frame; returns the frames now ready, in order."""
        st = self.streams.setdefault(frame.stream, _Stream(0))  # streams start at frame 0 unless `start` says otherwise
        if st.next_seq is None:
            st.next_seq = frame.seq
        if frame.seq < st.next_seq or any(seq == frame.seq for seq, _, _ in st.heap):
            self.late.append(frame)
            return []
        heapq.heappush(st.heap, (frame.seq, now, frame))
        return self._release(st, now)

    def poll(self, now: float) -> list[Frame]:
        """Frames released because the ones they wait for are overdue (live mode)."""
        out: list[Frame] = []
        for st in self.streams.values():
            out += self._release(st, now)
        return out

    def flush(self, stream: str) -> list[Frame]:
        """Everything held for a stream that ended, in order, gaps given up."""
        st = self.streams.pop(stream, None)
        if st is None:
            return []
        out = [f for _, _, f in sorted(st.heap, key=lambda e: e[0])]
        if out and st.next_seq is not None:
            self.skipped += out[-1].seq + 1 - st.next_seq - len(out)
        return out

    def _release(self, st: _Stream, now: float) -> list[Frame]:
        out: list[Frame] = []
        while st.heap:
            seq, arrived, frame = st.heap[0]
            assert st.next_seq is not None
            overdue = self.max_delay_s is not None and now - arrived > self.max_delay_s
            if seq != st.next_seq and not (len(st.heap) > self.window or overdue):
                break
            if seq != st.next_seq:
                self.skipped += seq - st.next_seq
            heapq.heappop(st.heap)
            st.next_seq = seq + 1
            out.append(frame)
        return out
