"""Faster R-CNN box coding as used by the COCO-SSD graph: anchor-relative centre offsets and log sizes.

Codes are (ty, tx, th, tw) scaled by (10, 10, 5, 5); boxes and anchors are normalised
(ymin, xmin, ymax, xmax). The arithmetic follows the graph's Postprocessor/Decode op by op so that
the results agree to float32 rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCALE_FACTORS: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)


def decode_boxes(codes: Tensor, anchors: Tensor, scale_factors: tuple[float, ...] = SCALE_FACTORS) -> Tensor:
    """codes [..., N, 4] and anchors [N, 4] -> boxes [..., N, 4]; computed in float32 whatever the inputs."""
    codes = codes.to(torch.float32)
    anchors = anchors.to(torch.float32)
    ha = anchors[:, 2] - anchors[:, 0]
    wa = anchors[:, 3] - anchors[:, 1]
    yca = anchors[:, 0] + ha * 0.5
    xca = anchors[:, 1] + wa * 0.5
    ty, tx, th, tw = codes.unbind(-1)
    # The graph multiplies by the folded reciprocals 0.1 and 0.2 rather than dividing.
    yc = ty * (1.0 / scale_factors[0]) * ha + yca
    xc = tx * (1.0 / scale_factors[1]) * wa + xca
    half_h = ha * 0.5 * torch.exp(th * (1.0 / scale_factors[2]))
    half_w = wa * 0.5 * torch.exp(tw * (1.0 / scale_factors[3]))
    return torch.stack([yc - half_h, xc - half_w, yc + half_h, xc + half_w], dim=-1)


def encode_boxes(boxes: Tensor, anchors: Tensor, scale_factors: tuple[float, ...] = SCALE_FACTORS) -> Tensor:
    """Inverse of decode_boxes (for tests and training targets)."""
    ha = anchors[:, 2] - anchors[:, 0]
    wa = anchors[:, 3] - anchors[:, 1]
    yca = anchors[:, 0] + ha * 0.5
    xca = anchors[:, 1] + wa * 0.5
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    yc = boxes[..., 0] + h * 0.5
    xc = boxes[..., 1] + w * 0.5
    return torch.stack(
        [
            (yc - yca) / ha * scale_factors[0],
            (xc - xca) / wa * scale_factors[1],
            torch.log(h / ha) * scale_factors[2],
            torch.log(w / wa) * scale_factors[3],
        ],
        dim=-1,
    )
