"""The track stage kind: puts frames back in order per stream, embeds the crops, tracks, labels rows with ids."""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.categories import category_id, check_categories
from pipeline.detections import Detections
from pipeline.metrics import PREFIX
from pipeline.paths import InputPath
from pipeline.protocol import Frame, StreamEnd, StreamStart
from pipeline.stage import Stage, StageContext
from stages.infer.backend import BackendName
from stages.track.association import assignment_solver
from stages.track.kalman import KalmanTracks as KalmanMotion  # the constant-velocity filter (numpy), under the motion option's name
from stages.track.reorder import ReorderBuffer
from stages.track.tracker import StepInput, Tracker, TrackerSettings


class AnomalyModelOptions(BaseModel):
    """The trajectory anomaly model (stages/track/anomaly.py): writes `anomaly.score` on tracked rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: InputPath | None = Field(None, description="Autoencoder weights (with their .json calibration beside them); null: the bundled generic model.")
    backend: BackendName = Field("auto", description="Backend of the trajectory model (auto: the fastest for the device).")
    classes: list[str] = Field(["person"], description="Categories scored: the bundled model knows people walking; a car at walking speed is not one.")

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        check_categories(v)
        return v


class FallOptions(BaseModel):
    """People on the ground (stages/track/fall.py): MoveNet where person tracks were lost and on wide person boxes;
    writes `pose.lying` and gives a lost track found lying its row back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    search_s: float = Field(5.0, gt=0, le=600, description="How long after a person track is lost (away from the frame's edge, not behind someone) its last place is searched.")
    min_score: float = Field(0.1, gt=0, lt=1, description="Lowest MoveNet person score a sighting keeps (the fall classifier, trained at 0.1, weighs the score itself).")
    backend: BackendName = Field("auto", description="Backend of the pose network (auto: the fastest for the device).")


class TrackOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    motion: Literal["lstm", "kalman"] = Field(
        "lstm", description="Motion model: the bundled motion LSTM (trained on the tracker's own histories, with a predictive uncertainty that bounds association and re-identification), or a constant-velocity Kalman filter. The default scores higher on the tuning sequences (bench/track_eval.py --tuning)."
    )
    motion_weights: InputPath | None = Field(None, description="Weights of the motion LSTM; null: the bundled ones.")
    appearance: bool = Field(True, description="Use the appearance CNN (association and re-identification).")
    appearance_weights: InputPath | None = Field(None, description="Weights of the appearance CNN; null: the bundled ones.")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="Appearance CNN precision. bf16 runs in OpenVINO on CPUs with bf16 instructions: faster from about 50 crops a call (6.5 against 10 ms at 50), no faster at a replay's 15-30, and tracks then depend on the CPU.",
    )
    backend: BackendName = Field("auto", description="Backend of the appearance CNN: auto (fastest measured for the device), torch, onnxruntime, openvino or cuda.")
    torch_threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads of the appearance CNN and the motion LSTM (default 1: its models are small, and the infer stage needs the cores)."
    )
    classes: list[str] | None = Field(None, description="Categories to track (default: all); others pass through untracked.")
    high_score: float = Field(0.5, gt=0, lt=1, description="Detections at or above this score are matched first and may start tracks.")
    low_score: float = Field(0.1, gt=0, lt=1, description="Detections between this and high_score only keep tracks alive (ByteTrack's second stage).")
    new_track_score: float = Field(0.6, gt=0, lt=1, description="Lowest score that starts a track.")
    confirm_hits: int = Field(2, ge=1, le=100, description="Matches in a row before a track is confirmed and gets an id.")
    max_lost_frames: int = Field(30, ge=0, le=100_000, description="Frames a lost track is kept for re-identification.")
    appearance_gate: float = Field(0.5, gt=0, le=2, description="Cosine distance above which a track and detection are never matched.")
    crop_refresh: int = Field(
        0, ge=0, le=1000,
        description="Speed for a little identity: 0 embeds every crop; N embeds a box that can only be one object (alone, on one lone box of the frame before) only every Nth frame (bench/track_speed.py, README).",
    )
    reid_distance: float = Field(0.15, gt=0, le=2, description="Cosine distance under which a lost track is re-identified.")
    appearance_rivalry: float = Field(
        1.5, ge=0, le=10,
        description="Cost a track-detection pair pays per unit of cosine distance by which it looks less alike than the best rival pair of the same detection or track (0: off): a detection goes to the track it resembles, not the nearer one.",
    )
    scene_zones: bool = Field(
        True,
        description="Learn where tracks enter and leave the picture and re-identify a track lost where tracks leave only by a detection where they come in, and only for 10 frames (off for a camera that pans: its zones move).",
    )
    anomaly: AnomalyModelOptions | None = Field(
        None, description="Score each track's last 2 s of motion against normal motion (column anomaly.score, read by the anomaly rule); null: off."
    )
    fall: FallOptions | None = Field(
        None, description="Look for people lying where person tracks were lost or boxes are wide (column pose.lying, read by the fall rule); null: off."
    )
    reorder_window: int = Field(64, ge=1, le=100_000, description="Frames per stream held while waiting for one delivered out of order.")
    reorder_max_delay_ms: float = Field(300.0, ge=0, description="Live mode: longest a frame waits for the ones before it.")

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:
        check_categories(v or [])
        return v

    def settings(self) -> TrackerSettings:
        return TrackerSettings(
            high_score=self.high_score,
            low_score=self.low_score,
            new_track_score=self.new_track_score,
            confirm_hits=self.confirm_hits,
            max_lost_frames=self.max_lost_frames,
            appearance_gate=self.appearance_gate,
            reid_distance=self.reid_distance,
            crop_refresh=self.crop_refresh,
            appearance_rivalry=self.appearance_rivalry,
            scene_zones=self.scene_zones,
        )


def build_tracker(o: TrackOptions, device: str, on_event: Any = None) -> tuple[Tracker, Any]:
    """The tracker and the appearance encoder (None when appearance is off) that `o` describes, on `device`
    ("cpu", "cuda:0"). On a CPU runtime with the exports cached, neither model loads torch."""
    if o.motion == "lstm":
        from stages.track.motion_lstm import MotionPredictor

        motion: Any = MotionPredictor(o.motion_weights, device=device)
    else:
        motion = KalmanMotion()
    encoder = None
    if o.appearance:
        from stages.track.appearance import AppearanceEncoder

        encoder = AppearanceEncoder(
            o.appearance_weights, device=device, precision={"fp32": "float32", "bf16": "bfloat16"}[o.precision],
            backend=o.backend, threads=o.torch_threads or 1,
        )
    classes = {category_id(c) for c in o.classes} if o.classes is not None else None
    return Tracker(motion, o.settings(), classes, on_event), encoder


def embed_rows(
    tracker: Tracker, encoder: Any, images: list[np.ndarray | None], detections: list[Detections],
    frames: list[tuple[str, int]] | None = None,
) -> list[np.ndarray | None]:
    """Per frame, embeddings [N, D] of the rows the tracker uses (NaN elsewhere), every crop of every frame
    in one CNN forward; all None when appearance is off. With each frame's (stream, seq), rows that can only
    be one track are left out (Tracker.wants_embedding)."""
    if encoder is None:
        return [None] * len(detections)
    rows = [tracker.wants_embedding(d, *where) for d, where in zip(detections, frames or [(None, None)] * len(detections))]
    out: list[np.ndarray | None] = [np.full((len(d), encoder.dim), np.nan, np.float32) for d in detections]
    use = [i for i, img in enumerate(images) if rows[i].any() and img is not None]
    if use:
        embedded = encoder.embed([images[i] for i in use], [detections[i].boxes[rows[i]] for i in use])
        for i, e in zip(use, embedded):
            out[i][rows[i]] = e  # type: ignore[index]
    return out


class TrackStage(Stage):
    kind = "track"
    Options = TrackOptions

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        # No torch here: on a CPU runtime the models run without it (it takes ~2 s of CPU to import, and the
        # first frame of a replay waited for it). Where torch is loaded, it gets these threads too.
        from pipeline.device import device_name
        from stages.infer.backend import set_threads

        o: TrackOptions = self.options
        set_threads(o.torch_threads or 1)
        self.device = device_name(o.device)
        r = ctx.metrics.registry
        self.events = Counter(f"{PREFIX}_track_events", "Track lifecycle events: created, confirmed, reidentified, removed, and restarted (a stream numbered from 0 again).",
                              ["stage", "stream", "event"], registry=r)
        self.tracks = Gauge(f"{PREFIX}_tracks", "Tracks held, by state.", ["stage", "stream", "state"], registry=r)
        self.reordered = Counter(f"{PREFIX}_reorder_frames", "Frames that arrived out of order (waited), or whose place was given up (skipped).",
                                 ["stage", "outcome"], registry=r)
        self.held = Gauge(f"{PREFIX}_reorder_held", "Frames waiting in the reorder buffer.", ["stage"], registry=r)
        self.tracker, self.encoder = build_tracker(o, self.device, lambda stream, event: self.events.labels(ctx.name, stream, event).inc())
        assignment_solver()  # loaded while upstream starts, not on the first frame
        self.live = ctx.mode == "live"
        self.reorder = ReorderBuffer(o.reorder_window, o.reorder_max_delay_ms / 1000.0 if self.live else None)
        self._skipped = 0
        self.anomaly = None
        if o.anomaly is not None:
            from stages.track.anomaly import AnomalyScorer

            self.anomaly = AnomalyScorer(o.anomaly.weights, o.anomaly.backend, self.device, classes={category_id(c) for c in o.anomaly.classes})
        self.fall = None
        if o.fall is not None:
            from stages.track.fall import FallWatcher

            self.fall = FallWatcher(o.fall.backend, self.device, o.fall.search_s, o.fall.min_score)
        self.log.info("tracker: motion %s, appearance %s, on %s", o.motion, "on" if self.encoder else "off", self.device)

    # -- frames in, frames out -----------------------------------------------------------

    def process(self, batch: list[Frame]) -> list[Frame]:
        ready: list[Frame] = []
        now = time.monotonic() if self.live else 0.0
        for f in batch:
            got = self.reorder.push(f, now)
            if not any(g is f for g in got):
                self.reordered.labels(self.ctx.name, "waited").inc()  # f came before an earlier frame
            ready += got
        return self._track(ready) + self._late()

    def tick(self) -> list[Frame]:
        if not self.live:
            return []  # replay releases by arrival order alone, never by the clock
        return self._track(self.reorder.poll(time.monotonic())) + self._late()

    def flush(self, stream: str | None) -> list[Frame]:
        streams = [stream] if stream is not None else list(self.reorder.streams)
        out: list[Frame] = []
        for s in streams:
            out += self._track(self.reorder.flush(s))
        return out + self._late()

    def start_stream(self, stream: str, start: StreamStart) -> None:
        self.reorder.start(stream, from_start=self.ctx.streams.slots[stream].announced)
        # A file that starts again sends the same frames again: its ids start again too, as in the first run.
        self.tracker.start_stream(stream, continue_ids=start.live)

    def end_stream(self, stream: str, end: StreamEnd) -> None:
        self.tracker.end_stream(stream)  # a stream (epoch) that ended frees its tracks
        if self.anomaly is not None:
            self.anomaly.end_stream(stream)
        if self.fall is not None:
            self.fall.end_stream(stream)
        for state in ("tentative", "confirmed", "lost"):
            self.tracks.labels(self.ctx.name, stream, state).set(0)

    def _late(self) -> list[Frame]:
        """Frames whose place in the order was given up: handed on untracked, and counted."""
        late, self.reorder.late = self.reorder.late, []
        for f in late:
            self.reordered.labels(self.ctx.name, "late").inc()
        if self.reorder.skipped != self._skipped:
            self.reordered.labels(self.ctx.name, "skipped").inc(self.reorder.skipped - self._skipped)
            self._skipped = self.reorder.skipped
        self.held.labels(self.ctx.name).set(self.reorder.held())
        return late

    def _track(self, frames: list[Frame]) -> list[Frame]:
        """Track frames given in order per stream: one CNN forward for all their crops, then one
        tracker step (one motion forward) per wave of at most one frame per stream."""
        if not frames:
            return []
        embeddings = self._embed(frames)
        waves: list[list[int]] = []
        depth: dict[str, int] = {}
        for i, f in enumerate(frames):
            d = depth.get(f.stream, 0)
            depth[f.stream] = d + 1
            if d == len(waves):
                waves.append([])
            waves[d].append(i)
        for wave in waves:
            try:
                results = self.tracker.step(
                    [StepInput(frames[i].stream, frames[i].seq, frames[i].detections, embeddings[i], (frames[i].width, frames[i].height))
                     for i in wave]
                )
            except Exception as exc:
                # Tracking state moves frame by frame, so a frame cannot be retried later; it goes on untracked.
                for i in wave:
                    self.ctx.metrics.frames_failed.labels(self.ctx.name, frames[i].stream).inc()
                self.log.error("tracking failed on %s: %r", ", ".join(f"{frames[i].stream}#{frames[i].seq}" for i in wave), exc)
                continue
            if self.anomaly is not None:
                results = self.anomaly.score([(frames[i].stream, frames[i].seq, frames[i].pts, d, (frames[i].width, frames[i].height))
                                              for i, d in zip(wave, results)])  # fmt: skip
            if self.fall is not None:  # after the anomaly model: a row found by pose is no detector's box
                results = self.fall.step([(frames[i].stream, frames[i].seq, frames[i].pts, frames[i].image, d) for i, d in zip(wave, results)])
            for i, det in zip(wave, results):
                frames[i].detections = det
        for stream in depth:
            st = self.tracker.streams.get(stream)
            if st is not None:
                for state, n in st.counts().items():
                    self.tracks.labels(self.ctx.name, stream, state).set(n)
        return frames

    def _embed(self, frames: list[Frame]) -> list[np.ndarray | None]:
        return embed_rows(self.tracker, self.encoder, [f.image for f in frames], [f.detections for f in frames], [(f.stream, f.seq) for f in frames])
