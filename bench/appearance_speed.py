"""What the appearance CNN costs the tracker per frame: embed() for N person-sized boxes of one vtest.avi frame.

    python bench/appearance_speed.py [--boxes 50] [--threads 2] [--precision auto|float32|bfloat16]

Prints min, 25th percentile and median milliseconds of `--repeats` calls after a warm-up
(stages/track/weights/PROVENANCE-appearance.md quotes these figures).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None)
    p.add_argument("--precision", default="auto")
    p.add_argument("--boxes", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args(argv)

    import torch

    from stages.track.appearance import AppearanceEncoder
    from tools.tracklets import read_frames

    torch.set_num_threads(args.threads)
    _, img = next(read_frames(ROOT / "sample_videos" / "vtest.avi", 400, 401))
    rng = np.random.default_rng(0)
    wh = rng.uniform([20, 50], [60, 130], (args.boxes, 2))
    xy = rng.uniform([0, 0], [768 - 20, 576 - 50], (args.boxes, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    enc = AppearanceEncoder(args.weights, precision=args.precision)
    for _ in range(20):
        enc.embed([img], [boxes])
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        enc.embed([img], [boxes])
        times.append(time.perf_counter() - t0)
    ms = 1000 * np.array(times)
    print(f"{enc.crop_h}x{enc.crop_w} crops, {enc.precision} on {enc.backend}: {args.boxes} crops, {args.threads} threads: min {ms.min():.2f}, "
          f"p25 {np.percentile(ms, 25):.2f}, median {np.median(ms):.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
