"""Regenerate tests/data/mtcnn_reference.npz: facenet-pytorch 2.6.0's MTCNN detections on real frames.

facenet-pytorch pins torch < 2.3 and needs torchvision, neither of which fits vidpipe's environment, so
run this in a throwaway virtual environment (torch 2.14.1 + torchvision 0.29.1 are on this machine's disk
for Python 3.11; any pair that installs together will do):

    python -m venv /tmp/mtcnn_venv
    /tmp/mtcnn_venv/bin/pip install torch==2.14.1 torchvision==0.29.1 opencv-python-headless==4.14.0.94 requests tqdm
    /tmp/mtcnn_venv/bin/pip install --no-deps facenet_pytorch-2.6.0-py3-none-any.whl   # its pins are too old
    /tmp/mtcnn_venv/bin/python tests/data/make_mtcnn_reference.py --wheel facenet_pytorch-2.6.0-py3-none-any.whl

It imports nothing from vidpipe (only the frame reader of its sibling make_ssd_reference.py). Frames are decoded with OpenCV (read sequentially, not seeked), turned
BGR -> RGB (facenet-pytorch takes RGB) and identified by video, index and the sha256 of the RGB bytes;
each case runs `MTCNN(keep_all=True, min_face_size=..., thresholds=[0.6, 0.7, 0.7], factor=0.709)
.detect(rgb, landmarks=True)` on one frame. Faces are stored in decreasing probability, boxes as the
package returns them (its 1-based inclusive convention), all cases' faces concatenated with a count per case.
tests/test_mtcnn_parity.py decodes the frames again and checks stages.infer.faces.mtcnn against them.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import cv2
import numpy as np

try:  # imported by the parity test
    from tests.data.make_ssd_reference import read_rgb_frames
except ImportError:  # run as a script in its throwaway environment: its own folder is on sys.path
    from make_ssd_reference import read_rgb_frames

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "mtcnn_reference.npz"
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709
# (video under sample_videos/, frame index, min_face_size). carphone: one face filling a QCIF frame.
# vtest: a campus from above, no face of 20 px or more (none found) and, at 12 px, one small detection
# each (frame 0: a door at 0.95, a false detection; frame 500: a 9-pixel face at 0.83). Megamind: animated
# faces at 720x528; frame 165 adds a false 0.78 on dark background, its box reaching 54 px above the frame.
CASES: tuple[tuple[str, int, int], ...] = (
    ("carphone_pristine.mp4", 0, 20),
    ("carphone_pristine.mp4", 40, 20),
    ("carphone_pristine.mp4", 80, 20),
    ("carphone_pristine.mp4", 110, 20),
    ("vtest.avi", 0, 20),
    ("vtest.avi", 500, 20),
    ("vtest.avi", 0, 12),
    ("vtest.avi", 500, 12),
    ("Megamind.avi", 15, 20),
    ("Megamind.avi", 60, 20),
    ("Megamind.avi", 165, 20),
    ("Megamind.avi", 210, 20),
)


def load_frames(cases: tuple[tuple[str, int, int], ...] = CASES) -> list[np.ndarray | None]:
    """Each case's RGB frame; None where the video is not in sample_videos/."""
    wanted: dict[str, set[int]] = {}
    for video, index, _ in cases:
        wanted.setdefault(video, set()).add(index)
    decoded = {
        v: read_rgb_frames(ROOT / "sample_videos" / v, idx) for v, idx in wanted.items() if (ROOT / "sample_videos" / v).is_file()
    }
    return [decoded[v][i] if v in decoded else None for v, i, _ in cases]


def frame_sha256(rgb: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()


def main() -> None:
    import importlib.metadata

    import torch
    import torchvision
    from facenet_pytorch import MTCNN

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="the facenet-pytorch wheel installed (only its sha256 is recorded)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_frames()
    missing = sorted({v for (v, _, _), im in zip(CASES, images) if im is None})
    if missing:
        raise FileNotFoundError(f"sample_videos/ lacks {missing}")
    boxes, probs, points, counts = [], [], [], []
    detectors: dict[int, MTCNN] = {}
    for (video, index, min_face), rgb in zip(CASES, images):
        mtcnn = detectors.setdefault(
            min_face, MTCNN(keep_all=True, min_face_size=min_face, thresholds=list(THRESHOLDS), factor=FACTOR, device="cpu")
        )
        b, p, lm = mtcnn.detect(rgb, landmarks=True)
        if b is None:
            b, p, lm = np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        b, p, lm = np.asarray(b, np.float64), np.asarray(p, np.float64), np.asarray(lm, np.float64)
        order = np.argsort(-p, kind="stable")
        boxes.append(b[order])
        probs.append(p[order])
        points.append(lm[order])
        counts.append(len(p))
        print(f"{video}:{index} min_face_size {min_face}: {len(p)} faces {np.round(p[order], 4).tolist()}")
    np.savez_compressed(
        args.out,
        video=np.array([v for v, _, _ in CASES]),
        frame_index=np.array([i for _, i, _ in CASES], np.int64),
        min_face_size=np.array([m for _, _, m in CASES], np.int64),
        frame_shape=np.array([im.shape for im in images], np.int64),  # type: ignore[union-attr]
        frame_sha256=np.array([frame_sha256(im) for im in images]),  # type: ignore[arg-type]
        thresholds=np.array(THRESHOLDS),
        factor=np.array(FACTOR),
        count=np.array(counts, np.int64),
        boxes=np.concatenate(boxes).astype(np.float32),
        probs=np.concatenate(probs).astype(np.float32),
        landmarks=np.concatenate(points).astype(np.float32),
        facenet_pytorch_version=np.array(importlib.metadata.version("facenet-pytorch")),
        wheel_sha256=np.array(hashlib.sha256(args.wheel.read_bytes()).hexdigest() if args.wheel else ""),
        torch_version=np.array(torch.__version__),
        torchvision_version=np.array(torchvision.__version__),
        opencv_version=np.array(cv2.__version__),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
