"""What the COCO-SSD graph is (input size, classes, anchors, bundled weights), readable without torch."""

from __future__ import annotations

from pathlib import Path

INPUT_SIZE = (300, 300)
NUM_CLASSES = 90  # COCO ids 1..90 (80 in use); the graph's class 0 is background
NUM_ANCHORS = 1917
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "coco_ssd_mobilenet_v2.pt"
