"""Tracking a whole recorded sequence in-process, for evaluation, tests and tools (no pipeline around it)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.detections import Detections
from stages.track.stage import TrackOptions, build_tracker, embed_rows
from stages.track.tracker import Stage1, StepInput


def track_sequence(
    frames: list[np.ndarray], detections: list[Detections], options: TrackOptions = TrackOptions(), stream: str = "seq",
    embed: Callable[..., list[np.ndarray | None]] = embed_rows,
    stage1_hook: Callable[[Stage1], np.ndarray | None] | None = None,
    on_frame: Callable[[int, Detections], None] | None = None,
) -> list[Detections]:
    """Each frame's detections with track ids, as the track stage would give them in replay. For diagnoses: `embed`
    (the stage's `embed_rows` by default, same arguments) changes what the tracker sees of the boxes, `stage1_hook`
    sees (and may replace) each frame's stage-1 costs (`Tracker.stage1_hook`), `on_frame` sees each tracked frame
    as it comes."""
    if len(frames) != len(detections):
        raise ValueError(f"{len(frames)} frames but {len(detections)} detection sets")
    tracker, encoder = build_tracker(options, "cpu")
    tracker.stage1_hook = stage1_hook
    out = []
    for i, (img, det) in enumerate(zip(frames, detections)):
        emb = embed(tracker, encoder, [img], [det], [(stream, i)])[0]
        out.append(tracker.step([StepInput(stream, i, det, emb, (img.shape[1], img.shape[0]))])[0])
        if on_frame is not None:
            on_frame(i, out[-1])
    return out
