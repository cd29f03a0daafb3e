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

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.detections import Detections

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "vidpipe" / "tracker_histories"
SEED_OFFSET = 200_000
VTEST_RANGE = (300, 680)


def _detect(name: str, frames: list[np.ndarray]) -> list[Detections]:
    from pipeline.protocol import Frame
    from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions
    from tools.tracklets import load_detections, save_detections

    digest = hashlib.sha256()
    for f in frames:
        digest.update(f.tobytes())
    cache = CACHE / f"{name}-{digest.hexdigest()[:16]}.npz"
    if cache.exists():
        return load_detections(cache)
    detector = CocoSsdDetector(CocoSsdOptions(device="cpu", score_threshold=0.1, classes=["person"]))
    out: list[Detections] = []
    for i in range(0, len(frames), 8):
        batch = [Frame(name, j, 0.0, 0.0, f.shape[1], f.shape[0], f) for j, f in enumerate(frames[i : i + 8], start=i)]
        out += detector.detect(batch)
    save_detections(cache, out)
    return out


def track_histories(frames: list[np.ndarray], dets: list[Detections]) -> list[np.ndarray]:
    """Each confirmed track's matched boxes as a [T, 4] xyxy array over its frames (NaN where it had none)."""
    from stages.track.stage import TrackOptions, build_tracker, embed_rows
    from stages.track.tracker import StepInput

    tracker, encoder = build_tracker(TrackOptions(motion="kalman", classes=["person"]), "cpu")
    # Every usable crop embedded, as when these histories were first made (not the tracker's crop skipping,
    # a speed setting): the bundled weights are reproducible from them.
    tracker.s = replace(tracker.s, embedding_refresh=0)
    tracked = []
    for i, (img, det) in enumerate(zip(frames, dets)):
        emb = embed_rows(tracker, encoder, [img], [det])[0]
        tracked.append(tracker.step([StepInput("histories", i, det, emb)])[0])
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
    from tools.tracklets import read_frames

    bank = sprite_bank(ROOT)
    out: list[np.ndarray] = []
    for spec in evaluation_specs():
        spec = replace(spec, name=spec.name + "_motion", seed=spec.seed + SEED_OFFSET)
        seq = make_sequence(spec, bank)
        got = track_histories(seq.frames, _detect(spec.name, seq.frames))
        out += got
        log(f"  {spec.name}: {len(got)} tracks")  # type: ignore[operator]
    frames = [img for _, img in read_frames(ROOT / "sample_videos" / "vtest.avi", *VTEST_RANGE)]
    got = track_histories(frames, _detect("vtest_motion", frames))
    log(f"  vtest.avi {VTEST_RANGE[0]}-{VTEST_RANGE[1] - 1}: {len(got)} tracks")  # type: ignore[operator]
    return out + got
