"""What tracking adds per frame with 50 objects, next to the detector's own time, in the same run.

    python bench/track_speed.py [--objects 50] [--frames 200] [--threads 2]

Frames are real (vtest.avi); the detections are 50 person-sized boxes walking across them with detector-like
jitter, score noise and a few dropouts, so that the tracker always holds about 50 tracks whatever the detector
would find. Tracking time is the track stage's own work per frame: one appearance-CNN forward over the crops,
one motion-model prediction over the tracks (the LSTM by default, or the Kalman filter), and association. Printed as
means per frame after a warm-up, with the bare COCO-SSD detector's time on the same frames (batch 1, in its default
precision, which each row names).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.categories import category_id  # noqa: E402
from pipeline.detections import Detections  # noqa: E402
from pipeline.protocol import Frame  # noqa: E402
from tools.tracklets import read_frames  # noqa: E402

WARMUP = 10


def walkers(n_objects: int, n_frames: int, w: int, h: int, seed: int = 0) -> list[Detections]:
    """Boxes of n people walking at 1-4 px/frame, bouncing off the frame edges, with detector noise."""
    rng = np.random.default_rng(seed)
    size = np.column_stack([rng.uniform(30, 50, n_objects), rng.uniform(80, 130, n_objects)])
    pos = np.column_stack([rng.uniform(0, w - 50, n_objects), rng.uniform(0, h - 130, n_objects)])
    vel = rng.uniform(1, 4, (n_objects, 2)) * rng.choice([-1, 1], (n_objects, 2)) * [1, 0.3]
    out = []
    for _ in range(n_frames):
        pos += vel
        over = (pos < 0) | (pos + size > [w, h])
        vel[over] *= -1
        pos = np.clip(pos, 0, [w, h] - size)
        boxes = np.column_stack([pos, pos + size]) + rng.normal(0, 1.5, (n_objects, 4))
        scores = np.clip(rng.normal(0.75, 0.15, n_objects), 0.15, 0.99)
        keep = rng.random(n_objects) > 0.03  # the odd missed detection
        out.append(Detections(boxes[keep], scores[keep], np.full(keep.sum(), category_id("person"))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=50)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions
    from stages.track.stage import TrackOptions, build_tracker, embed_rows
    from stages.track.tracker import StepInput

    torch.set_num_threads(args.threads)
    images = [img for _, img in read_frames(ROOT / "sample_videos" / "vtest.avi", 0, args.frames)]
    h, w = images[0].shape[:2]
    dets = walkers(args.objects, len(images), w, h)

    detector = CocoSsdDetector(CocoSsdOptions(device="cpu"))
    det_s: list[float] = []
    for i, img in enumerate(images[: max(WARMUP + 30, len(images) // 4)]):
        t0 = time.perf_counter()
        detector.detect([Frame("b", i, 0.0, 0.0, w, h, img)])
        det_s.append(time.perf_counter() - t0)

    print(f"{args.objects} objects a frame, {len(images)} frames of {w}x{h}, torch threads {args.threads}")
    for label, options in (
        (f"track, default ({TrackOptions().motion} + app.)", TrackOptions()),
        ("track, Kalman + appearance", TrackOptions(motion="kalman")),
        ("track, crop_refresh: 3", TrackOptions(crop_refresh=3)),
        ("track, appearance in bf16", TrackOptions(precision="bf16")),
        ("track, LSTM only", TrackOptions(motion="lstm", appearance=False)),
        ("track, Kalman only", TrackOptions(motion="kalman", appearance=False)),
    ):
        tracker, encoder = build_tracker(options, "cpu")
        parts = {"appearance CNN": 0.0, "motion model": 0.0}
        name = "predict_tracks" if hasattr(tracker.motion, "predict_tracks") else "predict"  # stateful or not
        motion_predict = getattr(tracker.motion, name)

        def timed_predict(*a: Any, _inner: Any = motion_predict) -> np.ndarray:
            t0 = time.perf_counter()
            r = _inner(*a)
            parts["motion model"] += time.perf_counter() - t0
            return r

        setattr(tracker.motion, name, timed_predict)
        total, counted, held = 0.0, 0, []
        for i, (img, d) in enumerate(zip(images, dets)):
            if i == WARMUP:
                total, parts["appearance CNN"], parts["motion model"] = 0.0, 0.0, 0.0
            t0 = time.perf_counter()
            t1 = time.perf_counter()
            emb = embed_rows(tracker, encoder, [img], [d], [("b", i)])[0]
            if encoder is not None:
                parts["appearance CNN"] += time.perf_counter() - t1
            tracker.step([StepInput("b", i, d, emb, (img.shape[1], img.shape[0]))])
            total += time.perf_counter() - t0
            counted = i + 1 - WARMUP
            held.append(sum(tracker.streams["b"].counts().values()))
        ms = total / counted * 1000
        detail = ", ".join(f"{k} {v / counted * 1000:.2f}" for k, v in parts.items() if v)
        if encoder is not None:
            detail = f"appearance {encoder.precision} on {encoder.backend}: {detail}"
        print(f"  {label:30s} {ms:6.2f} ms/frame ({detail}; association the rest), tracks held: mean {np.mean(held[WARMUP:]):.0f}")
    det_ms = float(np.mean(det_s[WARMUP:])) * 1000
    print(f"  {'detector (COCO-SSD, b=1)':30s} {det_ms:6.2f} ms/frame ({detector.precision} on {detector.backend})")


if __name__ == "__main__":
    main()
