"""record: per stream an annotated video and a JSONL file of per-frame metadata; a summary at the end.

Replay writes STREAM.mp4, STREAM.jsonl and summary.json. Live cuts every stream into segments of segment_s
seconds, each written as STREAM-YYYYmmdd-HHMMSS.mp4 and .jsonl with its facts in a .json beside them, and writes
one summary-YYYYmmdd-HHMMSS.json per run: no file spans two runs, and none is appended to.

The JSONL holds only what follows from the input (no wall-clock times), so two
replays of the same input and config write byte-identical files.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field

from pipeline.categories import CATEGORIES, category_name
from pipeline.draw import Rect, draw_boxes
from pipeline.metrics import PREFIX
from pipeline.protocol import Frame, StreamEnd, StreamStart
from pipeline.retention import Every, RetentionOptions, prune_files
from pipeline.stage import Stage, StageContext, StageFailure
from stages.analyze.overlay import OverlayGeometry, analytics_labels, draw_analytics, label_rects
from stages.encode import DEFAULT_CRF, EXTENSIONS, VideoOut, open_video

if TYPE_CHECKING:
    from stages.analyze.options import StreamAnalyticsConfig


class RecordOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    out_dir: str = Field("out", description="Folder for the results (created if missing).")
    video: bool = Field(True, description="Write an annotated video per stream.")
    jsonl: bool = Field(True, description="Write one JSON line of metadata per frame per stream.")
    codec: Literal["h264", "mp4v", "MJPG", "VP90"] = Field(
        "h264", description="Codec of the annotated video: h264 (MP4 that browsers play, libx264 through PyAV), or an OpenCV FourCC (mp4v, MJPG, VP90)."
    )
    crf: int = Field(DEFAULT_CRF, ge=0, le=51, description="h264's quality (constant rate factor): lower is better and larger; 28 is about mp4v's quality in a third fewer bytes.")
    draw: bool = Field(True, description="Draw the detections on the video; off: the frames as they arrive (blurred faces stay blurred).")
    labels: bool = Field(True, description="Draw class, track id and score next to each box.")
    segment_s: float = Field(
        60.0, gt=0, description="Live: each stream is cut into segments of this many seconds of capture time, each written as "
        "STREAM-YYYYmmdd-HHMMSS.mp4 and STREAM-YYYYmmdd-HHMMSS.jsonl (named after its first frame's capture time) with a STREAM-YYYYmmdd-HHMMSS.json "
        "beside them (its times, frames, alerts and file names); a video is playable once closed. Replay writes one video and one JSONL per stream."
    )
    keep: Literal["all", "alerts"] = Field(
        "all", description="Live: which segments' videos are kept: all, or alerts (a segment in which an alert was raised, with the one before and "
        "the one after it; the others' video and .json are deleted once their neighbours are known, so about one segment of each stream is on "
        "disk between events). Every segment's JSONL is kept (retention still applies)."
    )
    alert_max_age_days: float | None = Field(
        None, gt=0, description="Live: segments in which an alert was raised (video and JSONL) are kept this long, past retention's age and size "
        "limits (null: like the others)."
    )
    retention: RetentionOptions = Field(
        default_factory=RetentionOptions, description="What of out_dir's videos and JSONL files to keep (live recording grows without end); "
        "never the segment being written, never a summary."
    )


def _color(class_id: int, track_id: int) -> tuple[int, int, int]:
    # A fixed colour per track (or per class before tracking), spread over the hue circle.
    key = track_id if track_id >= 0 else class_id * 7 + 3
    hue = (key * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def label_text(class_name: str, track_id: int, score: float) -> str:
    """A detection's label in the video: class, track id (once it is a track) and score."""
    return class_name + (f" #{track_id}" if track_id >= 0 else "") + f" {score:.2f}"


def annotate(image: np.ndarray, frame: Frame, labels: bool = True, taken: Sequence[Rect] = ()) -> np.ndarray:
    """A copy of the image with the frame's detections drawn, their labels clear of the `taken` ones."""
    out = np.array(image, copy=True)  # the frame keeps its clean pixels for whoever reads it next
    d = frame.detections
    colors = [_color(int(cid), int(tid)) for cid, tid in zip(d.class_ids, d.track_ids)]
    texts = None
    if labels:
        texts = [label_text(category_name(int(cid)), int(tid), float(score)) for score, cid, tid in zip(d.scores, d.class_ids, d.track_ids)]
    draw_boxes(out, d.boxes, colors, texts, taken=taken)
    return out


def annotated_picture(image: np.ndarray, frame: Frame, analytics: StreamAnalyticsConfig | None, labels: bool = True) -> np.ndarray:
    """A copy of the image with the detections and, where the stream is analysed, its zones, lines and counts
    drawn; the detections' labels go around the analytics' ones (drawn last, on top)."""
    if analytics is None:
        return annotate(image, frame, labels)
    h, w = image.shape[:2]
    drawn = analytics_labels(analytics, frame.analytics, w, h)
    out = annotate(image, frame, labels, taken=label_rects(drawn, w, h))
    draw_analytics(out, analytics, frame.analytics, drawn)
    return out


def frame_record(frame: Frame) -> dict[str, Any]:
    """The JSONL record of a frame: columnar, rounded, deterministic."""
    d = frame.detections
    objects: dict[str, Any] = {
        "boxes": np.round(d.boxes.astype(np.float64), 2).tolist(),
        "scores": np.round(d.scores.astype(np.float64), 4).tolist(),
        "classes": [category_name(int(c)) for c in d.class_ids],
        "track_ids": d.track_ids.tolist(),
    }
    for name, col in sorted(d.extra.items()):
        names = d.labels.get(name)
        if names is not None:  # a categorical column (sign.class, face.identity): its names, null for none
            objects[name] = [names[c] if c >= 0 else None for c in col.tolist()]
        elif col.dtype.kind == "f":  # NaN (not applicable) is written as null: strict JSON has no NaN
            objects[name] = [None if v != v else v for v in np.round(col.astype(np.float64), 4).tolist()]
        else:
            objects[name] = col.tolist()
    record: dict[str, Any] = {
        "stream": frame.stream,
        "seq": frame.seq,
        "pts": round(frame.pts, 6),
        "width": frame.width,
        "height": frame.height,
        "objects": objects,
    }
    analytics = frame.analytics.to_record() if frame.analytics is not None else None
    if analytics:
        record["analytics"] = analytics
    return record


VIDEO_SUFFIXES = {".mp4", ".avi", ".webm"}
RESULT_SUFFIXES = {".jsonl"} | VIDEO_SUFFIXES  # what retention removes (a segment's .json goes with its video)
SEGMENT_STAMP = re.compile(r".*-\d{8}-\d{6}(-\d+)?")  # a live segment's stem: STREAM-YYYYmmdd-HHMMSS[-N]


def _stream_of(name: str, streams: set[str]) -> str | None:
    """The stream a result file belongs to (STREAM.jsonl, STREAM-2.mp4, STREAM-20261206-101500-2.jsonl), if any."""
    stem = name.rsplit(".", 1)[0]
    for sid in sorted(streams, key=len, reverse=True):
        rest = stem[len(sid) :]
        if stem.startswith(sid) and (rest == "" or (rest[0] == "-" and rest[1:].replace("-", "").isdigit())):
            return sid
    return None


def _stamp(ts: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(ts))


def _unused(folder: Path, stem: str, suffixes: tuple[str, ...], taken: str = "") -> str:
    """STEM, or STEM-2, -3, ... where folder holds a file of that name with one of the suffixes already (two
    segments begun within a second, a stage restarted within a second) or it is `taken` (the run's summary: a
    stream may be called summary)."""
    name, n = stem, 1
    while name == taken or any((folder / f"{name}{sfx}").exists() for sfx in suffixes):
        n += 1
        name = f"{stem}-{n}"
    return name


MIN_FREE_BYTES = 16 << 20  # below this the video writer starts failing silently: stop before, with an error


def _count(runs: list[list[int]]) -> int:
    return sum(b - a + 1 for a, b in runs)


@dataclass
class StreamOutput:
    stream: str
    jsonl: IO[str] | None = None
    video: VideoOut | None = None
    video_path: str | None = None
    segment: dict[str, Any] | None = None  # live: what the segment being written holds, written beside it when closed
    stem: str | None = None  # live: the segment's name, that of its video, JSONL and facts
    segments: int = 0  # live: segments begun
    closed: list[tuple[Path | None, bool]] = field(default_factory=list)  # keep: alerts: the last closed segments, and whether alerted
    jsonl_path: str | None = None
    frames: int = 0
    video_frames: int = 0
    objects: int = 0
    by_class: dict[str, int] = field(default_factory=dict)
    first_pts: float | None = None
    last_pts: float | None = None
    fps: float | None = None  # of the current epoch's source
    epochs: int = 0  # epochs begun (a restarted source begins another)
    live: bool = False  # of the current epoch's source: a camera numbers from 0 again; a file repeats itself
    next_seq: int = 0  # the frame expected next: a larger one means frames were lost on the way
    lost: list[list[int]] = field(default_factory=list)  # [first, last] seq of each run of frames that never arrived
    ended: StreamEnd | None = None


class RecordStage(Stage):
    kind = "record"
    Options = RecordOptions

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.out_dir = Path(self.options.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.outputs: dict[str, StreamOutput] = {}
        self.started = time.time()
        self.summary_path = self.out_dir / "summary.json"
        if ctx.mode == "live":  # one summary per run: a restarted stage does not overwrite what the last one said
            self.summary_path = self.out_dir / (_unused(self.out_dir, f"summary-{_stamp(self.started)}", (".json",)) + ".json")
        self._warned_no_pixels = False
        self.closed = False
        r = ctx.metrics.registry
        self.m_deleted = Counter(f"{PREFIX}_record_files_deleted", "Result files removed by retention, by the limit that removed them (age, size; no_alert: a segment keep: alerts let go).", ["stage", "reason"], registry=r)
        self.m_bytes = Gauge(f"{PREFIX}_record_bytes", "Bytes of the result files in out_dir (after retention).", ["stage"], registry=r)
        self._retention = Every(self.options.retention.check_every_s)
        # Live, the drawn zones and lines follow edits of the config file, as the analyze stage does.
        self.overlay = OverlayGeometry(ctx.config, ctx.config_path if ctx.mode == "live" else None)

    def start_stream(self, stream: str, start: StreamStart) -> None:
        out = self.outputs.get(stream)
        if out is None or out.ended is not None or not start.live:
            # A stream that ended and starts again counts afresh. So does a file whose source started again
            # (in replay after a stage was lost: see pipeline/launcher.py): it sends the same frames from the
            # first, and its outputs are written anew, as if the first try had not happened.
            if out is not None:
                self._finish(out)
            epochs = out.epochs if out is not None else 0
            out = self.outputs[stream] = StreamOutput(stream, epochs=epochs)
        out.epochs += 1
        out.fps = start.fps
        out.live = start.live

    def _output(self, frame: Frame) -> StreamOutput:
        out = self.outputs[frame.stream]
        if self.ctx.mode == "live":
            return self._segment(out, frame)
        if self.options.jsonl and out.jsonl is None:
            out.jsonl_path = str(self.out_dir / f"{frame.stream}.jsonl")
            # A live source that restarted within a replay (a new epoch, numbering from 0 again) adds to the same file.
            append = out.live and out.epochs > 1
            out.jsonl = open(out.jsonl_path, "a" if append else "w", encoding="utf-8")
        if self.options.video and out.video is None and frame.image is not None:
            # One video per stream, and one more per restart of its source (a video file cannot be appended to).
            stamp = f"-{out.epochs}" if out.live and out.epochs > 1 else ""
            self._open_video(out, frame, f"{frame.stream}{stamp}")
        return out

    def _segment(self, out: StreamOutput, frame: Frame) -> StreamOutput:
        """Live: the segment the frame belongs to, begun with it when the last one is segment_s old (or closed)."""
        if out.segment is not None and frame.capture_ts - out.segment["start_ts"] >= self.options.segment_s:
            self._finish(out)  # the next segment begins with this frame
            self._write_summary()  # which files are the stream's last ones now
        if out.segment is None:
            suffixes = (EXTENSIONS[self.options.codec], ".jsonl", ".json")
            out.stem = _unused(self.out_dir, f"{frame.stream}-{_stamp(frame.capture_ts)}", suffixes, self.summary_path.name[: -len(".json")])
            out.segment = {"stream": frame.stream, "start_ts": frame.capture_ts, "end_ts": frame.capture_ts, "frames": 0, "alerts": []}
            out.segments += 1
            out.video_path = None
            out.jsonl_path = None
            if self.options.jsonl:
                out.jsonl_path = str(self.out_dir / f"{out.stem}.jsonl")
                out.jsonl = open(out.jsonl_path, "w", encoding="utf-8")
        if self.options.video and out.video is None and frame.image is not None:
            assert out.stem is not None
            self._open_video(out, frame, out.stem)
        return out

    def _open_video(self, out: StreamOutput, frame: Frame, stem: str) -> None:
        out.video_path = str(self.out_dir / f"{stem}{EXTENSIONS[self.options.codec]}")
        out.video = open_video(out.video_path, self.options.codec, out.fps or 25.0, frame.width, frame.height, self.options.crf)

    def process(self, batch: list[Frame]) -> list[Frame]:
        try:
            self._write(batch)
        except OSError as exc:
            raise StageFailure(f"cannot write the results to {exc.filename or self.out_dir}: {exc.strerror or exc}") from None
        self._check_space()
        return []

    def tick(self) -> list[Frame]:
        now = time.time()
        if self.options.retention.active and self._retention.due(now):
            self.apply_retention(now)
        return []

    def apply_retention(self, now: float) -> None:
        """Removes old results (what the streams of the config wrote, never a file being written)."""
        names = {s.id for s in self.ctx.config.streams}
        files = [p for p in self.out_dir.iterdir() if p.is_file() and p.suffix in RESULT_SUFFIXES and _stream_of(p.name, names)]
        in_use = {Path(p) for out in self.outputs.values() for p in (out.jsonl_path, out.video_path) if p}
        in_use |= self._alert_segments(files, now)  # kept longer: what an operator comes back to
        pruned = prune_files(files, in_use, self.options.retention, now)
        for path in pruned.by_age + pruned.by_size:
            # A segment's facts go with its video (what the web view lists), or with the last of its files.
            sidecar = path.with_suffix(".json")
            if SEGMENT_STAMP.fullmatch(path.stem) and (path.suffix in VIDEO_SUFFIXES or not any(sidecar.with_suffix(x).exists() for x in RESULT_SUFFIXES)):
                sidecar.unlink(missing_ok=True)
        for reason, removed in (("age", pruned.by_age), ("size", pruned.by_size)):
            if removed:
                self.m_deleted.labels(self.ctx.name, reason).inc(len(removed))
                self.log.info("retention (%s): removed %s", reason, ", ".join(p.name for p in removed))
        self.m_bytes.labels(self.ctx.name).set(pruned.kept_bytes)

    def _alert_segments(self, files: list[Path], now: float) -> set[Path]:
        """The files (video, JSONL) of the segments in which an alert was raised and that are younger than alert_max_age_days."""
        limit = self.options.alert_max_age_days
        if limit is None:
            return set()
        kept = set()
        for path in files:
            sidecar = path.with_suffix(".json")
            if not sidecar.is_file():
                continue
            try:
                facts = json.loads(sidecar.read_text())
                if facts.get("alerts") and now - float(facts["end_ts"]) <= limit * 86_400:
                    kept.add(path)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # an unreadable sidecar protects nothing
        return kept

    def _check_space(self) -> None:
        """A full disk is an error, not a warning: OpenCV's video writer only warns when its writes fail."""
        st = os.statvfs(self.out_dir)
        free = st.f_bavail * st.f_frsize
        if free < MIN_FREE_BYTES:
            raise StageFailure(f"the disk of {self.out_dir} is full ({free // 1024} KiB free): the results cannot be written")

    def _write(self, batch: list[Frame]) -> None:
        for frame in batch:
            out = self._output(frame)
            if frame.seq > out.next_seq:
                out.lost.append([out.next_seq, frame.seq - 1])
            out.next_seq = max(out.next_seq, frame.seq + 1)
            record = frame_record(frame)
            if out.jsonl is not None:
                out.jsonl.write(json.dumps(record, separators=(",", ":")) + "\n")
            if self.options.video:
                if frame.image is None:
                    if not self._warned_no_pixels:
                        self.log.warning("frames arrive without pixels: no annotated video (forward_pixels is off upstream)")
                        self._warned_no_pixels = True
                elif out.video is not None:
                    out.video.write(self._picture(frame) if self.options.draw else frame.image)
                    out.video_frames += 1
            if out.segment is not None:
                out.segment["end_ts"] = frame.capture_ts
                out.segment["frames"] += 1
                if frame.analytics is not None:
                    out.segment["alerts"] += [a.id for a in frame.analytics.alerts]
            out.frames += 1
            out.objects += len(frame.detections)
            for name in record["objects"]["classes"]:
                out.by_class[name] = out.by_class.get(name, 0) + 1
            out.first_pts = frame.pts if out.first_pts is None else out.first_pts
            out.last_pts = frame.pts
        for out in (self.outputs[s] for s in {f.stream for f in batch}):
            if out.jsonl is not None:
                out.jsonl.flush()  # a write error surfaces with this batch, not at the end of the stream

    def _finish(self, out: StreamOutput) -> None:
        """Closes the stream's files (a video is playable from now on); live, the segment's facts go beside them as STEM.json."""
        if out.jsonl is not None:
            out.jsonl.close()
            out.jsonl = None
        if out.video is not None:
            video, out.video = out.video, None
            video.close()
        if out.segment is None or not (out.video_path or out.jsonl_path):  # nothing written: no facts of it either
            out.segment = None
            return
        segment, out.segment = out.segment, None
        segment["video"] = Path(out.video_path).name if out.video_path else None
        segment["jsonl"] = Path(out.jsonl_path).name if out.jsonl_path else None
        (self.out_dir / f"{out.stem}.json").write_text(json.dumps(segment, separators=(",", ":")) + "\n")
        if self.options.video and self.options.keep == "alerts":
            self._keep_events(out, Path(out.video_path) if out.video_path else None, bool(segment["alerts"]))

    def _picture(self, frame: Frame) -> np.ndarray:
        """The frame with its detections and, where the stream is analysed, its zones, lines and counts drawn."""
        assert frame.image is not None
        return annotated_picture(frame.image, frame, self.overlay.get(frame.stream), self.options.labels)

    def _keep_events(self, out: StreamOutput, closed: Path | None, alerted: bool) -> None:
        """keep: alerts. Of the last three closed segments, the middle one's video and facts go when none of the
        three had an alert: each alert keeps its segment and one segment either side (what led to it, what
        followed). Its JSONL stays: the metadata of every frame is small. `closed`: the segment's video, if any."""
        out.closed.append((closed, alerted))
        if len(out.closed) == 1 and not alerted:
            return  # the stream's first segment: decided when the second closes
        if len(out.closed) >= 2:
            before = out.closed[-3][1] if len(out.closed) >= 3 else False
            middle, middle_alerted = out.closed[-2]
            if middle is not None and not (before or middle_alerted or alerted):
                for path in (middle, middle.with_suffix(".json")):
                    path.unlink(missing_ok=True)
                self.m_deleted.labels(self.ctx.name, "no_alert").inc()
        del out.closed[:-2]

    def end_stream(self, stream: str, end: StreamEnd) -> None:
        out = self.outputs[stream]
        self._finish(out)
        if end.restarted:
            return  # the next epoch goes on in the same outputs
        out.ended = end
        if end.frames > out.next_seq:  # the last frames never arrived
            out.lost.append([out.next_seq, end.frames - 1])
        if end.error:
            self.log.error("stream %s ended with an error: %s", stream, end.error)
        if out.lost:
            self.log.error("stream %s: %d of its %d frames never arrived here (seq %s)", stream, _count(out.lost), end.frames,
                           ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in out.lost[:20]))  # fmt: skip
        self._write_summary()

    def close(self) -> None:
        self.closed = True
        for out in self.outputs.values():
            self._finish(out)
        self._write_summary()

    @classmethod
    def replay_options(cls, options: dict[str, Any], out_dir: str) -> None:
        options["out_dir"] = out_dir

    @classmethod
    def replay_report(cls, options: RecordOptions, elapsed: float) -> int | None:
        """The summary as a table on stdout; 1 when a stream did not complete (or no summary was written)."""
        out_dir = Path(options.out_dir)
        path = out_dir / "summary.json"
        if not path.exists():
            print(f"replay: no summary was written to {path}", file=sys.stderr)
            return 1
        summary = json.loads(path.read_text())
        # The replay's own time, start to end, as the progress display and the line below say it (the stage's
        # own began after the pipeline started).
        summary["wall_seconds"] = round(elapsed, 3)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, path)
        rows = [("stream", "frames", "lost", "objects", "status", "video", "jsonl")]
        bad = 0
        for sid, s in summary["streams"].items():
            rows.append((sid, str(s["frames"]), str(s["lost_frames"]), str(s["objects"]), s["status"], s["video"] or "-", s["jsonl"] or "-"))
            bad += s["status"] != "complete"
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        for sid, s in summary["streams"].items():
            if s["error"]:
                print(f"error: {sid}: {s['error']}")
        total = sum(s["frames"] for s in summary["streams"].values())
        print(f"summary: {path}")
        print(f"{total} frames in {elapsed:.1f}s ({total / max(elapsed, 1e-6):.1f} fps); results in {out_dir}")
        return 1 if bad else 0

    def summary(self) -> dict[str, Any]:
        streams = {}
        outputs = {s.id: StreamOutput(s.id) for s in self.ctx.config.streams} | self.outputs
        for sid, out in sorted(outputs.items()):
            ended = out.ended or StreamEnd()
            if out.ended is not None:
                # Complete only with every frame the source sent: one lost on the way is not a complete result.
                status = "incomplete" if ended.outcome == "complete" and (out.lost or ended.damaged) else ended.outcome
            else:  # no end of stream seen (yet)
                status = "stopped" if self.closed else "running"
            streams[sid] = {
                "frames": out.frames,
                "video_frames": out.video_frames,
                "objects": out.objects,
                "objects_by_class": {k: out.by_class[k] for k in CATEGORIES if k in out.by_class},
                "first_pts": out.first_pts,
                "last_pts": out.last_pts,
                "source_frames": ended.frames,
                "damaged_frames": ended.damaged,  # in the source: could not be decoded, skipped by decode
                "lost_frames": _count(out.lost),
                "lost": out.lost,
                "status": status,
                "error": ended.error,
                "video": out.video_path,  # live: the segment being written, or the last one
                "jsonl": out.jsonl_path,
            }
            if self.ctx.mode == "live":
                streams[sid]["segments"] = out.segments
        return {"mode": self.ctx.mode, "wall_seconds": round(time.time() - self.started, 3), "streams": streams}

    def _write_summary(self) -> None:
        path = self.summary_path
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.summary(), indent=2) + "\n")
        os.replace(tmp, path)
