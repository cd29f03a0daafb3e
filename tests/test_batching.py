"""Batch assembly: live batches by size or wait across streams; replay batches follow from the input alone."""

from __future__ import annotations

import random

from pipeline.batching import Batcher
from pipeline.protocol import Frame


def frame(stream: str, seq: int) -> Frame:
    return Frame(stream, seq, seq / 10, 0.0, 4, 4)


def ids(batches: list[list[Frame]]) -> list[list[tuple[str, int]]]:
    return [[(f.stream, f.seq) for f in b] for b in batches]


def test_live_batches_mix_streams_and_close_on_size_or_wait() -> None:
    b = Batcher(max_size=3, max_wait_s=0.05, deterministic=False)
    assert b.add(frame("a", 0), 0.0) == [] and b.add(frame("b", 0), 0.01) == []
    assert ids(b.add(frame("a", 1), 0.02)) == [[("a", 0), ("b", 0), ("a", 1)]]
    b.add(frame("b", 1), 1.0)
    assert b.next_deadline() == 1.05
    assert b.due(1.04) == []
    assert ids(b.due(1.05)) == [[("b", 1)]]
    assert b.next_deadline() is None and len(b) == 0


def test_replay_batches_are_the_same_whatever_the_interleaving() -> None:
    def run(seed: int) -> dict[str, list[list[int]]]:
        rng = random.Random(seed)
        queues = {"a": [frame("a", i) for i in range(10)], "b": [frame("b", i) for i in range(7)]}
        b = Batcher(max_size=4, max_wait_s=0.0, deterministic=True)
        out: dict[str, list[list[int]]] = {"a": [], "b": []}
        while any(queues.values()):
            s = rng.choice([k for k, v in queues.items() if v])  # arrival order differs per run
            for batch in b.add(queues[s].pop(0), rng.random()):
                out[batch[0].stream].append([f.seq for f in batch])
            assert b.due(1e9) == []  # never cut by a timer
            if not queues[s]:
                for batch in b.flush_stream(s):
                    out[s].append([f.seq for f in batch])
        return out

    first = run(0)
    assert first == {"a": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], "b": [[0, 1, 2, 3], [4, 5, 6]]}
    assert all(run(seed) == first for seed in range(1, 20))
