"""The recordings the web view offers: the record stage's videos with the facts of each live segment (the
NAME.json beside it: stream, first and last frame's capture time, frames, alerts), the segment and offset of a
moment, and clips cut from the segments between two times without re-encoding."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".avi": "video/x-msvideo"}
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class Recording:
    path: Path
    complete: bool  # playable: closed by its writer
    stream: str | None = None  # from the segment's facts (a replay's single video has none)
    start_ts: float | None = None
    end_ts: float | None = None
    frames: int | None = None
    alerts: int = 0

    def info(self) -> dict[str, Any]:
        st = self.path.stat()
        return {
            "name": self.path.name, "url": f"/recordings/{self.path.name}", "bytes": st.st_size, "modified": st.st_mtime,
            "complete": self.complete, "stream": self.stream, "start_ts": self.start_ts, "end_ts": self.end_ts,
            "frames": self.frames, "alerts": self.alerts,
        }  # fmt: skip


def list_recordings(folder: Path | None) -> list[Recording]:
    """The videos of `folder`, newest first."""
    if folder is None or not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        if not (p.is_file() and p.suffix in VIDEO_TYPES and SAFE_NAME.fullmatch(p.name)):
            continue
        rec = Recording(p, finished(p))
        facts = _facts(p.with_suffix(".json"))
        if facts is not None:
            rec.stream, rec.start_ts, rec.end_ts = str(facts["stream"]), float(facts["start_ts"]), float(facts["end_ts"])
            rec.frames, rec.alerts = int(facts["frames"]), len(facts.get("alerts", []))
        out.append(rec)
    out.sort(key=lambda r: (r.start_ts if r.start_ts is not None else r.path.stat().st_mtime), reverse=True)
    return out


def _facts(path: Path) -> dict[str, Any] | None:
    try:
        facts = json.loads(path.read_text())
        float(facts["start_ts"]), float(facts["end_ts"]), int(facts["frames"]), str(facts["stream"])
        return facts  # type: ignore[no-any-return]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def moment(recordings: list[Recording], stream: str, ts: float, slack_s: float = 0.5) -> tuple[Recording, float] | None:
    """The closed segment of `stream` that holds capture time `ts` (or lies within `slack_s` of it: a frame's
    time between two segments), and the offset into it in seconds. None while the segment that holds it is
    still being written."""
    near = [r for r in recordings if r.complete and r.stream == stream and r.start_ts is not None and r.end_ts is not None
            and r.start_ts - slack_s <= ts <= r.end_ts + slack_s]  # fmt: skip
    if not near:
        return None
    # The segment that began last at or before ts (a moment between two segments belongs to the earlier one).
    before = [r for r in near if (r.start_ts or 0.0) <= ts]
    best = max(before, key=lambda r: r.start_ts or 0.0) if before else min(near, key=lambda r: r.start_ts or 0.0)
    return best, max(0.0, ts - (best.start_ts or 0.0))


def export_clip(recordings: list[Recording], stream: str, start: float, end: float, out_path: Path) -> int:
    """Writes the frames of `stream` captured from `start` to `end` (Unix seconds) as one MP4, copied from the
    closed segments without re-encoding: it begins at the last keyframe at or before `start` (at most 2 s
    before: record's keyframe interval). Returns the number of frames; ValueError when no segment covers them."""
    import av

    parts = sorted(
        (r for r in recordings if r.complete and r.stream == stream and r.start_ts is not None and r.end_ts is not None
         and r.end_ts >= start and r.start_ts <= end and r.path.suffix == ".mp4"),
        key=lambda r: r.start_ts or 0.0,
    )  # fmt: skip
    if not parts:
        raise ValueError(f"no recorded segment of stream {stream!r} between those times")
    written = 0
    with av.open(str(out_path), "w", options={"movflags": "+faststart"}) as out:
        ostream: Any = None
        clip_t0: float | None = None
        for part in parts:
            assert part.start_ts is not None
            with av.open(str(part.path)) as inp:
                s = inp.streams.video[0]
                base = float(s.time_base or 0)
                if ostream is None:
                    ostream = out.add_stream_from_template(s)
                pending: list[tuple[float, Any]] = []  # since the last keyframe, until `start` is reached
                for packet in inp.demux(s):
                    if packet.pts is None or packet.size == 0:
                        continue
                    t = part.start_ts + packet.pts * base
                    if t > end:
                        break
                    if clip_t0 is None:
                        if packet.is_keyframe:
                            pending = []
                        pending.append((t, packet))
                        if t < start or not pending[0][1].is_keyframe:
                            continue
                        clip_t0 = pending[0][0]
                    else:
                        pending = [(t, packet)]
                    for pt, pk in pending:
                        pk.pts = pk.dts = round((pt - clip_t0) / float(ostream.time_base))
                        pk.stream = ostream
                        out.mux(pk)
                        written += 1
                    pending = []
    if written == 0:
        out_path.unlink(missing_ok=True)
        raise ValueError(f"no recorded frame of stream {stream!r} between those times")
    return written


def finished(path: Path) -> bool:
    """Whether a video can be played: an MP4 has its index (the moov box) only once its writer closed it; other
    containers are taken as they are."""
    if path.suffix != ".mp4":
        return True
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            at = 0
            while at + 8 <= size:  # the top-level boxes: 32-bit size (1: a 64-bit one follows), 4-byte type
                f.seek(at)
                head = f.read(16)
                n, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if n == 1 and len(head) == 16:
                    n = int.from_bytes(head[8:16], "big")
                if n < 8:  # 0: to the end of the file (an mdat still being written)
                    return False
                if kind == b"moov":
                    return at + n <= size  # the whole index is there
                at += n
    except OSError:
        return False
    return False
