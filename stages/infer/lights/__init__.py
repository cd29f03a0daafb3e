"""Traffic-light state (red / yellow / green) on crops of COCO-SSD's traffic lights: what the model is, readable
without torch. The network is stages.infer.lights.net, the secondary model stages.infer.secondaries.light_state,
the training script tools/train_light_state.py; see stages/infer/weights/PROVENANCE-light-state.md."""

from __future__ import annotations

from pathlib import Path

LIGHT_STATES = ("red", "yellow", "green")  # the `state` column's values 0, 1, 2
CROP_HW = (64, 32)  # input height, width: a tall crop, as lights are (the data's median aspect is 2:1)
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "light_state.pt"
