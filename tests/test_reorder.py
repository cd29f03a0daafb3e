"""The track stage's reorder buffer: frames of each stream leave in sequence order, within bounds."""

from __future__ import annotations

import random

import pytest

from pipeline.protocol import Frame
from stages.track.reorder import ReorderBuffer


def frame(stream: str, seq: int) -> Frame:
    return Frame(stream, seq, seq / 10, 0.0, 4, 4)


def bounded_shuffle(n: int, displacement: int, rng: random.Random) -> list[int]:
    """0..n-1 with every item moved at most `displacement` places (what a few parallel workers do)."""
    keys = [i + rng.uniform(0, displacement) for i in range(n)]
    return [i for _, i in sorted(zip(keys, range(n)))]


@pytest.mark.parametrize("seed", range(5))
def test_out_of_order_frames_of_two_streams_leave_in_order(seed: int) -> None:
    rng = random.Random(seed)
    buf = ReorderBuffer(window=16)
    pending = {"a": bounded_shuffle(200, 8, rng), "b": bounded_shuffle(150, 8, rng)}
    out: dict[str, list[int]] = {"a": [], "b": []}
    while pending["a"] or pending["b"]:
        s = rng.choice([k for k, v in pending.items() if v])  # the streams interleave any which way
        for f in buf.push(frame(s, pending[s].pop(0))):
            out[f.stream].append(f.seq)
    for s in ("a", "b"):
        out[s] += [f.seq for f in buf.flush(s)]
    assert out["a"] == list(range(200))
    assert out["b"] == list(range(150))
    assert buf.skipped == 0 and not buf.late


def test_a_frame_that_never_comes_is_given_up_once_the_window_is_full() -> None:
    buf = ReorderBuffer(window=4)
    got = [f.seq for i in (0, 1, 3, 4, 5, 6) for f in buf.push(frame("a", i))]
    assert got == [0, 1]  # 3.. wait for 2
    got = [f.seq for f in buf.push(frame("a", 7))]  # a fifth frame held: 2 is given up
    assert got == [3, 4, 5, 6, 7]
    assert buf.skipped == 1
    assert buf.push(frame("a", 2)) == [] and [f.seq for f in buf.late] == [2]  # too late: reported, not reordered


def test_live_mode_gives_up_on_a_missing_frame_after_the_delay() -> None:
    buf = ReorderBuffer(window=100, max_delay_s=0.3)
    assert [f.seq for f in buf.push(frame("a", 0), now=0.0)] == [0]
    assert buf.push(frame("a", 2), now=0.1) == []
    assert buf.poll(now=0.3) == []
    assert [f.seq for f in buf.poll(now=0.41)] == [2]
    assert buf.skipped == 1


def test_flush_hands_on_what_is_held_in_order_and_forgets_the_stream() -> None:
    buf = ReorderBuffer(window=10)
    for i in (0, 3, 2, 5):
        buf.push(frame("a", i))
    assert buf.held("a") == 3
    assert [f.seq for f in buf.flush("a")] == [2, 3, 5]
    assert buf.held("a") == 0 and "a" not in buf.streams
    assert buf.skipped == 2  # 1 and 4 never came


def test_a_stage_restarted_mid_stream_starts_from_the_first_frame_it_sees() -> None:
    buf = ReorderBuffer(window=8)
    buf.start("a", from_start=False)  # what the track stage does for a stream it joins without its start
    assert [f.seq for f in buf.push(frame("a", 5000))] == [5000]
    assert [f.seq for f in buf.push(frame("a", 5001))] == [5001]


def test_duplicates_are_reported_not_delivered_twice() -> None:
    buf = ReorderBuffer(window=8)
    buf.push(frame("a", 0))
    buf.push(frame("a", 2))
    assert buf.push(frame("a", 2)) == []
    assert [f.seq for f in buf.late] == [2]
    with pytest.raises(ValueError):
        ReorderBuffer(window=0)


def test_a_restarted_source_is_a_new_epoch_that_the_framework_flushes_and_starts() -> None:
    buf = ReorderBuffer(window=8)
    out = []
    for seq in [*range(0, 40), 42]:  # 40 and 41 never came
        out += buf.push(frame("cam", seq))
    # The decoder restarted: the framework ends the old epoch (flush) and starts the new one.
    out += buf.flush("cam")
    buf.start("cam", from_start=True)
    for seq in range(0, 20):
        out += buf.push(frame("cam", seq))
    assert [f.seq for f in out] == [*range(0, 40), 42, *range(0, 20)]
    assert not buf.late
    # A straggler a little behind is still late.
    assert buf.push(frame("cam", 12)) == [] and len(buf.late) == 1
