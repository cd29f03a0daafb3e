"""The infer stage kind: runs the primary detector on every batch, optionally gated by motion."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import Counter, Histogram

from pipeline.categories import category_id, category_name
from pipeline.detections import Detections
from pipeline.metrics import PREFIX
from pipeline.protocol import Frame, StreamEnd
from pipeline.stage import Stage, StageContext
from stages.infer.options import InferOptions

if TYPE_CHECKING:
    from stages.infer.detector import Detector
    from stages.infer.faces.runner import FaceRunner
    from stages.infer.gate import MotionGate
    from stages.infer.secondary import SecondaryRunner
    from stages.infer.signs.runner import SignRunner


class InferStage(Stage):
    kind = "infer"
    Options = InferOptions

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        # Each model is imported where it is used: the CLI and the other stages read InferOptions without
        # loading torch, and COCO-SSD on a CPU runtime runs without it (stages/infer/detectors/coco_ssd.py).
        from pipeline.device import cpu_cores
        from stages.infer.backend import set_threads
        from stages.infer.detectors import build_detector

        o: InferOptions = self.options
        set_threads(o.torch_threads or cpu_cores())
        self.detector: Detector = build_detector(o.detector)
        self.log.info("detector %s", self.detector.describe())
        if o.motion_gate.enabled and o.detector.type != "motion":  # motion gating motion would run MOG2 twice
            from stages.infer.gate import MotionGate

            self.gate: MotionGate | None = MotionGate(o.motion_gate)
        else:
            self.gate = None
        self._last: dict[str, Detections] = {}
        r = ctx.metrics.registry
        self.detections = Counter(f"{PREFIX}_detections", "Objects detected, by class.", ["stage", "stream", "class"], registry=r)
        self.skipped = Counter(f"{PREFIX}_cnn_skipped_frames", "Frames the motion gate kept from the CNN.", ["stage", "stream"], registry=r)
        crops = Counter(
            f"{PREFIX}_secondary_crops", "Detections of a secondary model's classes: run, or skipped (by min_score, min_size, max_crops).",
            ["stage", "model", "outcome"], registry=r,
        )
        self.secondary: SecondaryRunner | None = None
        if o.secondary:
            from pipeline.device import select_device
            from stages.infer.secondary import SecondaryRunner

            device = getattr(self.detector, "device", None) or select_device("auto")
            self.secondary = SecondaryRunner(
                o.secondary, device, on_count=lambda model, outcome, n: crops.labels(ctx.name, model, outcome).inc(n)
            )

        self.signs: SignRunner | None = None
        if o.signs is not None:
            from pipeline.device import device_name
            from stages.infer.signs.runner import SignRunner

            name = getattr(self.detector, "device_name", None) or device_name("auto")  # no torch on a CPU runtime
            candidates = Counter(f"{PREFIX}_sign_candidates", "Colour regions (and detector boxes) the sign classifier ran on.", ["stage"], registry=r)
            self.signs = SignRunner(o.signs, name, on_candidates=lambda n: candidates.labels(ctx.name).inc(n))
            self.log.info("signs: classifier on %s", self.signs.backend)

        self.faces: FaceRunner | None = None
        if o.faces is not None:
            from pipeline.device import select_device
            from stages.infer.faces.runner import FaceRunner

            device = getattr(self.detector, "device", None) or select_device("auto")
            faces_seen = Counter(f"{PREFIX}_faces", "Faces detected.", ["stage", "stream"], registry=r)
            matches = Counter(f"{PREFIX}_watchlist_matches", "Faces recognised as a watchlist identity.", ["stage", "stream", "identity"], registry=r)
            encoding = Histogram(
                f"{PREFIX}_face_encoding_seconds", "Time to encode the faces of one frame for the watchlist.", ["stage"],
                buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=r,
            )
            encoded = Counter(f"{PREFIX}_faces_encoded", "Faces encoded for the watchlist.", ["stage"], registry=r)
            self.faces = FaceRunner(
                o.faces, device, self.log,
                on_faces=lambda stream, n: faces_seen.labels(ctx.name, stream).inc(n),
                on_match=lambda stream, identity: matches.labels(ctx.name, stream, identity).inc(),
                on_encode=lambda seconds, n: (encoding.labels(ctx.name).observe(seconds), encoded.labels(ctx.name).inc(n)),
            )

    def process(self, batch: list[Frame]) -> list[Frame]:
        if self.gate is None:
            results = self.detector.detect(batch)
        else:
            from stages.infer.gate import fill_gated  # imported with MotionGate already

            ran = self.gate.needs_cnn(batch)
            cnn = self.detector.detect([f for f, r in zip(batch, ran) if r]) if any(ran) else []
            results = fill_gated(batch, ran, cnn, self._last)
            for f, r in zip(batch, ran):
                if not r:
                    self.skipped.labels(self.ctx.name, f.stream).inc()
        for frame, det in zip(batch, results):
            frame.detections = self._with_fixed(frame, det) if self.options.fixed_objects else det
        if self.secondary is not None:
            self.secondary.apply(batch)  # one forward per model over every crop of the batch
        if self.signs is not None:
            self.signs.apply(batch)  # after the secondary models: a sign row is no crop of theirs
        if self.faces is not None:
            self.faces.apply(batch)  # after the secondary models: they must not see face rows
        for frame in batch:
            det = frame.detections
            for cid in det.class_ids.tolist():
                self.detections.labels(self.ctx.name, frame.stream, category_name(cid)).inc()
        return batch

    def _with_fixed(self, frame: Frame, det: Detections) -> Detections:
        """The frame's detections and, after them, the configured fixed objects of its stream (clipped to the frame)."""
        objs = [o for o in self.options.fixed_objects if o.streams is None or frame.stream in o.streams]
        if not objs:
            return det
        scale = np.array([frame.width, frame.height] * 2, np.float32)
        boxes = np.array([np.array(o.box, np.float32) * (scale if o.relative else 1) for o in objs], np.float32)
        boxes = np.clip(boxes, 0, scale)
        fixed = Detections(
            boxes, np.ones(len(objs), np.float32), np.array([category_id(o.category) for o in objs], np.int32),
            extra={k: np.full(len(objs), -1 if v.dtype.kind == "i" else np.nan, v.dtype) for k, v in det.extra.items()},
            labels={k: list(v) for k, v in det.labels.items()},
        )
        return Detections.concat([det, fixed])

    def end_stream(self, stream: str, end: StreamEnd) -> None:
        self.detector.reset(stream)
        if self.gate is not None:
            self.gate.reset(stream)
        self._last.pop(stream, None)
        if self.faces is not None:
            self.faces.end_stream(stream)
