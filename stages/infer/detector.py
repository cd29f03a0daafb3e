"""Primary detectors: a batch of frames in, one Detections per frame out.

`CnnDetector` holds what every CNN detector shares: frames of one size are
stacked and uploaded as uint8 in one go, colour order is swapped on the device,
the network runs under inference mode (and autocast where asked), then per-class
score thresholds, per-class NMS, and the mapping of the model's score columns
onto the pipeline's categories. A subclass says only how its network turns
uint8 RGB frames into scores and boxes.

`CnnOptions` are the settings every CNN detector shares; each detector, with its own options, is a module of
stages/infer/detectors/.

A detector whose network runs on a CPU runtime (onnxruntime, OpenVINO) may return numpy arrays from forward():
the thresholds and NMS then run in numpy (pipeline/boxes.py, the same results), and such a detector
never imports torch. `device` and `dtype` are torch objects made on first use; `device_name` and
`precision` say the same without torch.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections import defaultdict
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.boxes import select_detections
from pipeline.categories import CATEGORIES, category_id, check_categories
from pipeline.detections import Detections
from pipeline.device import Precision, device_name, precision_name
from pipeline.protocol import Frame
from stages.infer.backend import BackendName, CpuRuntime, available, openvino_bf16, resolve_backend
from stages.infer.tiling import merge_tiles, tile_rects

if TYPE_CHECKING:
    import torch
    from torch import Tensor


class CnnOptions(BaseModel):
    """Settings every CNN detector shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    backend: BackendName = Field(
        "auto", description="auto: the fastest measured for the device (see Performance); torch, onnxruntime, openvino or cuda to force one."
    )
    precision: Precision = Field(
        "auto",
        description="auto: fp16 on CUDA; on the CPU bf16 for COCO-SSD in OpenVINO where the CPU has bf16 instructions (AVX512-BF16, AMX: about 1.5x fp32's speed), else fp32. fp32 forces full precision.",
    )
    channels_last: bool = Field(True, description="NHWC memory format for the convolutions (faster on CPU and GPU).")
    score_threshold: float = Field(0.5, gt=0, lt=1, description="Lowest score kept, for classes without their own.")
    class_thresholds: dict[str, float] = Field(default_factory=dict, description="Per-category score thresholds, e.g. {person: 0.4}.")
    classes: list[str] | None = Field(None, description="Categories to keep (default: every category the model maps to).")
    nms_iou: float = Field(0.5, gt=0, le=1, description="Boxes of one class overlapping more than this are merged by NMS.")
    max_detections: int = Field(100, ge=1, le=10_000, description="Most detections kept per frame.")
    tiles: int = Field(
        1,
        ge=1,
        le=4,
        description="Also detect on a tiles x tiles grid of overlapping tiles and merge (small or crowded objects: people "
        "far from the camera); 1: the whole frame only. Costs one network pass per tile more (2: 5 passes a frame).",
    )
    tile_overlap: float = Field(0.25, ge=0, lt=1, description="How much neighbouring tiles overlap, as a share of a tile.")

    @field_validator("class_thresholds")
    @classmethod
    def _thresholds(cls, v: dict[str, float]) -> dict[str, float]:
        check_categories(v)
        for name, t in v.items():
            if not 0 < t < 1:
                raise ValueError(f"threshold of {name} must be between 0 and 1, got {t}")
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:
        check_categories(v or [])
        return v


class Detector(ABC):
    """A primary detector kind sets `type` (what the config's `detector.type` names) and `Options` (its pydantic
    options, with a `type: Literal[...]` field defaulting to that name), in a module of its own in
    stages/infer/detectors/; it is built with its validated options."""

    Options: ClassVar[type[BaseModel]]  # before `type`, which from its line on names the attribute, not the builtin
    type: ClassVar[str] = ""

    @abstractmethod
    def detect(self, frames: list[Frame]) -> list[Detections]:
        """Detections for each frame, in order; frames of one stream arrive in sequence order."""

    def reset(self, stream: str) -> None:
        """Forget per-stream state (the stream ended)."""

    def describe(self) -> str:
        """What the infer stage logs when it starts: the detector, and where and how it runs."""
        return self.type


class CnnDetector(Detector):
    """Shared batching, upload, precision and post-processing of CNN detectors."""

    # `precision: auto` on a CPU with native bf16 runs the network in OpenVINO's bf16 (a detector whose bf16
    # detections were measured against fp32's sets this; the others stay fp32 on the CPU).
    cpu_bf16_default: ClassVar[bool] = False

    def __init__(self, options: CnnOptions, column_categories: list[int | None]) -> None:
        """column_categories[j]: the pipeline category of the model's score column j, None to drop it."""
        self.o = options
        self.device_name = device_name(options.device)
        self.precision = precision_name(options.precision, self.device_name)
        if options.precision == "auto" and self.cpu_bf16_default and self.device_name == "cpu" and openvino_bf16(options.backend):
            self.precision = "bf16"  # as the GPU's fp16: the device's fast precision, measured against fp32 (README)
        wanted = {category_id(c) for c in options.classes} if options.classes is not None else set(range(len(CATEGORIES)))
        categories = np.array([c if c is not None and c in wanted else -1 for c in column_categories], np.int64)
        self.set_columns(categories, np.array(
            [options.class_thresholds.get(CATEGORIES[c], options.score_threshold) if c >= 0 else 2.0 for c in categories],
            np.float32,
        ))  # fmt: skip
        if not (categories >= 0).any():
            raise ValueError("no model class maps to the categories asked for in `classes`")
        self.backend = "torch"  # a subclass that compiles its network through the backend layer says which
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None
        self._torch_columns: tuple[Tensor, Tensor] | None = None

    def set_columns(self, categories: np.ndarray, thresholds: np.ndarray) -> None:
        """The category (-1: dropped) and score threshold of each of the network's score columns."""
        self.column_category = categories
        self.column_threshold = thresholds
        kept = categories >= 0
        self.min_threshold = float(thresholds[kept].min()) if kept.any() else 1.0
        self._torch_columns = None

    @property
    def device(self) -> torch.device:
        if self._device is None:
            import torch

            self._device = torch.device(self.device_name)
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        if self._dtype is None:
            import torch

            self._dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        return self._dtype

    @dtype.setter
    def dtype(self, value: torch.dtype) -> None:
        import torch

        self._dtype = value
        self.precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[value]

    def describe(self) -> str:
        return f"{self.type} on {self.device_name} ({self.precision}, {self.backend})"

    def kept_model_columns(self) -> list[int]:
        """The model's score columns that map to a category the pipeline keeps."""
        return np.nonzero(self.column_category >= 0)[0].tolist()

    def forward_images(self, images: list[np.ndarray]) -> tuple[Any, Any]:
        """BGR uint8 frames of one size -> forward(): stacked, uploaded as uint8, colour swapped on the device."""
        import torch

        batch = torch.from_numpy(np.stack(images))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        return self.forward(batch.flip(-1))  # BGR (OpenCV) -> RGB, on the device

    @abstractmethod
    def forward(self, rgb: Tensor) -> tuple[Any, Any]:
        """uint8 RGB [B, H, W, 3] on the device -> scores [B, A, C] in [0, 1] and boxes [B, A, 4]
        normalised to the frame as (ymin, xmin, ymax, xmax); numpy arrays or tensors."""

    def detect(self, frames: list[Frame]) -> list[Detections]:
        images = []
        for f in frames:
            if f.image is None:
                raise ValueError(f"frame {f.stream}#{f.seq} carries no pixels (forward_pixels is off upstream)")
            images.append(f.image)
        if self.o.tiles < 2:
            return self._detect_images(images)
        # Tiled: every frame's tiles go through the network in the same batches as the whole frames.
        rects = [tile_rects(im.shape[1], im.shape[0], self.o.tiles, self.o.tile_overlap) for im in images]
        views = images + [im[y : y + th, x : x + tw] for im, rs in zip(images, rects) for x, y, tw, th in rs]
        found = self._detect_images(views)
        out, at = [], len(images)
        for i, (im, rs) in enumerate(zip(images, rects)):
            tiles = list(zip(found[at : at + len(rs)], rs))
            at += len(rs)
            out.append(merge_tiles(found[i], tiles, (im.shape[1], im.shape[0]), max_detections=self.o.max_detections))
        return out

    def _detect_images(self, images: list[np.ndarray]) -> list[Detections]:
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            by_size[im.shape].append(i)
        out: list[Detections] = [Detections()] * len(images)
        for shape, indices in by_size.items():
            for i, det in zip(indices, self._detect_same_size([images[i] for i in indices], shape)):
                out[i] = det
        return out

    def _detect_same_size(self, images: list[np.ndarray], shape: tuple[int, ...]) -> list[Detections]:
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"CNN detectors take 3-channel frames, got shape {shape}")
        if self.backend in ("onnxruntime", "openvino"):
            scores, boxes = self.forward_images(images)
            if isinstance(scores, np.ndarray):
                return self._select_numpy(scores, boxes, shape)
            return self._select_torch(scores, boxes, shape)
        import torch

        from pipeline.device import autocast

        with torch.inference_mode():
            # Precision is the backend's business except in eager torch, where autocast applies it.
            with autocast(self.device, self.dtype) if self.backend == "torch" else contextlib.nullcontext():
                scores, boxes = self.forward_images(images)
            return self._select_torch(scores, boxes, shape)

    def _select_numpy(self, scores: np.ndarray, boxes: np.ndarray, shape: tuple[int, ...]) -> list[Detections]:
        """Thresholds, NMS and the category mapping in numpy: step for step _select_torch's arithmetic."""
        scores = scores.astype(np.float32, copy=False)
        # Columns the pipeline does not keep can never pass; the others need their own threshold.
        scores = np.where(scores >= self.column_threshold, scores, np.float32(0))
        h, w = shape[:2]
        scale = np.array([h, w, h, w], np.float32)
        results = []
        for kept_boxes, kept_scores, columns in select_detections(
            scores, boxes.astype(np.float32, copy=False), self.min_threshold, self.o.nms_iou, self.o.max_detections
        ):
            xyxy = (kept_boxes * scale)[:, [1, 0, 3, 2]]
            xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, w)
            xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, h)
            results.append(Detections(xyxy, kept_scores, self.column_category[columns]))
        return results

    def _select_torch(self, scores: Tensor, boxes: Tensor, shape: tuple[int, ...]) -> list[Detections]:
        import torch

        from pipeline.boxes import select_detections_torch

        if self._torch_columns is None:
            self._torch_columns = (
                torch.from_numpy(self.column_category).to(self.device),
                torch.from_numpy(self.column_threshold).to(self.device),
            )
        column_category, column_threshold = self._torch_columns
        scores = scores.float()
        # Columns the pipeline does not keep can never pass; the others need their own threshold.
        scores = torch.where(scores >= column_threshold, scores, torch.zeros_like(scores))
        h, w = shape[:2]
        scale = torch.tensor([h, w, h, w], dtype=torch.float32, device=scores.device)
        results = []
        for kept_boxes, kept_scores, columns in select_detections_torch(
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
                    column_category.to(scores.device)[columns].cpu().numpy(),
                )
            )
        return results


def cnn_backend(options: CnnOptions, device: str, precision: str, cpu_runtime: CpuRuntime) -> str:
    """The backend a CNN detector runs on (device and precision by name, as CnnDetector.device_name and
    .precision): fp32 on CUDA needs eager torch; bf16 on the CPU runs in OpenVINO for models exported on the
    CPU (faster than eager torch's autocast where the CPU has bf16 instructions), else in eager torch."""
    on_cpu = not device.startswith("cuda")
    if options.backend == "auto" and on_cpu and precision == "bf16":
        # Models that run exported on the CPU (cpu_runtime not torch) take OpenVINO's bf16; the others autocast.
        return "openvino" if cpu_runtime != "torch" and available("openvino") else "torch"
    if options.backend == "auto" and (precision != "fp32") == on_cpu:  # fp16 on the CPU, fp32 on CUDA: autocast
        return "torch"
    chosen = resolve_backend(options.backend, device, cpu_runtime)
    if chosen == "onnxruntime" and precision != "fp32":
        raise ValueError(f"precision {options.precision} does not run on onnxruntime: use backend openvino or torch")
    if chosen == "openvino" and precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {options.precision} does not run on openvino: use fp32 or bf16")
    return chosen
