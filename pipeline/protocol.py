"""The wire protocol between stages: versioned multipart ZeroMQ messages.

A message is `[header]` or `[header, pixels]`. The header is a msgpack map; the
pixels are the raw frame buffer, sent and received without a copy. Frames and
control messages (end of stream, stream started, heartbeat) share the sockets so
that ordering between them is kept per sender.

Everything in a message is typed: per-row facts are `Detections` columns, frame-level
results are `Analytics`, and each control kind has its own payload class. A stream's
`epoch` (in every frame and control) changes when its source restarts, so stages follow
restarts from the header instead of guessing them from frame numbers.

Version 2: typed payloads and epochs (version 1 carried free `attrs` maps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence, Union

import msgpack
import numpy as np

from pipeline import wire
from pipeline.analytics import Analytics
from pipeline.detections import Detections

PROTOCOL_VERSION = 2

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
    epoch: int = 0  # the stream's epoch (see StreamStart)
    analytics: Analytics | None = None  # set by the analyze stage
    sender: str = ""  # the stage that sent it (set by the runtime on the way out)


class _Payload:
    """A control payload: a flat dataclass of plain values, sent as a map."""

    def to_wire(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}  # type: ignore[call-overload]

    @classmethod
    def from_wire(cls, data: Any) -> Any:
        """Each field checked against its annotation; fields a newer sender adds are ignored."""
        data = wire.mapping(data, cls.__name__, 64)
        values = {f.name: wire.typed(data[f.name], str(f.type), f"{cls.__name__}.{f.name}")
                  for f in fields(cls) if f.name in data}  # type: ignore[arg-type]
        return cls(**values)


@dataclass
class StreamStart(_Payload):
    """A source (re)started: the first message of every epoch."""

    epoch: int  # a new one each time the source starts; larger than the last (milliseconds of the start)
    source: str = ""  # the source as it may be logged (no password)
    live: bool = False  # a camera, URL or device (its frame numbers start from 0 on every restart); files are not
    fps: float | None = None  # frames per second of the source (after any cap)
    frames: int | None = None  # frames the source holds, when known (files, folders)
    attempt: int = 1  # which connection attempt this is (live sources)


@dataclass
class StreamEnd(_Payload):
    """The stream ended: no more frames of it will come."""

    frames: int | None = None  # frames the source delivered
    source: str = ""
    error: str | None = None  # why it ended early
    stopped: bool = False  # ended by a stop of the pipeline, not by the source
    restarted: bool = False  # only its epoch ended: the source started again (never sent, given to stages)
    damaged: int = 0  # frames of the source that could not be decoded and were skipped (a damaged file)

    @property
    def outcome(self) -> str:
        return "error" if self.error else "stopped" if self.stopped else "restarted" if self.restarted else "complete"


@dataclass
class Heartbeat(_Payload):
    """A live source is still there while its stream is down."""

    up: bool = False
    attempt: int = 0


PAYLOADS: dict[str, type[_Payload]] = {KIND_STARTED: StreamStart, KIND_EOS: StreamEnd, KIND_HEARTBEAT: Heartbeat}


@dataclass
class Control:
    kind: str  # one of CONTROL_KINDS
    stream: str = ""
    sender: str = ""
    payload: Any = None  # the kind's payload class (StreamStart, StreamEnd, Heartbeat)
    epoch: int = 0

    def __post_init__(self) -> None:
        if self.payload is None:
            self.payload = StreamStart(self.epoch) if self.kind == KIND_STARTED else PAYLOADS[self.kind]()
        if not isinstance(self.payload, PAYLOADS[self.kind]):
            raise TypeError(f"a {self.kind} message carries a {PAYLOADS[self.kind].__name__}, not {type(self.payload).__name__}")
        if isinstance(self.payload, StreamStart):
            self.epoch = self.payload.epoch

    @property
    def start(self) -> StreamStart:
        assert isinstance(self.payload, StreamStart), self.kind
        return self.payload

    @property
    def end(self) -> StreamEnd:
        assert isinstance(self.payload, StreamEnd), self.kind
        return self.payload


Message = Union[Frame, Control]


def encode(msg: Message, with_pixels: bool = True) -> list[Any]:
    """Multipart parts for `msg`; the pixel part is the image's own buffer (no copy)."""
    if isinstance(msg, Control):
        header = {"v": PROTOCOL_VERSION, "k": msg.kind, "s": msg.stream, "e": msg.epoch, "from": msg.sender, "p": msg.payload.to_wire()}
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
        "e": msg.epoch,
        "from": msg.sender,
    }
    if len(msg.detections) or msg.detections.extra:
        header["d"] = msg.detections.to_wire()  # absent means none: the hop before infer is cheaper
    if msg.analytics is not None:
        header["an"] = msg.analytics.to_wire()
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
            payload = PAYLOADS[kind].from_wire(header.get("p", {}))
            stream = wire.ident(header["s"], "stream") if header.get("s", "") != "" else ""
            sender = wire.text(header.get("from", ""), "sender", 64)
            return Control(kind, stream, sender, payload, wire.integer(header.get("e", 0), "epoch", 0))
        if kind != KIND_FRAME:
            raise ProtocolError("malformed", f"unknown message kind {str(kind)[:40]!r}")
        return _decode_frame(header, parts[1] if len(parts) == 2 else None)
    except ProtocolError:
        raise
    except KeyError as exc:
        raise ProtocolError("malformed", f"bad header: {exc.args[0]!r} is missing") from None
    except Exception as exc:  # anything a forged value could still raise is a malformed message, never a crash
        raise ProtocolError("malformed", f"bad header: {str(exc)[:300]}") from None


def _decode_frame(h: dict[str, Any], pixels: Any) -> Frame:
    width = wire.integer(h["w"], "width", 1, MAX_DIMENSION)
    height = wire.integer(h["h"], "height", 1, MAX_DIMENSION)
    fmt = wire.text(h["pf"], "pixel format", 16)
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
        stream=wire.ident(h["s"], "stream"),
        seq=wire.integer(h["n"], "seq", 0),
        pts=wire.number(h["pts"], "pts"),
        capture_ts=wire.number(h["ct"], "capture time"),
        width=width,
        height=height,
        image=image,
        pixel_format=fmt,
        detections=Detections.from_wire(h["d"]) if "d" in h else Detections(),
        epoch=wire.integer(h.get("e", 0), "epoch", 0),
        analytics=Analytics.from_wire(h["an"]) if "an" in h else None,
        sender=wire.text(h.get("from", ""), "sender", 64),
    )


def _buffer(part: Any) -> memoryview | bytes:
    # zmq.Frame (zero-copy receive) exposes .buffer; plain bytes are used as they are.
    buf = getattr(part, "buffer", None)
    return buf if buf is not None else part
