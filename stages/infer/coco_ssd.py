"""The COCO-SSD detector (SSDLite MobileNetV2 trained on COCO) as a primary detector of the infer stage.

It runs through the backend layer (`stages/infer/backend.py`): the network that computes only the kept
classes (`SsdDetectorNet`) on OpenVINO on the CPU by default, CUDA graphs in fp16 on a GPU, eager torch
when asked for (or for bf16 on the CPU, which only torch's autocast gives). The resize taps are gathered where
the frames are (with the BGR->RGB swap folded into the gather); the blend and normalisation are the network's
first ops, so every backend runs them.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from pipeline.categories import category_id
from stages.infer.backend import compile_module
from stages.infer.detector import CnnDetector, cnn_backend
from stages.infer.options import CocoSsdOptions
from stages.infer.ssd.model import DEFAULT_WEIGHTS, INPUT_SIZE, NUM_CLASSES, SsdDetectorNet, load_model
from stages.infer.ssd.preprocess import gather_taps, legacy_taps

# COCO ids this pipeline has categories for; the other 72 COCO classes are dropped.
COCO_TO_CATEGORY: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 6: "bus", 8: "truck", 10: "traffic_light", 13: "stop_sign",
}  # fmt: skip
# Frames off the wire are read-only buffers; the gather only reads them, so no copy is made to please torch.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
# Fastest CPU runtime for this network, measured by bench/backends.py (README, Performance).
CPU_RUNTIME = "openvino"


class CocoSsdDetector(CnnDetector):
    def __init__(self, options: CocoSsdOptions) -> None:
        # Score column j is COCO id j + 1.
        all_columns = [category_id(COCO_TO_CATEGORY[j + 1]) if j + 1 in COCO_TO_CATEGORY else None for j in range(NUM_CLASSES)]
        super().__init__(options, all_columns)
        model = load_model(options.weights or DEFAULT_WEIGHTS)
        # Only the kept columns are computed: the network's column i is the model's column columns[i].
        columns = self.kept_model_columns()
        self.column_category = self.column_category[columns]
        self.column_threshold = self.column_threshold[columns]
        self.kept_columns = torch.arange(len(columns), device=self.device)
        self.backend = cnn_backend(options, self.device, self.dtype, CPU_RUNTIME)
        rows, cols, dy, dx = legacy_taps(576, 768, INPUT_SIZE, bgr=True)
        example = (gather_taps(torch.zeros(1, 576, 768, 3, dtype=torch.uint8), rows, cols), dy[None], dx[None])
        self.net = compile_module(
            SsdDetectorNet(model, columns), example, name="coco_ssd", backend=self.backend, device=self.device,
            channels_last=options.channels_last, extra=f"columns={columns}", per_sample=True,
        )  # fmt: skip
        self._taps: dict[tuple[int, int, bool], tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    def _taps_for(self, h: int, w: int, bgr: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Tap indices and weights of a frame size, on the device, computed once per size and colour order."""
        taps = self._taps.get((h, w, bgr))
        if taps is None:
            taps = self._taps[(h, w, bgr)] = tuple(t.to(self.device) for t in legacy_taps(h, w, INPUT_SIZE, bgr=bgr))  # type: ignore[assignment]
        return taps

    def _run(self, gathered: Tensor, dy: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
        n = gathered.shape[0]
        scores, boxes = self.net(gathered, dy.expand(n, -1), dx.expand(n, -1))
        return scores.to(self.device), boxes.to(self.device)

    def forward_images(self, images: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        h, w = images[0].shape[:2]
        if self.device.type == "cuda":  # upload the frames, gather on the GPU
            return self.forward(torch.from_numpy(np.stack(images)).pin_memory().to(self.device, non_blocking=True), bgr=True)
        rows, cols, dy, dx = self._taps_for(h, w, bgr=True)
        # Gather each frame where it lies: no stacked copy of the whole frames.
        return self._run(torch.cat([gather_taps(torch.from_numpy(img)[None], rows, cols) for img in images]), dy, dx)

    def forward(self, rgb: Tensor, bgr: bool = False) -> tuple[Tensor, Tensor]:
        """uint8 frames [B, H, W, 3] on the device (RGB, or BGR with `bgr`) -> scores of the kept columns, boxes."""
        rows, cols, dy, dx = self._taps_for(rgb.shape[1], rgb.shape[2], bgr)
        return self._run(gather_taps(rgb, rows, cols), dy, dx)
