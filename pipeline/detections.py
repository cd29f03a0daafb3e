"""Columnar per-frame object metadata: one row per object, parallel numpy arrays.

The hot path never builds a list of per-object dicts; stages append rows with
`concat`, filter with a boolean mask, and add named extra columns (face identity,
sign class, posture) that travel with the core columns. Every per-row fact is a column,
so it survives filtering with its row:

- `parent` (extra column, int32) is a row index into the same detections (a face's person),
  -1 for none; filtering and concatenation keep it pointing at the same row (or -1 once that
  row is gone), so no stage ever holds a row number that another stage's filter made stale.
- `labels` names the codes of an integer extra column (a categorical column: the watchlist
  identities of `face.identity`, later sign classes); -1 is "none".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import wire

# Extra columns other stages read, named once here.
PARENT = "parent"  # int32 row index of the row this one belongs to (a face's person); kept right through filtering
FACE_IDENTITY = "face.identity"  # int32 watchlist identity (its name in `labels`), -1: nobody listed
FACE_DISTANCE = "face.distance"  # float32 encoding distance to that identity, NaN when not compared
SIGN_CLASS = "sign.class"  # int32 traffic-sign class of a traffic_sign row (its name in `labels`: SIGN_CLASSES), -1: none
SIGN_SCORE = "sign.score"  # float32 the classifier's probability of that class, NaN on other rows

CORE_DTYPES: dict[str, np.dtype] = {
    "boxes": np.dtype(np.float32),  # [N, 4] x1, y1, x2, y2 in pixels of the frame
    "scores": np.dtype(np.float32),  # [N]
    "class_ids": np.dtype(np.int32),  # [N] index into pipeline.categories
    "track_ids": np.dtype(np.int64),  # [N] -1 until a tracker assigns one
}


@dataclass
class Detections:
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)  # names of the codes of integer extra columns

    def __post_init__(self) -> None:
        self.boxes = np.ascontiguousarray(self.boxes, CORE_DTYPES["boxes"]).reshape(-1, 4)
        n = len(self.boxes)
        self.scores = np.ascontiguousarray(self.scores, CORE_DTYPES["scores"]).reshape(-1)
        self.class_ids = np.ascontiguousarray(self.class_ids, CORE_DTYPES["class_ids"]).reshape(-1)
        if self.track_ids is None or len(self.track_ids) == 0 and n:
            self.track_ids = np.full(n, -1, CORE_DTYPES["track_ids"])
        self.track_ids = np.ascontiguousarray(self.track_ids, CORE_DTYPES["track_ids"]).reshape(-1)
        for name, col in (("scores", self.scores), ("class_ids", self.class_ids), ("track_ids", self.track_ids)):
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} rows, boxes has {n}")
        for name, col in self.extra.items():
            if len(col) != n:
                raise ValueError(f"extra column {name!r} has {len(col)} rows, boxes has {n}")
        parent = self.extra.get(PARENT)
        if parent is not None:
            if parent.dtype != np.int32:
                raise ValueError(f"column {PARENT!r} must be int32 row indices, not {parent.dtype}")
            if len(parent) and (parent.min() < -1 or parent.max() >= n):
                raise ValueError(f"column {PARENT!r} points outside the {n} rows")
        for name, names in self.labels.items():
            coded = self.extra.get(name)
            if coded is None or coded.dtype.kind not in "iu":
                raise ValueError(f"labels given for {name!r}, which is not an integer extra column")
            if len(coded) and (coded.min() < -1 or coded.max() >= len(names)):
                raise ValueError(f"column {name!r} has codes outside its {len(names)} labels")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> "Detections":
        """Rows selected by a boolean mask, an index array or a slice (`parent` follows its rows)."""
        extra = {k: v[index] for k, v in self.extra.items()}
        if PARENT in extra:
            kept = np.arange(len(self))[index]
            new_row = np.full(len(self) + 1, -1, np.int32)  # old row -> new row; the extra slot maps -1 to -1
            new_row[kept] = np.arange(len(kept), dtype=np.int32)
            extra[PARENT] = new_row[extra[PARENT]]
        return Detections(
            self.boxes[index],
            self.scores[index],
            self.class_ids[index],
            self.track_ids[index],
            extra,
            {k: list(v) for k, v in self.labels.items()},
        )

    def label(self, column: str, row: int) -> str | None:
        """The name of a categorical column's code at `row` (None for -1)."""
        code = int(self.extra[column][row])
        return self.labels[column][code] if code >= 0 else None

    @staticmethod
    def concat(parts: list["Detections"]) -> "Detections":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections()
        names = set(parts[0].extra)
        if any(set(p.extra) != names for p in parts):
            raise ValueError("cannot concatenate detections with different extra columns")
        extra = {k: [p.extra[k] for p in parts] for k in sorted(names)}
        if PARENT in extra:  # row indices move by the rows before each part
            starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
            extra[PARENT] = [np.where(col >= 0, col + start, -1).astype(np.int32) for col, start in zip(extra[PARENT], starts)]
        labels: dict[str, list[str]] = {}
        for k in sorted({k for p in parts for k in p.labels}):
            # One vocabulary per column: the parts' names in order of first appearance, codes mapped onto it.
            merged: list[str] = []
            for p in parts:
                merged += [n for n in p.labels.get(k, []) if n not in merged]
            labels[k] = merged
            for i, p in enumerate(parts):
                own = p.labels.get(k, [])
                if own != merged[: len(own)]:
                    lut = np.array([merged.index(n) for n in own] + [-1], extra[k][i].dtype)
                    extra[k][i] = lut[extra[k][i]]
        return Detections(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.class_ids for p in parts]),
            np.concatenate([p.track_ids for p in parts]),
            {k: np.concatenate(cols) for k, cols in extra.items()},
            labels,
        )

    def to_wire(self) -> dict[str, Any]:
        """Compact msgpack-able form: each column as (dtype, shape, raw bytes)."""
        cols = {
            "boxes": self.boxes,
            "scores": self.scores,
            "class_ids": self.class_ids,
            "track_ids": self.track_ids,
        }
        out: dict[str, Any] = {k: _pack(v) for k, v in cols.items()}
        if self.extra:
            out["extra"] = {k: _pack(v) for k, v in self.extra.items()}
        if self.labels:
            out["labels"] = {k: list(v) for k, v in self.labels.items()}
        return out

    @staticmethod
    def from_wire(data: Any) -> "Detections":
        data = wire.mapping(data, "detections", 8)
        cols = {}
        for name, dtype in CORE_DTYPES.items():
            if name not in data:
                raise ValueError(f"detections lack column {name!r}")
            cols[name] = _unpack(data[name], name, expect=dtype)
        extra = {wire.text(k, "column name", 64): _unpack(v, str(k)) for k, v in wire.mapping(data.get("extra", {}), "extra columns", MAX_EXTRA).items()}
        labels = {
            wire.text(k, "labelled column", 64): [wire.text(n, f"label of {k}", 256) for n in wire.sequence(v, f"labels of {k}")]
            for k, v in wire.mapping(data.get("labels", {}), "labels", MAX_EXTRA).items()
        }
        return Detections(cols["boxes"], cols["scores"], cols["class_ids"], cols["track_ids"], extra, labels)


# The dtypes a column may travel as, by their exact wire strings (what _pack writes on this machine).
_WIRE_DTYPES: dict[str, np.dtype] = {np.dtype(t).str: np.dtype(t) for t in ("f4", "f8", "i4", "i8", "u1", "i2", "u2", "b1")}
MAX_ROWS = 1_000_000  # rows (and other dimensions) of a column received
MAX_EXTRA = 64  # extra columns received


def _pack(arr: np.ndarray) -> list[Any]:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.kind in "OUS":
        raise ValueError(f"column dtype {arr.dtype} cannot travel; use numeric codes")
    return [arr.dtype.str, list(arr.shape), arr.tobytes()]


def _unpack(packed: Any, name: str, expect: np.dtype | None = None) -> np.ndarray:
    """A column off the wire: [dtype, shape, bytes], each part checked before numpy sees it (numpy would
    parse a dtype string as code and overflow on a huge shape)."""
    if not (isinstance(packed, (list, tuple)) and len(packed) == 3):
        raise ValueError(f"column {name!r} is malformed: expected [dtype, shape, bytes]")
    dtype_str, shape, raw = packed
    dtype = _WIRE_DTYPES.get(dtype_str) if isinstance(dtype_str, str) else None
    if dtype is None:
        raise ValueError(f"column {name!r} has unsupported dtype {str(dtype_str)[:20]!r}")
    if not (isinstance(shape, (list, tuple)) and 1 <= len(shape) <= 3
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_ROWS for d in shape)):
        raise ValueError(f"column {name!r} has a bad shape {str(shape)[:60]}")
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ValueError(f"column {name!r} is malformed: its data is not bytes")
    if expect is not None and dtype != expect:
        raise ValueError(f"column {name!r} has dtype {dtype}, expected {expect}")
    count = math.prod(shape)
    if count * dtype.itemsize != len(raw):
        raise ValueError(f"column {name!r}: {len(raw)} bytes do not fill shape {tuple(shape)} of {dtype}")
    return np.frombuffer(raw, dtype).reshape(tuple(shape)).copy()
