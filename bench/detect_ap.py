#!/usr/bin/env python
"""Detection quality of COCO-SSD on the hand-labelled frames: AP50 per class group, fp32 next to bf16.

The labels are tests/data/labels/detections.json (24 frames of vtest.avi and bikes.mp4); how detections are
matched and how AP is computed (IoU 0.5, ignored boxes, all-point interpolation) is in tools/detection_ap.py.

The detector runs with score_threshold 0.05 so the precision/recall curve reaches low scores, and with
max_detections 1000 instead of the pipeline's 100: at 0.05 a few bikes.mp4 frames would reach 100 and lose
their lowest-scoring boxes (the script says so if a frame still reaches the cap). The figures at score 0.5
(the pipeline's default threshold) are taken from the same run: NMS is per class and greedy in score order,
so the boxes scoring >= 0.5 are the ones a run at threshold 0.5 keeps.

    python bench/detect_ap.py                      # fp32 and bf16 on the CPU, ~10 s
    python bench/detect_ap.py --precision fp32     # one precision
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's pipeline/ and stages/, also without an install

from pipeline.detections import Detections  # noqa: E402
from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions  # noqa: E402
from tools.detection_ap import GROUPS, APResult, LabelledFrame, detect_frames, evaluate, load_labels  # noqa: E402

LABELS = os.path.join(ROOT, "tests", "data", "labels", "detections.json")
SCORE_THRESHOLD = 0.05
MAX_DETECTIONS = 1000
PIPELINE_THRESHOLD = 0.5

# What is scored: the two groups, then per-class AP of person (the same as people) and car.
ROWS: dict[str, frozenset[str]] = {**GROUPS, "person": frozenset({"person"}), "car": frozenset({"car"})}


def run(frames: list[LabelledFrame], precision: str, device: str) -> tuple[list[Detections], float]:
    detector = CocoSsdDetector(
        CocoSsdOptions(
            device=device, precision=precision, score_threshold=SCORE_THRESHOLD, max_detections=MAX_DETECTIONS
        )
    )
    detect_frames(detector, frames[:1])  # warm-up, not timed
    start = time.perf_counter()
    detections = detect_frames(detector, frames)
    seconds = time.perf_counter() - start
    full = [f"{f.video}#{f.frame_index}" for f, d in zip(frames, detections) if len(d) >= MAX_DETECTIONS]
    if full:
        print(f"warning: {precision}: {', '.join(full)} reached max_detections; the curve is cut", file=sys.stderr)
    return detections, seconds


def subset(
    frames: list[LabelledFrame], dets: list[Detections], video: str | None
) -> tuple[list[LabelledFrame], list[Detections]]:
    """The frames of one video (all when None) with their detections."""
    pairs = [(f, d) for f, d in zip(frames, dets) if video is None or f.video == video]
    return [f for f, _ in pairs], [d for _, d in pairs]


def fmt(x: float, digits: int = 3) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default=LABELS)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, auto (default cpu)")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    args = ap.parse_args(argv)

    start = time.perf_counter()
    frames = load_labels(args.labels)  # raises when a frame's sha256 differs from the labelled one
    videos = sorted({f.video for f in frames})
    seconds = time.perf_counter() - start
    print(f"{len(frames)} labelled frames ({', '.join(videos)}), sha256 checked, read in {seconds:.1f} s")

    runs: dict[str, list[Detections]] = {}
    for precision in args.precision:
        runs[precision], seconds = run(frames, precision, args.device)
        print(f"COCO-SSD {precision}: {sum(map(len, runs[precision]))} boxes >= {SCORE_THRESHOLD} in {seconds:.2f} s")
    results: dict[tuple[str, str | None, str], APResult] = {
        (row, video, precision): evaluate(*subset(frames, dets, video), classes)
        for precision, dets in runs.items()
        for row, classes in ROWS.items()
        for video in [None, *videos]
    }
    base = args.precision[0]
    others = args.precision[1:]

    print()
    print(f"AP50 (IoU 0.5, all-point interpolation; vehicles = {'+'.join(sorted(GROUPS['vehicles']))}, class-agnostic)")
    header = f"{'':10} {'video':10} {'GT':>4} " + " ".join(f"{'AP ' + p:>8}" for p in args.precision)
    header += "".join(f" {p + '-' + base:>10}" for p in others)
    header += f"   best F1 ({base}): F1 TP FP @score"
    print(header)
    for row in ROWS:
        for video in [None, *videos]:
            r = results[row, video, base]
            line = f"{row if video is None else '':10} {video or 'all':10} {r.n_gt:>4} "
            line += " ".join(f"{fmt(results[row, video, p].ap):>8}" for p in args.precision)
            line += "".join(f" {_delta(results[row, video, p].ap, r.ap):>10}" for p in others)
            if r.n_gt:
                line += f"   {r.best_f1:.3f} {r.best_f1_tp:>2} {r.best_f1_fp:>2} @{r.best_f1_threshold:.2f}"
            print(line)

    print()
    print(f"At score >= {PIPELINE_THRESHOLD} (the pipeline default), all frames; ignored = boxes on ignored labels")
    print(f"{'':10} {'dtype':6} {'GT':>4} {'TP':>4} {'FP':>4} {'FN':>4} {'ignored':>7} {'precision':>9} {'recall':>7}")
    for row in GROUPS:
        for p in args.precision:
            r = results[row, None, p]
            tp, fp = r.at_threshold(PIPELINE_THRESHOLD)
            ignored = _ignored_at(runs[p], frames, row, PIPELINE_THRESHOLD)
            print(
                f"{row if p == base else '':10} {p:6} {r.n_gt:>4} {tp:>4} {fp:>4} {r.n_gt - tp:>4} {ignored:>7} "
                f"{fmt(r.precision_at_05):>9} {fmt(r.recall_at_05):>7}"
            )
    return 0


def _delta(x: float, y: float) -> str:
    return "-" if math.isnan(x) or math.isnan(y) else f"{x - y:+.3f}"


def _ignored_at(dets: list[Detections], frames: list[LabelledFrame], row: str, threshold: float) -> int:
    """Detections scoring >= threshold that landed on ignored labels (counted neither TP nor FP)."""
    kept = [d[d.scores >= threshold] for d in dets]
    return evaluate(frames, kept, GROUPS[row]).n_ignored


if __name__ == "__main__":
    sys.exit(main())
