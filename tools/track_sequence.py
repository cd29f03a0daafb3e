"""Tracking a whole recorded sequence in-process, for evaluation, tests and tools (no pipeline around it)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.detections import Detections
from stages.track.stage import TrackOptions, build_tracker, embed_rows
from stages.track.tracker import StepInput


def track_sequence(
    frames: list[np.ndarray], detections: list[Detections], options: TrackOptions = TrackOptions(), stream: str = "seq",
    embed: Callable[..., list[np.ndarray | None]] = embed_rows,
) -> list[Detections]:
    """Each frame's detections with track ids, as the track stage would give them in replay. `embed` (the stage's
    `embed_rows` by default, same arguments) lets a diagnosis change what the tracker sees of the boxes."""
    if len(frames) != len(detections):
        raise ValueError(f"{len(frames)} frames but {len(detections)} detection sets")
    tracker, encoder = build_tracker(options, "cpu")
    out = []
    for i, (img, det) in enumerate(zip(frames, detections)):
        emb = embed(tracker, encoder, [img], [det], [(stream, i)])[0]
        out.append(tracker.step([StepInput(stream, i, det, emb, (img.shape[1], img.shape[0]))])[0])
    return out
