#!/usr/bin/env python
"""What the detector's tiled inference (`detector.tiles`, stages/infer/tiling.py) costs and buys.

Prints, in one run (this machine is shared and noisy: compare within a run):
- COCO-SSD's ms per vtest.avi frame at batch 8 with the whole frame only and with 2x2 and 3x3 tiles, runs
  interleaved (default backend and precision for the device, as the pipeline), and the ratios;
- person AP50 on the hand-labelled frames (tests/data/labels/detections.json; fp32, score >= 0.05) each way.

    python bench/tiles.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.protocol import Frame  # noqa: E402
from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions  # noqa: E402
from tools.detection_ap import detect_frames, evaluate, load_labels  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cap = cv2.VideoCapture(str(ROOT / "sample_videos" / "vtest.avi"))
    images = []
    for _ in range(48):
        ok, im = cap.read()
        if not ok:
            break
        images.append(im)
    frames = [Frame("vtest", i, 0.0, 0.0, im.shape[1], im.shape[0], im) for i, im in enumerate(images)]
    grids = (1, 2, 3)
    detectors = {t: CocoSsdDetector(CocoSsdOptions(tiles=t)) for t in grids}
    times: dict[int, list[float]] = {t: [] for t in grids}
    for d in detectors.values():
        d.detect(frames[:8])  # warm-up (compiles the runtime for both input sizes)
    for _ in range(args.rounds):
        for t, d in detectors.items():
            start = time.perf_counter()
            for i in range(0, len(frames), 8):
                d.detect(frames[i : i + 8])
            times[t].append((time.perf_counter() - start) / len(frames) * 1000)
    one = float(np.median(times[1]))
    print(f"COCO-SSD ({detectors[1].describe()}), batch 8, median of {args.rounds} rounds of {len(frames)} vtest frames:")
    print(f"  whole frame  {one:6.2f} ms/frame")
    for t in grids[1:]:
        ms = float(np.median(times[t]))
        print(f"  + {t}x{t} tiles  {ms:6.2f} ms/frame  ({ms / one:.2f}x)")

    labelled = load_labels(ROOT / "tests" / "data" / "labels" / "detections.json")
    print(f"person AP50 on {len(labelled)} hand-labelled frames (fp32):")
    for t in grids:
        det = CocoSsdDetector(CocoSsdOptions(device="cpu", precision="fp32", score_threshold=0.05, max_detections=1000, tiles=t))
        r = evaluate(labelled, detect_frames(det, labelled), {"person"})
        print(f"  tiles {t}: AP50 {r.ap:.3f}, best F1 {r.best_f1:.3f} ({r.best_f1_tp} of {r.n_gt} found, {r.best_f1_fp} false, at score {r.best_f1_threshold:.2f})")


if __name__ == "__main__":
    main()
