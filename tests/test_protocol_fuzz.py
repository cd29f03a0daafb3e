"""Hypothesis fuzzing of the protocol decoder: structured mutations of valid messages (any field replaced,
dropped or added, at any depth, by any msgpack value) raise only the documented ProtocolError."""

from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.alert import Alert
from pipeline.analytics import Analytics
from pipeline.detections import PARENT, Detections
from pipeline.protocol import KIND_EOS, KIND_HEARTBEAT, KIND_STARTED, Control, Frame, Heartbeat, ProtocolError, StreamEnd, StreamStart, decode, encode
from tests.helpers.mutations import mutate


def valid_messages() -> list[list[bytes]]:
    img = np.zeros((4, 6, 3), np.uint8)
    det = Detections(np.ones((2, 4)), [0.5, 0.6], [0, 1], extra={"face.identity": np.array([0, -1], np.int32),
                     PARENT: np.array([-1, 0], np.int32)}, labels={"face.identity": ["ann"]})
    alert = Alert("id", "cam", "rule", "zone_intrusion", "info", [1], 1, 0.1, 1.0, "msg", {"zone": "z"}, [[1.0, 2.0, 3.0, 4.0]], b"jpg")
    frame = Frame("cam", 1, 0.1, 1.0, 6, 4, img, detections=det, epoch=5,
                  analytics=Analytics({"l": [(1, "in")]}, {"l": {"in": 1, "out": 0}}, {"z": 1}, [alert]))
    controls = [Control(KIND_EOS, "cam", "decode", StreamEnd(3, "src", "boom"), epoch=5),
                Control(KIND_STARTED, "cam", "decode", StreamStart(5, "src", True, 10.0, 3)),
                Control(KIND_HEARTBEAT, "cam", "decode", Heartbeat(False, 2), epoch=5)]
    return [[bytes(memoryview(p)) for p in encode(m)] for m in [frame, *controls]]


VALID = valid_messages()
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.binary(max_size=40),
    st.sampled_from([",i4", "<f4", "|O", "<U4", "V8", "(2,)i4", "../x", "a/b", "", "\x00"]),
)
VALUES = st.recursive(LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)), max_leaves=12)


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    parts = draw(st.sampled_from(VALID))
    header = msgpack.unpackb(parts[0], raw=False)

    for _ in range(draw(st.integers(1, 3))):
        header = mutate(draw, header, VALUES)
    out = [msgpack.packb(header, use_bin_type=True)]
    if len(parts) > 1 and draw(st.booleans()):
        out.append(parts[1])
    elif draw(st.integers(0, 9)) == 0:
        out.append(draw(st.binary(max_size=100)))
    return out


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_any_mutation_of_a_valid_message_is_decoded_or_a_protocol_error(parts: list[bytes]) -> None:
    try:
        decode(parts)
    except ProtocolError as exc:
        assert exc.reason in ("malformed", "version", "size")


def test_the_valid_messages_decode() -> None:
    for parts in VALID:
        decode(parts)
