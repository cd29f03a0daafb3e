"""COCO-SSD detector speed on this machine, and what the pipeline keeps of it.

Prints, in one run (this machine is shared and noisy, so compare within a run):
- the bare detector's frames/s at batch 1, 4 and 8 (fp32, channels_last: the pipeline's CPU
  default), with bf16 autocast next to it and whether bf16 keeps the same detections;
- the replay fps of vtest.avi through the real pipeline (decode -> infer -> record processes)
  and its ratio to the bare detector at the same batch size (target: at least 0.85);
- the motion gate on vtest.avi: the share of frames that skip the CNN and how many of the
  ungated detections the gated run still reports.

    python bench/detect.py [--quick] [--video sample_videos/vtest.avi]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from pipeline.boxes import box_iou  # noqa: E402
from pipeline.detections import Detections  # noqa: E402
from pipeline.protocol import Frame  # noqa: E402
from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions  # noqa: E402
from stages.infer.gate import GateOptions, MotionGate, fill_gated  # noqa: E402


def read_frames(video: Path, limit: int | None) -> list[Frame]:
    cap = cv2.VideoCapture(str(video))
    frames: list[Frame] = []
    while limit is None or len(frames) < limit:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(Frame("v", len(frames), len(frames) / 10, 0.0, img.shape[1], img.shape[0], img))
    return frames


def detector_fps(det: CocoSsdDetector, frames: list[Frame], batch: int) -> float:
    det.detect(frames[:batch])  # warm-up: first-call allocations and kernel selection
    t0 = time.perf_counter()
    for i in range(0, len(frames) - batch + 1, batch):
        det.detect(frames[i : i + batch])
    n = (len(frames) // batch) * batch
    return n / (time.perf_counter() - t0)


def same_detections(a: Detections, b: Detections, tol_px: float = 2.0) -> bool:
    if len(a) != len(b):
        return False
    if not len(a):
        return True
    ia, ib = np.lexsort(a.boxes.T[::-1]), np.lexsort(b.boxes.T[::-1])
    return bool(
        np.array_equal(a.class_ids[ia], b.class_ids[ib]) and np.abs(a.boxes[ia] - b.boxes[ib]).max() <= tol_px
    )


def recall_of(reference: list[Detections], other: list[Detections]) -> tuple[int, int]:
    """How many reference detections `other` also has (IoU >= 0.5, same class), frame by frame."""
    found = total = 0
    for ref, got in zip(reference, other):
        total += len(ref)
        if not len(ref) or not len(got):
            continue
        iou = box_iou(ref.boxes, got.boxes)
        iou[ref.class_ids[:, None] != got.class_ids[None, :]] = 0
        found += int((iou >= 0.5).any(axis=1).sum())
    return found, total


def pipeline_replay_fps(video: Path, batch: int, record_video: bool) -> tuple[float, float, int]:
    """(steady fps, whole-run fps, frames) of a real replay; steady fps is read off the record stage's
    /metrics between 10% and 90% of the frames, so process start-up is left out."""
    from tests.helpers.procs import free_port_block, metric, scrape

    with tempfile.TemporaryDirectory(prefix="vpb-") as tmp:
        out = Path(tmp) / "out"
        base = free_port_block(5)
        cfg = {
            "mode": "replay",
            "streams": [{"id": "v", "source": str(video.resolve())}],
            "stages": [
                {"name": "decode", "kind": "decode"},
                {"name": "infer", "kind": "infer", "batch": {"max_size": batch}},
                {"name": "record", "kind": "record", "options": {"out_dir": str(out), "video": record_video}},
            ],
            "transport": {"run_dir": tmp},
            "metrics": {"port_base": base},
        }
        path = Path(tmp) / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        total = int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-P", "-m", "pipeline.cli", "--log-level", "WARNING", "run", str(path)],
                                env=env, cwd=ROOT)
        marks: dict[str, tuple[float, float]] = {}
        while proc.poll() is None:
            try:
                n = metric(scrape(base + 3), "vidpipe_frames_in_total", stream="v")
            except OSError:
                n = 0.0
            now = time.perf_counter()
            if n >= 0.1 * total and "a" not in marks:
                marks["a"] = (now, n)
            if n >= 0.9 * total and "b" not in marks:
                marks["b"] = (now, n)
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"replay failed with status {proc.returncode}")
        frames = json.loads((out / "summary.json").read_text())["streams"]["v"]["frames"]
    (ta, na), (tb, nb) = marks["a"], marks["b"]
    return (nb - na) / (tb - ta), frames / wall, frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", default=str(ROOT / "sample_videos" / "vtest.avi"))
    ap.add_argument("--quick", action="store_true", help="fewer frames (about a minute)")
    args = ap.parse_args()
    video = Path(args.video)
    torch.set_grad_enabled(False)
    frames = read_frames(video, 48 if args.quick else 160)
    gate_frames = frames if args.quick else read_frames(video, None)
    print(f"COCO-SSD on {video.name} ({frames[0].width}x{frames[0].height}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")

    fp32 = CocoSsdDetector(CocoSsdOptions(device="cpu", precision="fp32"))
    bf16 = CocoSsdDetector(CocoSsdOptions(device="cpu", precision="bf16"))
    print("\nbare detector (upload, pre-processing, network, NMS), frames/s")
    print(f"{'batch':>5}  {'fp32':>7}  {'bf16':>7}  {'bf16/fp32':>9}")
    bare = {}
    for batch in (1, 4, 8):
        f32, b16 = detector_fps(fp32, frames, batch), detector_fps(bf16, frames, batch)
        bare[batch] = f32
        print(f"{batch:>5}  {f32:7.1f}  {b16:7.1f}  {b16 / f32:9.2f}")
    det32 = [d for i in range(0, len(frames), 8) for d in fp32.detect(frames[i : i + 8])]
    det16 = [d for i in range(0, len(frames), 8) for d in bf16.detect(frames[i : i + 8])]
    same = sum(same_detections(x, y) for x, y in zip(det32, det16))
    print(f"bf16 gives the same detections (class, boxes within 2 px) as fp32 on {same}/{len(det32)} frames "
          f"({sum(map(len, det32))} fp32 detections); fp32 stays the CPU default")

    print("\npipeline replay (decode, infer, record processes) vs the bare detector at the same batch size;")
    print("bare and pipeline alternate, so both see the same machine; steady = 10%..90% of the frames")
    batch = 8
    for record_video in (False, True):
        steady, whole, n = pipeline_replay_fps(video, batch, record_video)
        again = detector_fps(fp32, frames, batch)
        ref = (bare[batch] + again) / 2
        print(f"  record video {'on ' if record_video else 'off'}: pipeline {steady:6.1f} fps steady ({whole:5.1f} whole run, "
              f"{n} frames); bare detector {ref:6.1f} fps; ratio steady {steady / ref:.2f} (target >= 0.85)")
        bare[batch] = again

    for label, clip in ((f"{len(gate_frames)} frames of {video.name}", gate_frames),
                        ("a still scene (its first frame held for 200 frames)", [gate_frames[0]] * 200)):
        print(f"\nmotion gate on {label}")
        gate = MotionGate(GateOptions(enabled=True))
        last: dict[str, Detections] = {}
        gated: list[Detections] = []
        ran_total = 0
        ungated = [d for i in range(0, len(clip), 8) for d in fp32.detect(clip[i : i + 8])]
        for i in range(0, len(clip), 8):
            chunk = clip[i : i + 8]
            ran = gate.needs_cnn(chunk)
            ran_total += sum(ran)
            cnn = fp32.detect([f for f, r in zip(chunk, ran) if r]) if any(ran) else []
            gated += fill_gated(chunk, ran, cnn, last)
        found, total = recall_of(ungated, gated)
        print(f"  CNN ran on {ran_total}/{len(ungated)} frames ({1 - ran_total / len(ungated):.0%} saved); "
              f"gated output keeps {found}/{total} of the ungated detections ({found / max(total, 1):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
