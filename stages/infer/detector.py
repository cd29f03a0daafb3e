"""Primary detectors: a batch of frames in, one Detections per frame out.

`CnnDetector` holds what every CNN detector shares: frames of one size are
stacked and uploaded as uint8 in one go, colour order is swapped on the device,
the network runs under inference mode (and autocast where asked), then per-class
score thresholds, per-class NMS, and the mapping of the model's score columns
onto the pipeline's categories. A subclass says only how its network turns
uint8 RGB frames into scores and boxes.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections import defaultdict

import numpy as np
import torch
from torch import Tensor

from pipeline.categories import CATEGORIES, category_id
from pipeline.detections import Detections
from pipeline.protocol import Frame
from stages.infer.device import autocast, resolve_precision, select_device
from stages.infer.backend import CpuRuntime, resolve_backend
from stages.infer.options import CnnOptions
from stages.infer.ssd.nms import select_detections


class Detector(ABC):
    @abstractmethod
    def detect(self, frames: list[Frame]) -> list[Detections]:
        """Detections for each frame, in order; frames of one stream arrive in sequence order."""

    def reset(self, stream: str) -> None:
        """Forget per-stream state (the stream ended)."""


class CnnDetector(Detector):
    """Shared batching, upload, precision and post-processing of CNN detectors."""

    def __init__(self, options: CnnOptions, column_categories: list[int | None]) -> None:
        """column_categories[j]: the pipeline category of the model's score column j, None to drop it."""
        self.o = options
        self.device = select_device(options.device)
        self.dtype = resolve_precision(options.precision, self.device)
        wanted = {category_id(c) for c in options.classes} if options.classes is not None else set(range(len(CATEGORIES)))
        self.column_category = torch.tensor([c if c is not None and c in wanted else -1 for c in column_categories])
        thresholds = [
            options.class_thresholds.get(CATEGORIES[c], options.score_threshold) if c >= 0 else 2.0
            for c in self.column_category.tolist()
        ]
        self.column_threshold = torch.tensor(thresholds, dtype=torch.float32, device=self.device)
        self.column_category = self.column_category.to(self.device)
        self.kept_columns = torch.nonzero(self.column_category >= 0).flatten()
        if not len(self.kept_columns):
            raise ValueError("no model class maps to the categories asked for in `classes`")
        self.min_threshold = float(self.column_threshold[self.kept_columns].min())
        self.backend = "torch"  # a subclass that compiles its network through the backend layer says which

    def kept_model_columns(self) -> list[int]:
        """The model's score columns that map to a category the pipeline keeps."""
        return self.kept_columns.tolist()

    def forward_images(self, images: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        """BGR uint8 frames of one size -> forward(): stacked, uploaded as uint8, colour swapped on the device."""
        batch = torch.from_numpy(np.stack(images))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        return self.forward(batch.flip(-1))  # BGR (OpenCV) -> RGB, on the device

    @abstractmethod
    def forward(self, rgb: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 RGB [B, H, W, 3] on the device -> scores [B, A, C] in [0, 1] and boxes [B, A, 4]
        normalised to the frame as (ymin, xmin, ymax, xmax)."""

    def detect(self, frames: list[Frame]) -> list[Detections]:
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, f in enumerate(frames):
            if f.image is None:
                raise ValueError(f"frame {f.stream}#{f.seq} carries no pixels (forward_pixels is off upstream)")
            by_size[f.image.shape].append(i)
        out: list[Detections] = [Detections()] * len(frames)
        with torch.inference_mode():
            for shape, indices in by_size.items():
                for i, det in zip(indices, self._detect_same_size([frames[i].image for i in indices], shape)):  # type: ignore[misc]
                    out[i] = det
        return out

    def _detect_same_size(self, images: list[np.ndarray], shape: tuple[int, ...]) -> list[Detections]:
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"CNN detectors take 3-channel frames, got shape {shape}")
        # Precision is the backend's business except in eager torch, where autocast applies it.
        with autocast(self.device, self.dtype) if self.backend == "torch" else contextlib.nullcontext():
            scores, boxes = self.forward_images(images)
        scores = scores.float()
        # Columns the pipeline does not keep can never pass; the others need their own threshold.
        scores = torch.where(scores >= self.column_threshold, scores, torch.zeros_like(scores))
        h, w = shape[:2]
        scale = torch.tensor([h, w, h, w], dtype=torch.float32, device=self.device)
        results = []
        for kept_boxes, kept_scores, columns in select_detections(
            scores, boxes.float(), self.min_threshold, self.o.nms_iou, self.o.max_detections
        ):
            yxyx = kept_boxes * scale
            xyxy = yxyx[:, [1, 0, 3, 2]]
            xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clamp(0, w)
            xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clamp(0, h)
            results.append(
                Detections(
                    xyxy.cpu().numpy(),
                    kept_scores.cpu().numpy(),
                    self.column_category[columns].cpu().numpy(),
                )
            )
        return results


def cnn_backend(options: CnnOptions, device: torch.device, dtype: torch.dtype, cpu_runtime: CpuRuntime) -> str:
    """The backend a CNN detector runs on: bf16 on the CPU and fp32 on CUDA need eager torch (autocast)."""
    if options.backend == "auto" and (dtype != torch.float32) == (device.type == "cpu"):
        return "torch"
    chosen = resolve_backend(options.backend, device, cpu_runtime)
    if chosen in ("onnxruntime", "openvino") and dtype != torch.float32:
        raise ValueError(f"precision {options.precision} runs on backend torch only; {chosen} runs fp32")
    return chosen
