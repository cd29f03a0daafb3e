"""Appearance embeddings of detection crops: a truncated ImageNet MobileNetV2 plus a small head, fine-tuned on
tracklets of the sample videos (tools/train_appearance.py) so that crops of one object lie close together.

The tracker embeds every detection of every frame, so the cost is what matters: all crops of a batch of frames
go through ONE forward, and the crops of a frame are cut and resized together (never a per-crop Python loop).
On a CPU runtime (the default on a CPU) the crops are cut in numpy and the exported network runs in ONNX
Runtime: the track process does not import torch (the network's torch modules are in appearance_net.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.device import cpu_has_bf16
from stages.infer.backend import CpuRunner, available, compile_cached, compile_module, file_key, openvino_bf16, resolve_backend

HERE = Path(__file__).resolve().parent
DEFAULT_WEIGHTS = HERE / "weights" / "appearance.pt"
# OpenVINO runs the crops in padded chunks of this many: one compiled shape instead of one per crop count.
CHUNK = 16
# Fastest CPU runtime for this network at float32, measured by bench/backends.py (README, Performance).
CPU_RUNTIME = "onnxruntime"
# torchvision's ImageNet normalisation, RGB, on 0..255 pixels.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass(frozen=True)
class AppearanceConfig:
    # Chosen by measurement (PROVENANCE-appearance.md): 64x32 or deeper cut is not better on the held-out
    # tracklets and costs 1.7x or more.
    crop_h: int = 48
    crop_w: int = 24
    blocks: int = 6  # MobileNetV2 inverted-residual blocks kept: up to 32 channels at stride 8
    head_channels: int = 128  # 1x1 conv width before pooling
    stripes: int = 4  # horizontal stripes pooled separately: keeps head/torso/legs apart
    dim: int = 128  # embedding size

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "AppearanceConfig":
        return AppearanceConfig(**{k: d[k] for k in AppearanceConfig.__dataclass_fields__ if k in d})


def _axis_taps(lo: np.ndarray, hi: np.ndarray, n: int, size: int) -> tuple[np.ndarray, ...]:
    """Bilinear taps of n output pixels spread over [lo, hi) of an axis of `size` pixels, per box.

    Output pixel j samples the continuous position lo + (j + 0.5) * (hi - lo) / n, as cv2.resize of the crop
    does, computed as torch's grid_sample (align_corners=False, zero padding) computes it, so both crop
    paths agree to float rounding. Returns the two source indices (clipped into the axis), their weights
    (0 for a tap off the axis) and the share of the footprint inside the image, each [N, n].
    """
    steps = (np.arange(n, dtype=np.float32) + np.float32(0.5)) / np.float32(n)
    pos = lo[:, None] + (hi - lo)[:, None] * steps[None, :]
    inside = np.clip(np.minimum(pos + np.float32(0.5), np.float32(size + 0.5) - pos), 0.0, 1.0)
    grid = pos * np.float32(2.0 / size) - np.float32(1.0)  # grid_sample's normalised coordinate, unnormalised back
    src = ((grid + np.float32(1.0)) * np.float32(size) - np.float32(1.0)) / np.float32(2.0)
    i0 = np.floor(src)
    f1 = src - i0
    i0 = i0.astype(np.int64)
    i1 = i0 + 1
    w0 = (np.float32(1.0) - f1) * ((i0 >= 0) & (i0 < size))
    w1 = f1 * ((i1 >= 0) & (i1 < size))
    return np.clip(i0, 0, size - 1), np.clip(i1, 0, size - 1), w0.astype(np.float32), w1.astype(np.float32), inside


def cut_crops(images: list[np.ndarray], boxes: list[np.ndarray], crop_h: int, crop_w: int) -> np.ndarray:
    """Bilinear crops of xyxy pixel boxes, normalised for the network: [sum Ni, 3, crop_h, crop_w] float32 RGB.

    images: HxWx3 uint8 BGR; boxes: [Ni, 4] per image. Parts of a box outside its frame read as the ImageNet
    mean colour (0 after normalisation): no invented edge pixels, and the box keeps its geometry, so a person
    half out of the frame stays person-shaped. The same crops as appearance_net.crop_batch (torch).

    The four taps of every output pixel are gathered by OpenCV's remap with integer maps (an exact copy of the
    pixels, a third of the time of numpy's take with index arrays), and the blend runs over rows of crop_w * 3
    interleaved values: numpy's inner loops then run over 72 values, not over one pixel's 3 (four times the
    work per call).
    """
    import cv2

    total = sum(len(b) for b in boxes)
    out = np.empty((total, crop_h, crop_w * 3), np.float32)
    # In BGR, the frames' order, repeated along a row; the channels are swapped to RGB in the final transpose.
    mean = np.tile(np.array(MEAN_RGB[::-1], np.float32), crop_w)
    inv_std = np.tile(np.float32(1.0) / np.array(STD_RGB[::-1], np.float32), crop_w)
    start = 0
    for img, b in zip(images, boxes):
        n = len(b)
        if n == 0:
            continue
        h, w = img.shape[:2]
        b = np.asarray(b, np.float32).reshape(-1, 4)
        x2 = np.maximum(b[:, 2], b[:, 0] + np.float32(1e-3))  # a degenerate box still samples one column
        y2 = np.maximum(b[:, 3], b[:, 1] + np.float32(1e-3))
        x0, x1, wx0, wx1, in_x = _axis_taps(b[:, 0], x2, crop_w, w)
        y0, y1, wy0, wy1, in_y = _axis_taps(b[:, 1], y2, crop_h, h)
        frame = np.ascontiguousarray(img)
        a0, a1 = np.repeat(wx0, 3, axis=1)[:, None, :], np.repeat(wx1, 3, axis=1)[:, None, :]

        def gather(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:  # pixels (ys[i, r], xs[i, c]): [n, crop_h, crop_w * 3]
            if max(h, w) > 32767:  # beyond remap's int16 maps: numpy's take
                return np.take(frame.reshape(-1, 3), (ys * w)[:, :, None] + xs[:, None, :], axis=0).reshape(n, crop_h, -1)
            where = np.empty((n, crop_h, crop_w, 2), np.int16)
            where[..., 0] = xs[:, None, :]
            where[..., 1] = ys[:, :, None]
            return cv2.remap(frame, where.reshape(n * crop_h, crop_w, 2), None, cv2.INTER_NEAREST).reshape(n, crop_h, -1)

        crops = gather(y0, x0) * a0
        crops += gather(y0, x1) * a1
        crops *= wy0[:, :, None]
        lower = gather(y1, x0) * a0
        lower += gather(y1, x1) * a1
        crops += lower * wy1[:, :, None]
        # Zero padding plus mean * (1 - inside) is padding with the mean colour; a box inside the frame: the mean.
        part = (in_x.min(axis=1) < 1) | (in_y.min(axis=1) < 1)
        if part.any():
            crops[part] -= mean * np.repeat(in_y[part][:, :, None] * in_x[part][:, None, :], 3, axis=2)
            crops[~part] -= mean
        else:
            crops -= mean
        np.multiply(crops, inv_std, out=out[start : start + n])
        start += n
    return np.ascontiguousarray(out.reshape(total, crop_h, crop_w, 3)[..., ::-1].transpose(0, 3, 1, 2))


class AppearanceEncoder:
    """Embeds detection boxes of whole frames with the fine-tuned AppearanceNet (inference only).

    precision "auto" runs the network in bfloat16 on CPUs with native bf16 arithmetic (AVX512-BF16, AMX):
    OpenVINO's bf16 (or torch's autocast where the backend torch is asked for), embeddings of vtest's
    detections within cosine 0.998 of float32 (tracking on the tuning sequences: HOTA 48.8 against 49.0).
    The track stage asks for float32 unless configured: bf16 pays from about 50 crops a call.
    Elsewhere, and on other devices, float32 on the fastest backend for the device; on a CPU runtime whose
    export is cached, torch is not loaded at all.
    """

    def __init__(
        self, weights: str | Path | None = None, device: Any = "cpu", precision: str = "auto",
        backend: str = "auto", threads: int | None = None,
    ) -> None:  # fmt: skip
        weights = Path(weights or DEFAULT_WEIGHTS)
        self.device = str(device)
        on_cpu = self.device.split(":")[0] == "cpu"
        if precision == "auto":  # bf16 where the CPU computes it natively and a runtime has it; else float32
            bf16 = on_cpu and (openvino_bf16(backend) or (backend == "torch" and cpu_has_bf16()))
            precision = "bfloat16" if bf16 else "float32"
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be auto, float32 or bfloat16, not {precision!r}")
        self.precision = precision
        if precision == "bfloat16" and backend == "auto":
            # bf16 on the CPU: OpenVINO's (faster than torch's autocast on small batches), else torch's.
            self.backend = "openvino" if on_cpu and available("openvino") else "torch"
        else:
            self.backend = resolve_backend(backend, self.device, CPU_RUNTIME)
        if self.backend not in ("torch", "openvino") and precision != "float32":
            raise ValueError(f"precision {precision} runs on backend openvino or torch; {self.backend} runs float32")
        self.net: Any
        if self.backend in ("onnxruntime", "openvino"):
            key = file_key([weights, HERE / "appearance_net.py", HERE / "mobilenet_v2.py"], "appearance")

            def build() -> tuple[Any, list[Any]]:
                import torch

                from stages.track.appearance_net import fuse_batchnorm, load_net

                net = load_net(weights)
                return fuse_batchnorm(net.eval()), [torch.zeros(8, 3, net.config.crop_h, net.config.crop_w)]

            runner = compile_cached(build, key=key, name="appearance", backend=self.backend, device="cpu", cpu_default=CPU_RUNTIME,
                                    threads=threads, precision="bf16" if precision == "bfloat16" else "fp32",
                                    fixed_batch=CHUNK)  # fmt: skip
            assert isinstance(runner, CpuRunner)
            _, _, self.crop_h, self.crop_w = runner.input_specs[0].shape  # type: ignore[misc]
            self.net = lambda x: runner(x)[0]
            self.dim: int = int(self.net(np.zeros((1, 3, self.crop_h, self.crop_w), np.float32)).shape[1])
            return
        import torch

        from stages.track.appearance_net import fuse_batchnorm, load_net, prepare_for_inference

        net = load_net(weights)
        self.crop_h, self.crop_w, self.dim = net.config.crop_h, net.config.crop_w, net.config.dim
        self.torch_device = torch.device(device)
        self.dtype = getattr(torch, precision)
        if self.backend == "torch":
            self.net = prepare_for_inference(net, self.torch_device, self.dtype)
        else:
            example = torch.zeros(8, 3, self.crop_h, self.crop_w)
            cuda = compile_module(fuse_batchnorm(net.eval()), (example,), name="appearance", backend=self.backend,
                                  device=self.torch_device, threads=threads)  # fmt: skip
            self.net = lambda x: cuda(x)[0]

    def embed(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """[Ni, dim] float32 L2-normalised embeddings per image, for HxWx3 uint8 BGR images and [Ni, 4] xyxy
        pixel boxes; all boxes of all images go through a single forward."""
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} box arrays")
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            return [np.zeros((0, self.dim), np.float32) for _ in counts]
        if self.backend in ("onnxruntime", "openvino"):
            emb = np.asarray(self.net(cut_crops(images, boxes, self.crop_h, self.crop_w)), np.float32)
        else:
            emb = self._embed_torch(images, boxes, counts)
        return list(np.split(emb, np.cumsum(counts)[:-1]))

    def _embed_torch(self, images: list[np.ndarray], boxes: list[np.ndarray], counts: list[int]) -> np.ndarray:
        """Crops cut on the device (one grid_sample per frame), then the network: eager torch or CUDA."""
        import torch

        from stages.track.appearance_net import crop_batch

        with torch.inference_mode():
            frames = [torch.from_numpy(np.ascontiguousarray(im)).to(self.torch_device) for im, n in zip(images, counts) if n]
            all_boxes = torch.from_numpy(np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]))
            per_image = all_boxes.to(self.torch_device).split([n for n in counts if n])  # one upload for all boxes
            x = crop_batch(frames, list(per_image), self.crop_h, self.crop_w, self.dtype)
            return np.asarray(self.net(x).float().cpu().numpy())
