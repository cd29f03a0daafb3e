"""Frame protocol: round trips, zero-copy pixels, and rejection of what is malformed."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from pipeline.detections import Detections
from pipeline.protocol import KIND_EOS, PROTOCOL_VERSION, Control, Frame, ProtocolError, decode, encode


def make_frame(n: int = 3) -> Frame:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    det = Detections(
        boxes=rng.uniform(0, 40, (n, 4)),
        scores=rng.uniform(0, 1, n),
        class_ids=np.arange(n),
        track_ids=np.arange(n) + 10,
        extra={"identity": np.arange(n, dtype=np.int32), "posture": rng.uniform(size=(n, 2)).astype(np.float32)},
    )
    return Frame("cam", 7, 0.7, 1234.5, 64, 48, image, detections=det, stamps=[("decode", 1.0)], attrs={"fps": 10.0})


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
    assert g.stamps == [("decode", 1.0)] and g.attrs == {"fps": 10.0}


def test_frame_without_pixels_and_control_messages() -> None:
    f = make_frame(0)
    parts = encode(f, with_pixels=False)
    assert len(parts) == 1
    g = decode(parts)
    assert isinstance(g, Frame) and g.image is None and len(g.detections) == 0
    c = decode(encode(Control(KIND_EOS, "cam", "decode", {"frames": 10, "error": "truncated"})))
    assert isinstance(c, Control) and c.kind == KIND_EOS and c.attrs == {"frames": 10, "error": "truncated"}


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
         "st": [], "d": Detections().to_wire(), "a": {}}
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
        ([header(n="x")], "malformed", "bad frame header"),
        ([header(d={"boxes": ["<f4", [1, 4], b"\x00" * 3]})], "malformed", "bad frame header"),
        ([header(d={"boxes": ["|O", [1], b"x"], "scores": 1})], "malformed", "unsupported dtype"),
        ([msgpack.packb({"v": 1, "k": "eos"}), b"x"], "malformed", "carries a payload"),
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
