"""The COCO-SSD detector (SSDLite MobileNetV2 trained on COCO) as a primary detector of the infer stage.

It runs through the backend layer (`stages/infer/backend.py`): the network that computes only the kept
classes (`SsdDetectorNet`) on OpenVINO on the CPU by default, CUDA graphs in fp16 on a GPU, eager torch
when asked for (or for bf16 on the CPU, which only torch's autocast gives). The resize taps are gathered where
the frames are (with the BGR->RGB swap folded into the gather); the blend and normalisation are the network's
first ops, so every backend runs them.

On a CPU runtime the whole detector is numpy and the runtime: the export is found by a key made from the
weights and the network's source files (backend.file_key), so once it is cached the infer process never
builds the torch model, nor imports torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np
from pydantic import Field

from pipeline.categories import category_id
from pipeline.detections import Detections
from pipeline.paths import InputPath
from stages.infer.backend import CpuRunner, CpuRuntime, compile_cached, file_key
from stages.infer.detector import CnnDetector, CnnOptions, cnn_backend
from stages.infer.ssd import taps
from stages.infer.ssd.spec import DEFAULT_WEIGHTS, INPUT_SIZE, NUM_CLASSES

if TYPE_CHECKING:
    from torch import Tensor

# COCO ids this pipeline has categories for; the other 72 COCO classes are dropped.
COCO_TO_CATEGORY: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 6: "bus", 8: "truck", 10: "traffic_light", 13: "stop_sign",
}  # fmt: skip
# Frames off the wire are read-only buffers; the gather only reads them, so no copy is made to please torch.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
# Fastest CPU runtime for this network, measured by bench/backends.py (README, Performance).
CPU_RUNTIME: CpuRuntime = "openvino"
SSD_DIR = Path(__file__).resolve().parent.parent / "ssd"  # the network's code: part of its export key
EXAMPLE_FRAME = (576, 768)  # the export's example input (the batch and the taps' values do not matter)


class CocoSsdOptions(CnnOptions):
    type: Literal["coco_ssd"] = Field("coco_ssd", description="COCO-SSD (SSDLite MobileNetV2, COCO), the default: see Detection.")
    weights: InputPath | None = Field(None, description="state_dict of SSDLiteMobileNetV2; null: the bundled COCO weights.")


class CocoSsdDetector(CnnDetector):
    type = "coco_ssd"
    Options = CocoSsdOptions
    cpu_bf16_default = True  # bf16 in OpenVINO: 11.4 against 16.8 ms a frame, AP50 within 0.003 (README, Performance)

    def __init__(self, options: CocoSsdOptions) -> None:
        # Score column j is COCO id j + 1.
        all_columns = [category_id(COCO_TO_CATEGORY[j + 1]) if j + 1 in COCO_TO_CATEGORY else None for j in range(NUM_CLASSES)]
        super().__init__(options, all_columns)
        # Only the kept columns are computed: the network's column i is the model's column columns[i].
        columns = self.kept_model_columns()
        self.set_columns(self.column_category[columns], self.column_threshold[columns])
        self.backend = cnn_backend(options, self.device_name, self.precision, CPU_RUNTIME)
        self.numpy_path = self.backend in ("onnxruntime", "openvino")
        weights = Path(options.weights or DEFAULT_WEIGHTS)
        key = file_key([weights, *SSD_DIR.glob("*.py")], f"coco_ssd columns={columns} frame={EXAMPLE_FRAME}")

        def build() -> tuple[Any, list[Any]]:
            import torch

            from stages.infer.ssd.model import SsdDetectorNet, load_model
            from stages.infer.ssd.preprocess import gather_taps, legacy_taps

            rows, cols, dy, dx = legacy_taps(*EXAMPLE_FRAME, INPUT_SIZE, bgr=True)
            example = [gather_taps(torch.zeros(1, *EXAMPLE_FRAME, 3, dtype=torch.uint8), rows, cols), dy[None], dx[None]]
            return SsdDetectorNet(load_model(weights), columns), example

        self.net = compile_cached(
            build, key=key, name="coco_ssd", backend=self.backend, device=self.device_name, cpu_default=CPU_RUNTIME,
            channels_last=options.channels_last, per_sample=True, precision=self.precision if self.backend == "openvino" else "fp32",
        )  # fmt: skip
        self._taps: dict[tuple[int, int, bool], Any] = {}
        self._pixels: dict[int, np.ndarray] = {}  # per frame width, for taps.gather_bgr

    def _taps_for(self, h: int, w: int, bgr: bool) -> Any:
        """Tap indices and weights of a frame size, computed once per size and colour order: numpy arrays on the
        numpy path, else tensors on the device."""
        found = self._taps.get((h, w, bgr))
        if found is None:
            found = taps.legacy_taps(h, w, INPUT_SIZE, bgr)
            if not self.numpy_path:
                import torch

                found = tuple(torch.from_numpy(t).to(self.device) for t in found)
            self._taps[(h, w, bgr)] = found
        return found

    def _pixels_for(self, w: int) -> np.ndarray:
        found = self._pixels.get(w)
        if found is None:
            found = self._pixels[w] = taps.pixel_columns(w, INPUT_SIZE)
        return found

    def _run(self, gathered: Any, dy: Any, dx: Any) -> tuple[Any, Any]:
        n = gathered.shape[0]
        if self.numpy_path:
            return self.net(gathered, np.broadcast_to(dy, (n, len(dy))), np.broadcast_to(dx, (n, len(dx))))
        scores, boxes = self.net(gathered, dy.expand(n, -1), dx.expand(n, -1))
        return scores.to(self.device), boxes.to(self.device)

    def _detect_same_size(self, images: list[np.ndarray], shape: tuple[int, ...]) -> list[Detections]:
        if not (self.numpy_path and isinstance(self.net, CpuRunner) and len(shape) == 3 and shape[2] == 3):
            return super()._detect_same_size(images, shape)
        rows, _, dy, dx = self._taps_for(shape[0], shape[1], bgr=True)
        pixels = self._pixels_for(shape[1])

        def one(run: Callable[..., list[np.ndarray]], image: np.ndarray) -> Detections:
            scores, boxes = run(taps.gather_bgr(image, rows, pixels), dy[None], dx[None])
            return self._select_numpy(scores, boxes, shape)[0]

        # Each frame's gather, network and NMS on one worker: the stage's thread does none of it between batches.
        return self.net.map_samples(one, images)

    def forward_images(self, images: list[np.ndarray]) -> tuple[Any, Any]:
        """BGR uint8 frames of one size -> scores of the kept columns and boxes (numpy on the numpy path)."""
        h, w = images[0].shape[:2]
        if self.numpy_path:
            rows, _, dy, dx = self._taps_for(h, w, bgr=True)
            pixels = self._pixels_for(w)
            # Gather each frame where it lies: no stacked copy of the whole frames.
            return self._run(np.concatenate([taps.gather_bgr(img, rows, pixels) for img in images]), dy, dx)
        import torch

        from stages.infer.ssd.preprocess import gather_taps

        if self.device.type == "cuda":  # upload the frames, gather on the GPU
            return self.forward(torch.from_numpy(np.stack(images)).pin_memory().to(self.device, non_blocking=True), bgr=True)
        rows, cols, dy, dx = self._taps_for(h, w, bgr=True)
        return self._run(torch.cat([gather_taps(torch.from_numpy(img)[None], rows, cols) for img in images]), dy, dx)

    def forward(self, rgb: Tensor, bgr: bool = False) -> tuple[Any, Any]:
        """uint8 frames [B, H, W, 3] on the device (RGB, or BGR with `bgr`) -> scores of the kept columns, boxes."""
        rows, cols, dy, dx = self._taps_for(rgb.shape[1], rgb.shape[2], bgr)
        if self.numpy_path:
            return self._run(taps.gather_taps(rgb.cpu().numpy(), rows, cols), dy, dx)
        from stages.infer.ssd.preprocess import gather_taps

        return self._run(gather_taps(rgb, rows, cols), dy, dx)
