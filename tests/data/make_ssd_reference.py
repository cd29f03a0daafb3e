"""Regenerate tests/data/ssd_reference.npz: outputs of the ONNX COCO-SSD reference on five real frames.

    pip install onnxruntime   # a dev tool only, not a dependency of vidpipe
    python tests/data/make_ssd_reference.py [--onnx /work/shared/reference/coco_ssd_mobilenet_v2.onnx]

The ONNX file is tf2onnx's conversion of the same TF.js graph the PyTorch port was converted
from. Frames are decoded with OpenCV (read sequentially, not seeked), turned BGR -> RGB, and
identified by video, index and the sha256 of the RGB bytes; tests/test_ssd_parity.py decodes them
again and checks the port against the stored raw outputs (scores [5, 1917, 90], boxes [5, 1917, 4]).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "ssd_reference.npz"
DEFAULT_ONNX = Path("/work/shared/reference/coco_ssd_mobilenet_v2.onnx")
# (video under sample_videos/, frame index): a fixed camera over a campus road (people, parked
# cars), and a moving street camera at another aspect ratio. Each frame has detections above 0.5
# (bikes.mp4 frames 50 and 150 have none) and no score within 2e-3 of that threshold.
FRAMES: tuple[tuple[str, int], ...] = (
    ("vtest.avi", 0),
    ("vtest.avi", 200),
    ("vtest.avi", 400),
    ("bikes.mp4", 30),
    ("bikes.mp4", 120),
)


def read_rgb_frames(video: Path, indices: list[int]) -> dict[int, np.ndarray]:
    """The frames at `indices` (RGB uint8), decoding sequentially from the start."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FileNotFoundError(video)
    frames: dict[int, np.ndarray] = {}
    index = 0
    try:
        while len(frames) < len(indices):
            ok, bgr = cap.read()
            if not ok:
                raise ValueError(f"{video} ended at frame {index}, wanted {sorted(indices)}")
            if index in indices:
                frames[index] = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()
    return frames


def load_frames(frames: tuple[tuple[str, int], ...] = FRAMES) -> list[np.ndarray]:
    by_video: dict[str, list[int]] = {}
    for video, index in frames:
        by_video.setdefault(video, []).append(index)
    decoded = {v: read_rgb_frames(ROOT / "sample_videos" / v, idx) for v, idx in by_video.items()}
    return [decoded[v][i] for v, i in frames]


def frame_sha256(rgb: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, default=DEFAULT_ONNX)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    session = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    scores, boxes = [], []
    images = load_frames()
    for rgb in images:
        s, b = session.run(None, {session.get_inputs()[0].name: rgb[None]})
        scores.append(s[0])
        boxes.append(b[0, :, 0, :])
    np.savez_compressed(
        args.out,
        video=np.array([v for v, _ in FRAMES]),
        frame_index=np.array([i for _, i in FRAMES], np.int64),
        frame_shape=np.array([im.shape for im in images], np.int64),
        frame_sha256=np.array([frame_sha256(im) for im in images]),
        scores=np.stack(scores).astype(np.float32),
        boxes=np.stack(boxes).astype(np.float32),
        onnx_sha256=np.array(hashlib.sha256(args.onnx.read_bytes()).hexdigest()),
        onnxruntime_version=np.array(ort.__version__),
        opencv_version=np.array(cv2.__version__),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
