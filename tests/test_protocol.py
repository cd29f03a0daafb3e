"""Frame protocol: round trips, zero-copy pixels, and rejection of what is malformed."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from pipeline.alert import Alert
from pipeline.analytics import Analytics
from pipeline.detections import PARENT, Detections
from pipeline.protocol import KIND_EOS, KIND_STARTED, PROTOCOL_VERSION, Control, Frame, ProtocolError, StreamEnd, StreamStart, decode, encode


def make_frame(n: int = 3) -> Frame:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    det = Detections(
        boxes=rng.uniform(0, 40, (n, 4)),
        scores=rng.uniform(0, 1, n),
        class_ids=np.arange(n),
        track_ids=np.arange(n) + 10,
        extra={"identity": np.arange(n, dtype=np.int32) % 3 - 1, "posture": rng.uniform(size=(n, 2)).astype(np.float32)},
        labels={"identity": ["alice", "bob"]},
    )
    alert = Alert("0123", "cam", "door", "zone_intrusion", "warning", [10], 7, 0.7, 1234.5, "cam: person #10 in door",
                  {"zone": "door"}, [[1.0, 2.0, 3.0, 4.0]], b"\xff\xd8jpeg")
    analytics = Analytics({"gate": [(10, "in")]}, {"gate": {"in": 3, "out": 1}}, {"door": 1}, [alert])
    return Frame("cam", 7, 0.7, 1234.5, 64, 48, image, detections=det, epoch=1700000000123, analytics=analytics)


def test_frame_round_trip_keeps_everything() -> None:
    f = make_frame()
    parts = encode(f)
    assert len(parts) == 2 and parts[1] is f.image  # pixels go as the array's own buffer
    g = decode([bytes(memoryview(p)) if not isinstance(p, bytes) else p for p in parts])
    assert isinstance(g, Frame)
    assert (g.stream, g.seq, g.pts, g.capture_ts, g.width, g.height) == ("cam", 7, 0.7, 1234.5, 64, 48)
    assert np.array_equal(g.image, f.image)
    for col in ("boxes", "scores", "class_ids", "track_ids"):
        assert np.array_equal(getattr(g.detections, col), getattr(f.detections, col))
        assert getattr(g.detections, col).dtype == getattr(f.detections, col).dtype
    assert set(g.detections.extra) == {"identity", "posture"}
    assert np.array_equal(g.detections.extra["posture"], f.detections.extra["posture"])
    assert g.detections.labels == {"identity": ["alice", "bob"]} and g.detections.label("identity", 2) == "bob"
    assert g.epoch == 1700000000123
    assert g.analytics == f.analytics  # typed: crossings, counts, occupancy and the alert with its snapshot bytes


def test_frame_without_pixels_and_control_messages() -> None:
    f = make_frame(0)
    parts = encode(f, with_pixels=False)
    assert len(parts) == 1
    g = decode(parts)
    assert isinstance(g, Frame) and g.image is None and len(g.detections) == 0
    c = decode(encode(Control(KIND_EOS, "cam", "decode", StreamEnd(10, error="truncated"), epoch=5)))
    assert isinstance(c, Control) and c.kind == KIND_EOS and c.end == StreamEnd(10, error="truncated") and c.epoch == 5
    assert c.end.outcome == "error"
    s = decode(encode(Control(KIND_STARTED, "cam", "decode", StreamStart(42, "rtsp://u:***@cam", True, 12.5))))
    assert isinstance(s, Control) and s.start == StreamStart(42, "rtsp://u:***@cam", True, 12.5) and s.epoch == 42


def test_parent_rows_follow_their_rows_through_filtering_and_concatenation() -> None:
    # person 0.45, car 0.9, face 0.99 (of the person), face 0.97 (of nobody)
    d = Detections(np.arange(16).reshape(4, 4), [0.45, 0.9, 0.99, 0.97], [0, 2, 9, 9],
                   extra={PARENT: np.array([-1, -1, 0, -1], np.int32)})
    assert d[np.array([False, True, True, True])].extra[PARENT].tolist() == [-1, -1, -1]  # its person is gone
    kept = d[np.array([2, 0])]
    assert kept.extra[PARENT].tolist() == [1, -1] and kept.boxes[1].tolist() == d.boxes[0].tolist()
    both = Detections.concat([d, kept])
    assert both.extra[PARENT].tolist() == [-1, -1, 0, -1, 5, -1]
    with pytest.raises(ValueError, match="points outside"):
        Detections(np.zeros((1, 4)), [1.0], [0], extra={PARENT: np.array([3], np.int32)})


def test_labelled_columns_merge_their_names_on_concatenation() -> None:
    a = Detections(np.zeros((2, 4)), [1, 1], [9, 9], extra={"id": np.array([1, -1], np.int32)}, labels={"id": ["x", "y"]})
    b = Detections(np.zeros((1, 4)), [1], [9], extra={"id": np.array([0], np.int32)}, labels={"id": ["z"]})
    c = Detections.concat([a, b])
    assert c.labels == {"id": ["x", "y", "z"]} and [c.label("id", i) for i in range(3)] == ["y", None, "z"]
    with pytest.raises(ValueError, match="outside its 1 labels"):
        Detections(np.zeros((1, 4)), [1], [9], extra={"id": np.array([1], np.int32)}, labels={"id": ["z"]})


def test_zero_copy_receive_over_a_real_socket() -> None:
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://zc")
        b.connect("inproc://zc")
        f = make_frame()
        a.send_multipart(encode(f), copy=False)
        g = decode(b.recv_multipart(copy=False))
        assert np.array_equal(g.image, f.image)
        assert not g.image.flags.owndata  # a view of the message buffer, not a copy
    finally:
        a.close()
        b.close()


def header(**kw: object) -> bytes:
    h = {"v": PROTOCOL_VERSION, "k": "frame", "s": "cam", "n": 0, "pts": 0.0, "ct": 0.0, "w": 4, "h": 2, "pf": "bgr24",
         "e": 1, "d": Detections().to_wire()}
    h.update(kw)
    return msgpack.packb(h)


@pytest.mark.parametrize(
    ("parts", "reason", "fragment"),
    [
        ([], "malformed", "expected 1 or 2 parts"),
        ([b"\xc1garbage"], "malformed", "not msgpack"),
        ([msgpack.packb([1, 2])], "malformed", "not a map"),
        ([header(v=99)], "version", "protocol version 99"),
        ([header(k="telepathy")], "malformed", "unknown message kind"),
        ([header(w=0)], "malformed", "out of range"),
        ([header(pf="yuv9")], "malformed", "unknown pixel format"),
        ([header(), b"\x00" * 23], "size", "needs 24"),
        ([header(n="x")], "malformed", "seq must be an integer"),
        ([header(d={**Detections().to_wire(), "boxes": ["<f4", [1, 4], b"\x00" * 3]})], "malformed", "do not fill shape"),
        # What a fuzzer found crashing stages before (issue 14): inf where ints belong, maps as strings, dtype code.
        ([header(w=float("inf"))], "malformed", "width must be an integer"),
        ([header(n=float("inf"))], "malformed", "seq must be an integer"),
        ([header(d={**Detections().to_wire(), "scores": ["<f4", [float("inf")], b""]})], "malformed", "bad shape"),
        ([header(d={**Detections().to_wire(), "extra": "posture"})], "malformed", "extra columns must be a map"),
        ([header(d={**Detections().to_wire(), "extra": ["a", "b"]})], "malformed", "extra columns must be a map"),
        ([header(d={**Detections().to_wire(), "class_ids": [",i4", [0], b""]})], "malformed", "unsupported dtype"),
        ([header(s="../../escaped")], "malformed", "is not an id"),
        ([header(s="a/b")], "malformed", "is not an id"),
        ([header(s="x" * 10_000)], "malformed", "at most 64"),
        ([header(s="a\x00b")], "malformed", "is not an id"),
        ([header(e=-1)], "malformed", "epoch"),
        ([header(an={"v": 1, "al": [{"id": "x", "stream": "cam", "rule": "r", "kind": "k", "severity": "info",
                                    "track_ids": [1], "seq": 0, "pts": float("nan"), "capture_ts": 0.0, "message": ""}]})],
         "malformed", "alert pts must be finite"),
        ([header(d={"boxes": ["|O", [1], b"x"], "scores": 1})], "malformed", "unsupported dtype"),
        ([msgpack.packb({"v": PROTOCOL_VERSION, "k": "eos"}), b"x"], "malformed", "carries a payload"),
        ([msgpack.packb({"v": 1, "k": "eos", "a": {"frames": 3}})], "version", "protocol version 1"),
        ([msgpack.packb({"v": PROTOCOL_VERSION, "k": "started", "p": {"source": "x"}})], "malformed", "epoch"),
        ([header(an={"v": 7})], "malformed", "analytics version 7"),
        ([header(an={"v": 1, "al": [{"id": "x"}]})], "malformed", "'stream' is missing"),
        ([header(d={**Detections().to_wire(), "labels": {"id": [1]}})], "malformed", "label of id must be a string"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(parts: list[bytes], reason: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(parts)
    assert exc.value.reason == reason and fragment in str(exc.value)


def test_detections_validate_and_select() -> None:
    with pytest.raises(ValueError, match="scores"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros(2))
    d = make_frame(5).detections
    sub = d[d.scores > 0.5]
    assert len(sub) == int((d.scores > 0.5).sum()) and set(sub.extra) == {"identity", "posture"}
    both = Detections.concat([d, sub])
    assert len(both) == len(d) + len(sub)
    assert np.array_equal(Detections(np.zeros((2, 4)), np.ones(2), np.zeros(2)).track_ids, [-1, -1])
