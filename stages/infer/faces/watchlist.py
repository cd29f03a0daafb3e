"""A watchlist of known faces: a folder with one sub-folder per identity, photos inside.

    watchlist/
      alice/   front.jpg  side.png
      bob/     badge.jpg

Each photo is read with OpenCV, its faces found by the detector handed in (the largest one is used when there are
several), and encoded (`FaceEncoder`). A face in a frame is recognised as the identity whose nearest photo is closest,
when that distance is at most `threshold`.

Photos that cannot be used (unreadable, no face, not an image) are logged by file name with the reason at start-up
and skipped; an identity with no usable photo is left out and logged too. The watchlist loads regardless.

Encodings are cached in one .npz file (no pickle) keyed by each photo's relative path, size, mtime_ns and SHA-1, and
by the encoder, the jitter count and the detector: an unchanged folder loads without detecting or encoding
anything, a changed or added photo is encoded again, a removed one is dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.paths import INPUT
from stages.infer.faces.encoder import DIM, FaceEncoder

log = logging.getLogger(__name__)

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_CACHE_NAME = ".vidpipe-encodings.npz"
CACHE_VERSION = 1

DetectFaces = Callable[[np.ndarray], np.ndarray]
"""BGR uint8 image -> face boxes [N, 4] (x1, y1, x2, y2) in its pixels."""


class WatchlistOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: Annotated[Path, INPUT] = Field(
        description="Folder with one sub-folder per identity (its name is the identity's name), photos inside "
        "(jpg, jpeg, png, bmp, webp; one clearly visible face each, the largest face is used)."
    )
    threshold: float = Field(
        0.6, gt=0, le=2,
        description="Largest encoding distance accepted as a match. 0.6 is face_recognition's default tolerance; "
        "0.5 is stricter (fewer false matches, more missed ones). Same person is typically 0.3-0.45 apart, different people 0.6+.",
    )  # fmt: skip
    cache: Path | None = Field(
        None, description=f"File the photo encodings are cached in; null: {DEFAULT_CACHE_NAME} inside the folder. "
        "An unwritable cache only costs the encoding time at each start.",
    )  # fmt: skip
    num_jitters: int = Field(
        1, ge=1, le=100, description="Encode each watchlist photo this many times, randomly jittered, and average (1: once; n: n times slower)."
    )

    def cache_path(self) -> Path:
        return self.cache if self.cache is not None else self.folder / DEFAULT_CACHE_NAME


@dataclass
class _Entry:
    """One photo's outcome, as cached: an encoding (row >= 0) or the reason it was skipped."""

    path: str
    size: int
    mtime_ns: int
    sha1: str
    row: int = -1  # into the cache's encodings
    problem: str | None = None
    note: str | None = None

    def same_file(self, other: _Entry) -> bool:
        return (self.size, self.mtime_ns, self.sha1) == (other.size, other.mtime_ns, other.sha1)


@dataclass
class Watchlist:
    names: list[str]  # identities with at least one usable photo; match() returns indices into this
    encodings: np.ndarray  # float32 [M, 128], grouped by identity
    labels: np.ndarray  # int32 [M]: identity index of each encoding
    files: list[str]  # the photo (relative path) of each encoding
    threshold: float
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file or identity folder, reason): skipped
    notes: list[tuple[str, str]] = field(default_factory=list)  # (file, remark): used, but worth a look
    encoded: int = 0  # photos detected and encoded by this load
    cached: int = 0  # photos whose outcome came from the cache

    @property
    def photos(self) -> int:
        """Photos in use (encodings)."""
        return len(self.files)

    @classmethod
    def load(
        cls,
        options: WatchlistOptions,
        encoder: FaceEncoder,
        detect_faces: DetectFaces,
        *,
        detector_key: str | None = None,
        log: logging.Logger = log,
    ) -> Watchlist:
        """Reads the folder (FileNotFoundError when it is missing), using and updating the cache.

        detect_faces: BGR image -> [N, 4] xyxy face boxes. detector_key: names the detector and its settings in the
        cache (default: the callable's module and qualified name); cached outcomes from another key are not reused.
        """
        folder = options.folder
        if not folder.is_dir():
            raise FileNotFoundError(f"watchlist folder {folder} does not exist or is not a folder")
        cache_path = options.cache_path()
        header = {
            "version": CACHE_VERSION,
            "encoder": getattr(encoder, "fingerprint", type(encoder).__qualname__),
            "num_jitters": options.num_jitters,
            "detector": detector_key or _callable_key(detect_faces),
        }
        old_entries, old_encodings = _read_cache(cache_path, header, log)

        problems: list[tuple[str, str]] = []
        notes: list[tuple[str, str]] = []
        entries: list[_Entry] = []
        rows: list[np.ndarray] = []
        names: list[str] = []
        labels: list[int] = []
        files: list[str] = []
        encoded = cached = 0

        identities: list[Path] = []
        for item in sorted(folder.iterdir()):
            if item.name.startswith(".") or item.resolve() == cache_path.resolve():
                continue
            if item.is_dir():
                identities.append(item)
            else:
                problems.append((item.name, "not inside an identity folder (one sub-folder per identity)"))

        for identity in identities:
            used = 0
            for path in sorted(p for p in identity.rglob("*") if p.is_file()):
                rel = path.relative_to(folder).as_posix()
                if any(part.startswith(".") for part in path.relative_to(identity).parts):
                    continue
                if path.suffix.lower() not in PHOTO_SUFFIXES:
                    problems.append((rel, f"not a photo ({', '.join(s[1:] for s in PHOTO_SUFFIXES)})"))
                    continue
                try:
                    data = path.read_bytes()
                    st = path.stat()
                except OSError as e:
                    problems.append((rel, f"cannot be read: {e}"))
                    continue
                entry = _Entry(rel, len(data), st.st_mtime_ns, hashlib.sha1(data).hexdigest())
                old = old_entries.get(rel) if old_entries is not None else None
                encoding: np.ndarray | None
                if old is not None and old.same_file(entry):
                    cached += 1
                    entry.problem, entry.note = old.problem, old.note
                    encoding = old_encodings[old.row] if old.row >= 0 else None
                else:
                    encoded += 1
                    encoding, entry.problem, entry.note, keep = _encode_photo(data, encoder, detect_faces, options.num_jitters)
                    if not keep:  # a detector that raised: tried again at the next start
                        problems.append((rel, entry.problem or "not usable"))
                        continue
                if entry.note:
                    notes.append((rel, entry.note))
                if encoding is None:
                    problems.append((rel, entry.problem or "not usable"))
                    entries.append(entry)
                    continue
                entry.row = len(rows)
                entries.append(entry)
                rows.append(encoding)
                labels.append(len(names))
                files.append(rel)
                used += 1
            if used:
                names.append(identity.name)
            else:
                problems.append((identity.name + "/", "no usable photo: identity left out"))

        for rel, reason in problems:
            log.warning("watchlist %s: %s skipped: %s", folder, rel, reason)
        for rel, remark in notes:
            log.warning("watchlist %s: %s: %s", folder, rel, remark)

        encodings = np.asarray(rows, np.float32).reshape(-1, DIM)
        unchanged = old_entries is not None and encoded == 0 and len(entries) == len(old_entries) and all(
            e.path in old_entries for e in entries
        )
        if not unchanged:
            _write_cache(cache_path, header, entries, encodings, log)
        return cls(names, encodings, np.asarray(labels, np.int32), files, options.threshold, problems, notes, encoded, cached)

    def match(self, encodings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest identity of each encoding [N, 128]: (identity index [N] int32, -1 when the nearest is farther
        than the threshold; distance to the nearest identity's closest photo [N] float32). Rows with NaN (faces not
        encoded) and all rows against an empty watchlist get -1 and NaN."""
        enc = np.asarray(encodings, np.float64).reshape(-1, DIM)
        identity = np.full(len(enc), -1, np.int32)
        distance = np.full(len(enc), np.nan, np.float32)
        ok = np.isfinite(enc).all(axis=1)
        if not ok.any() or not len(self.names):
            return identity, distance
        known = self.encodings.astype(np.float64)
        q = enc[ok]
        d2 = (q * q).sum(1)[:, None] + (known * known).sum(1)[None, :] - 2.0 * q @ known.T
        d = np.sqrt(np.maximum(d2, 0.0))  # [n, M]
        starts = np.flatnonzero(np.r_[True, self.labels[1:] != self.labels[:-1]])  # labels are grouped
        per_identity = np.minimum.reduceat(d, starts, axis=1)  # [n, identities]
        best = per_identity.argmin(axis=1)
        best_d = per_identity[np.arange(len(q)), best]
        identity[ok] = np.where(best_d <= self.threshold, self.labels[starts][best], -1)
        distance[ok] = best_d
        return identity, distance


def _callable_key(fn: Callable[..., Any]) -> str:
    target = getattr(fn, "__func__", fn)
    name = getattr(target, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(target, '__module__', type(fn).__module__)}.{name}"


def _encode_photo(
    data: bytes, encoder: FaceEncoder, detect_faces: DetectFaces, num_jitters: int
) -> tuple[np.ndarray | None, str | None, str | None, bool]:
    """-> (encoding or None, problem, note, whether the outcome may be cached: not when the detector raised)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        return None, "unreadable: OpenCV cannot decode it as an image", None, True
    try:
        boxes = np.asarray(detect_faces(image), np.float64).reshape(-1, 4)
    except Exception as e:  # noqa: BLE001 - one bad photo or detector hiccup must not stop the watchlist loading
        return None, f"face detection failed: {type(e).__name__}: {e}", None, False
    if not len(boxes):
        return None, "no face found", None, True
    note = None
    if len(boxes) > 1:
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes = boxes[[int(np.argmax(areas))]]
        w, h = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
        note = f"{len(areas)} faces found, used the largest ({w:.0f}x{h:.0f} px)"
    encoding = encoder.encode(image, boxes, num_jitters=num_jitters)[0]
    if not np.isfinite(encoding).all():
        return None, "the face box lies outside the image", note, True
    return encoding, None, note, True


def _read_cache(path: Path, header: dict[str, Any], log: logging.Logger) -> tuple[dict[str, _Entry] | None, np.ndarray]:
    empty = np.zeros((0, DIM), np.float32)
    if not path.is_file():
        return None, empty
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            encodings = np.asarray(z["encodings"], np.float32).reshape(-1, DIM)
        if meta.get("header") != header:
            log.info("watchlist cache %s was made with other settings (%s); encoding again", path, meta.get("header"))
            return None, empty
        entries = {e["path"]: _Entry(**e) for e in meta["entries"]}
        if any(e.row >= len(encodings) for e in entries.values()):
            raise ValueError("entry rows beyond the encodings")
    except Exception as e:  # noqa: BLE001 - a broken cache is rebuilt
        log.warning("watchlist cache %s is unreadable (%s); encoding again", path, e)
        return None, empty
    return entries, encodings


def _write_cache(path: Path, header: dict[str, Any], entries: list[_Entry], encodings: np.ndarray, log: logging.Logger) -> None:
    meta = {"header": header, "entries": [e.__dict__ for e in entries]}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), encodings=encodings.astype(np.float32))
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        log.warning("watchlist cache %s cannot be written (%s); photos will be encoded again at the next start", path, e)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
