"""What the tracker itself sees of each object: the boxes it matched, frame by frame, with its misses, the boxes of
merged or half-hidden people it followed, and its cuts at occlusions. The motion LSTM learns from these
(`python -m tools.train_motion --tracked`) instead of clean trajectories only, so that it is trained where it is
used.

Material, kept apart from everything the tracker is tuned or evaluated on:
- the seven semi-synthetic recipes of `tools.synthetic.evaluation_specs` with their own seeds (+200000; the
  tuning sequences are +100000, the evaluation ones the recipes' own);
- vtest.avi frames 300-679 (the hand-labelled tracking segment is 0-299 and the motion training's held-out part
  680-794; neither is read here).
Detections: the bundled COCO-SSD at score >= 0.1, persons (as bench/track_eval.py), cached by the frames' content.
The tracker: the default options except the motion model, which is the Kalman filter here whatever the default
(the histories must not depend on the model being trained).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.detections import Detections

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "vidpipe" / "tracker_histories"
SEED_OFFSET = 200_000
VTEST_RANGE = (300, 680)


def track_histories(frames: list[np.ndarray], dets: list[Detections]) -> list[np.ndarray]:
    """Each confirmed track's matched boxes as a [T, 4] xyxy array over its frames (NaN where it had none)."""
    from stages.track.stage import TrackOptions
    from tools.track_sequence import track_sequence

    # Every usable crop embedded (crop_refresh 0, also the default): the bundled weights are reproducible from these.
    tracked = track_sequence(frames, dets, TrackOptions(motion="kalman", classes=["person"], crop_refresh=0))
    seen: dict[int, list[tuple[int, np.ndarray]]] = {}
    for f, d in enumerate(tracked):
        for box, tid in zip(d.boxes, d.track_ids):
            if tid >= 0:
                seen.setdefault(int(tid), []).append((f, np.asarray(box, np.float64)))
    out = []
    for obs in seen.values():
        if len(obs) < 3:
            continue
        first = obs[0][0]
        traj = np.full((obs[-1][0] - first + 1, 4), np.nan)
        for f, box in obs:
            traj[f - first] = box
        out.append(traj)
    return out


def training_histories(log: object = print) -> list[np.ndarray]:
    """Tracker histories of the training material (see the module's docstring)."""
    from tools.synthetic import evaluation_specs, make_sequence, sprite_bank
    from tools.tracklets import detect_frames, read_frames

    bank = sprite_bank(ROOT)
    out: list[np.ndarray] = []
    for spec in evaluation_specs():
        spec = replace(spec, name=spec.name + "_motion", seed=spec.seed + SEED_OFFSET)
        seq = make_sequence(spec, bank)
        got = track_histories(seq.frames, detect_frames(seq.frames, 0.1, ["person"], CACHE))
        out += got
        log(f"  {spec.name}: {len(got)} tracks")  # type: ignore[operator]
    frames = [img for _, img in read_frames(ROOT / "sample_videos" / "vtest.avi", *VTEST_RANGE)]
    got = track_histories(frames, detect_frames(frames, 0.1, ["person"], CACHE))
    log(f"  vtest.avi {VTEST_RANGE[0]}-{VTEST_RANGE[1] - 1}: {len(got)} tracks")  # type: ignore[operator]
    return out + got
