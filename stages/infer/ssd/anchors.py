"""SSD multiple-grid anchors of the COCO-SSD graph (TF object-detection API `ssd_anchor_generator`).

Settings, recovered from the graph's anchor constant (they reproduce all 1917x4 values within
1.2e-7, float32 rounding): 6 layers, min_scale 0.2, max_scale 0.95, aspect ratios 1, 2, 0.5, 3, 0.3333,
an extra box per cell at scale sqrt(s_i * s_i+1) with ratio 1 (interpolated_scale_aspect_ratio
1.0), and reduce_boxes_in_lowest_layer: the 19x19 layer has only (0.1, 1), (0.2, 2), (0.2, 0.5).
Grid cell centres are (i + 0.5) / n; boxes are normalised (ymin, xmin, ymax, xmax) and not clipped.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FEATURE_MAP_SIZES: tuple[int, ...] = (19, 10, 5, 3, 2, 1)
MIN_SCALE = 0.2
MAX_SCALE = 0.95
# The training config spells 1/3 as 0.3333; 1/3 itself moves some anchors by 4e-5.
ASPECT_RATIOS: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)
LOWEST_LAYER_BOXES: tuple[tuple[float, float], ...] = ((0.1, 1.0), (MIN_SCALE, 2.0), (MIN_SCALE, 0.5))


def box_specs(num_layers: int = len(FEATURE_MAP_SIZES)) -> list[list[tuple[float, float]]]:
    """(scale, aspect ratio) of each anchor of a grid cell, per layer."""
    scales = [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * i / (num_layers - 1) for i in range(num_layers)] + [1.0]
    specs: list[list[tuple[float, float]]] = []
    for layer in range(num_layers):
        if layer == 0:
            specs.append(list(LOWEST_LAYER_BOXES))
        else:
            scale, next_scale = scales[layer], scales[layer + 1]
            specs.append([(scale, ar) for ar in ASPECT_RATIOS] + [(math.sqrt(scale * next_scale), 1.0)])
    return specs


def anchors_per_cell() -> list[int]:
    return [len(s) for s in box_specs()]


def generate_anchors(feature_map_sizes: tuple[int, ...] = FEATURE_MAP_SIZES) -> Tensor:
    """All anchors [sum(n*n*A), 4] as (ymin, xmin, ymax, xmax), ordered row, column, anchor, layer by layer.

    Computed in float32 like TF's tile_anchors, so the result matches the graph's constant.
    """
    layers = []
    for size, specs in zip(feature_map_sizes, box_specs(len(feature_map_sizes))):
        scale = torch.tensor([s for s, _ in specs], dtype=torch.float64)
        ratio_sqrt = torch.tensor([a for _, a in specs], dtype=torch.float64).sqrt()
        heights = (scale / ratio_sqrt).to(torch.float32)
        widths = (scale * ratio_sqrt).to(torch.float32)
        stride = torch.tensor(1.0, dtype=torch.float32) / size
        centres = torch.arange(size, dtype=torch.float32) * stride + 0.5 * stride
        cy = centres.view(size, 1, 1).expand(size, size, len(specs))
        cx = centres.view(1, size, 1).expand(size, size, len(specs))
        h = heights.view(1, 1, -1).expand_as(cy)
        w = widths.view(1, 1, -1).expand_as(cy)
        boxes = torch.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], dim=-1)
        layers.append(boxes.reshape(-1, 4))
    return torch.cat(layers)
