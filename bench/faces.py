"""Face stage cost per frame with 0, 1 and 5 faces, against the primary detector in the same run.

    python bench/faces.py [--reps 20] [--threads N] [--on frames|persons]

Frames are 640x480 composites of real pixels: the empty vtest.avi scene (the per-pixel median of its
frames: no people, so no faces) with 0, 1 or 5 frames of carphone_pristine.mp4 (a real face each) pasted
in. Each configuration is timed over the same frames: MTCNN alone, MTCNN + watchlist encoding (when the
[faces] extra is installed), and COCO-SSD on the same frame as the baseline. Figures are medians over
`--reps` runs; the ratios are what to compare across machines.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.detections import Detections  # noqa: E402
from pipeline.protocol import Frame  # noqa: E402
from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions  # noqa: E402
from stages.infer.faces.runner import FaceRunner, FacesOptions  # noqa: E402
from tools import tracklets  # noqa: E402

SAMPLES = ROOT / "sample_videos"


def read_frames(path: Path, step: int = 1) -> list[np.ndarray]:
    return [image for i, image in tracklets.read_frames(path) if i % step == 0]


def scenes() -> tuple[dict[int, np.ndarray], np.ndarray]:
    """{faces: 640x480 frame} and the carphone frame used to enrol."""
    background = np.median(np.stack(read_frames(SAMPLES / "vtest.avi", step=16)), axis=0).astype(np.uint8)
    background = cv2.resize(background, (640, 480), interpolation=cv2.INTER_AREA)
    faces = read_frames(SAMPLES / "carphone_pristine.mp4", step=20)
    out = {0: background.copy()}
    one = background.copy()
    big = cv2.resize(faces[0], (264, 216))
    one[120:336, 188:452] = big
    out[1] = one
    five = background.copy()
    spots = [(10, 10), (10, 230), (10, 450), (250, 110), (250, 340)]
    for (y, x), face in zip(spots, faces[1:6]):
        five[y : y + 216, x : x + 176] = cv2.resize(face, (176, 216))
    out[5] = five
    return out, faces[0]


_clock = [0]


def frame(image: np.ndarray) -> Frame:
    """The next frame of a 10 fps stream (its pts decides when an identity is encoded again)."""
    _clock[0] += 1
    return Frame("bench", _clock[0], _clock[0] / 10.0, time.time(), image.shape[1], image.shape[0], image=image, detections=Detections())


def timed(fn, reps: int, mean: bool = False) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return (statistics.mean(times) if mean else statistics.median(times)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--on", choices=["frames", "persons"], default="frames")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    log = logging.getLogger("bench")
    frames, enrol = scenes()
    ssd = CocoSsdDetector(CocoSsdOptions())
    plain = FaceRunner(FacesOptions(on=args.on), device, log)
    recog = reuse = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            (Path(tmp) / "carphone").mkdir()
            cv2.imwrite(str(Path(tmp) / "carphone" / "enrol.png"), cv2.resize(enrol, (352, 288)))
            recog = FaceRunner(FacesOptions(on=args.on, watchlist={"folder": tmp}, reencode_after_s=0), device, log)
            reuse = FaceRunner(FacesOptions(on=args.on, watchlist={"folder": tmp}), device, log)
        except ImportError as exc:
            print(f"(no watchlist encoding: {exc})")
        print(f"torch threads {torch.get_num_threads()}, {args.reps} reps, faces on {args.on}; milliseconds per 640x480 frame (median)")
        print("+encode: every face of every frame; +reuse: a 10 fps stream, faces encoded again after 1 s (mean per frame)")
        print("faces  found  mtcnn  +encode  +reuse  coco_ssd  mtcnn/ssd  (mtcnn+encode)/ssd  (mtcnn+reuse)/ssd")
        for n, image in frames.items():
            base = timed(lambda: ssd.detect([frame(image)]), args.reps)
            if args.on == "persons":
                dets = ssd.detect([frame(image)])[0]
            else:
                dets = Detections()

            def run(runner: FaceRunner) -> Frame:
                f = frame(image)
                f.detections = dets
                runner.apply([f])
                return f

            found = int((run(plain).detections.class_ids == 9).sum())
            t_plain = timed(lambda: run(plain), args.reps)
            t_rec = timed(lambda: run(recog), args.reps) if recog else float("nan")
            t_reuse = timed(lambda: run(reuse), args.reps, mean=True) if reuse else float("nan")
            print(f"{n:5d}  {found:5d}  {t_plain:5.1f}  {t_rec:7.1f}  {t_reuse:6.1f}  {base:8.1f}  {t_plain / base:9.2f}"
                  f"  {t_rec / base:17.2f}  {t_reuse / base:16.2f}")


if __name__ == "__main__":
    main()
