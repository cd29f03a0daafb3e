"""The COCO-SSD detector (SSDLite MobileNetV2 trained on COCO) as a primary detector of the infer stage."""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from pipeline.categories import category_id
from stages.infer.detector import CnnDetector, CnnOptions
from stages.infer.ssd.model import DEFAULT_WEIGHTS, NUM_CLASSES, load_model

# COCO ids this pipeline has categories for; the other 72 COCO classes are dropped.
COCO_TO_CATEGORY: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 6: "bus", 8: "truck", 10: "traffic_light", 13: "stop_sign",
}  # fmt: skip


class CocoSsdOptions(CnnOptions):
    weights: str | None = Field(None, description="state_dict of SSDLiteMobileNetV2; null: the bundled COCO weights.")


class CocoSsdDetector(CnnDetector):
    def __init__(self, options: CocoSsdOptions) -> None:
        # Score column j is COCO id j + 1.
        columns = [category_id(COCO_TO_CATEGORY[j + 1]) if j + 1 in COCO_TO_CATEGORY else None for j in range(NUM_CLASSES)]
        super().__init__(options, columns)
        weights = options.weights or DEFAULT_WEIGHTS
        self.model = load_model(weights, device=self.device, channels_last=options.channels_last)

    def forward(self, rgb: Tensor) -> tuple[Tensor, Tensor]:
        scores, boxes = self.model(rgb)
        return scores, boxes
