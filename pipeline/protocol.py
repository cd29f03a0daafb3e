"""The wire protocol between stages: versioned multipart ZeroMQ messages.

A message is `[header]` or `[header, pixels]`. The header is a msgpack map; the
pixels are the raw frame buffer, sent and received without a copy. Frames and
control messages (end of stream, stream started, heartbeat) share the sockets so
that ordering between them is kept per sender.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import msgpack
import numpy as np

from pipeline.detections import Detections

PROTOCOL_VERSION = 1

PIXEL_FORMATS: dict[str, int] = {"bgr24": 3, "gray8": 1}

KIND_FRAME = "frame"
KIND_EOS = "eos"
KIND_STARTED = "started"
KIND_HEARTBEAT = "heartbeat"
CONTROL_KINDS = (KIND_EOS, KIND_STARTED, KIND_HEARTBEAT)

MAX_DIMENSION = 16384


class ProtocolError(ValueError):
    """A message that cannot be decoded; `reason` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class Frame:
    stream: str
    seq: int
    pts: float  # seconds from the start of the stream
    capture_ts: float  # wall clock (time.time()) when the frame was captured
    width: int
    height: int
    image: np.ndarray | None = None  # HxWxC uint8; read-only when received zero-copy
    pixel_format: str = "bgr24"
    detections: Detections = field(default_factory=Detections)
    stamps: list[tuple[str, float]] = field(default_factory=list)  # (stage, wall time) per hop
    attrs: dict[str, Any] = field(default_factory=dict)  # small named values (no arrays)

    def stamp(self, stage: str) -> None:
        self.stamps.append((stage, time.time()))


@dataclass
class Control:
    kind: str  # one of CONTROL_KINDS
    stream: str = ""
    sender: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)  # e.g. eos: {"frames": n, "error": "..."}


Message = Union[Frame, Control]


def encode(msg: Message, with_pixels: bool = True) -> list[Any]:
    """Multipart parts for `msg`; the pixel part is the image's own buffer (no copy)."""
    if isinstance(msg, Control):
        header = {"v": PROTOCOL_VERSION, "k": msg.kind, "s": msg.stream, "from": msg.sender, "a": msg.attrs}
        return [msgpack.packb(header, use_bin_type=True)]
    header = {
        "v": PROTOCOL_VERSION,
        "k": KIND_FRAME,
        "s": msg.stream,
        "n": msg.seq,
        "pts": msg.pts,
        "ct": msg.capture_ts,
        "w": msg.width,
        "h": msg.height,
        "pf": msg.pixel_format,
        "st": [list(s) for s in msg.stamps],
        "a": msg.attrs,
    }
    if len(msg.detections) or msg.detections.extra:
        header["d"] = msg.detections.to_wire()  # absent means none: the hop before infer is cheaper
    parts: list[Any] = [msgpack.packb(header, use_bin_type=True)]
    if with_pixels and msg.image is not None:
        img = msg.image
        if not img.flags.c_contiguous:
            img = np.ascontiguousarray(img)
        parts.append(img)
    return parts


def decode(parts: Sequence[Any]) -> Message:
    """Decode received parts (bytes or zmq.Frame); raises ProtocolError on anything malformed."""
    if not parts or len(parts) > 2:
        raise ProtocolError("malformed", f"expected 1 or 2 parts, got {len(parts)}")
    try:
        header = msgpack.unpackb(_buffer(parts[0]), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise ProtocolError("malformed", f"header is not msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise ProtocolError("malformed", "header is not a map")
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError("version", f"protocol version {version!r}, this stage speaks {PROTOCOL_VERSION}")
    kind = header.get("k")
    try:
        if kind in CONTROL_KINDS:
            if len(parts) != 1:
                raise ProtocolError("malformed", f"{kind} message carries a payload")
            return Control(kind, str(header.get("s", "")), str(header.get("from", "")), dict(header.get("a") or {}))
        if kind != KIND_FRAME:
            raise ProtocolError("malformed", f"unknown message kind {kind!r}")
        return _decode_frame(header, parts[1] if len(parts) == 2 else None)
    except ProtocolError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("malformed", f"bad frame header: {exc!r}") from None


def _decode_frame(h: dict[str, Any], pixels: Any) -> Frame:
    width, height, fmt = int(h["w"]), int(h["h"]), str(h["pf"])
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise ProtocolError("malformed", f"frame size {width}x{height} out of range")
    if fmt not in PIXEL_FORMATS:
        raise ProtocolError("malformed", f"unknown pixel format {fmt!r}")
    image = None
    if pixels is not None:
        buf = _buffer(pixels)
        channels = PIXEL_FORMATS[fmt]
        expected = width * height * channels
        if len(buf) != expected:
            raise ProtocolError("size", f"pixel payload is {len(buf)} bytes, {width}x{height} {fmt} needs {expected}")
        image = np.frombuffer(buf, np.uint8).reshape((height, width, channels) if channels > 1 else (height, width))
    return Frame(
        stream=str(h["s"]),
        seq=int(h["n"]),
        pts=float(h["pts"]),
        capture_ts=float(h["ct"]),
        width=width,
        height=height,
        image=image,
        pixel_format=fmt,
        detections=Detections.from_wire(h["d"]) if "d" in h else Detections(),
        stamps=[(str(s), float(t)) for s, t in h.get("st", [])],
        attrs=dict(h.get("a") or {}),
    )


def _buffer(part: Any) -> memoryview | bytes:
    # zmq.Frame (zero-copy receive) exposes .buffer; plain bytes are used as they are.
    buf = getattr(part, "buffer", None)
    return buf if buf is not None else part
