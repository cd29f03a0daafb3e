"""SSDLite MobileNetV2 feature extractor (TF object-detection API `ssd_mobilenet_v2` with depthwise extras).

MobileNetV2 (depth multiplier 1.0) up to Conv_1, plus four SSDLite extra layers. It yields six
feature maps at 300x300 input: 19x19x576 (expansion output of block 13, before its stride-2
depthwise), 10x10x1280 (Conv_1), then 5x5x512, 3x3x256, 2x2x256, 1x1x128.
"""

from __future__ import annotations

from torch import Tensor, nn

from stages.infer.ssd.layers import ConvSame

# (expansion, output channels, stride) of MobileNetV2's 17 inverted-residual blocks, in TF's order
# (TF names them expanded_conv, expanded_conv_1, ..., expanded_conv_16).
BLOCKS: tuple[tuple[int, int, int], ...] = (
    (1, 16, 1),
    (6, 24, 2), (6, 24, 1),
    (6, 32, 2), (6, 32, 1), (6, 32, 1),
    (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
    (6, 96, 1), (6, 96, 1), (6, 96, 1),
    (6, 160, 2), (6, 160, 1), (6, 160, 1),
    (6, 320, 1),
)  # fmt: skip
# The first feature map is the expansion output of this block (TF: layer_15/expansion_output).
TAP_BLOCK = 13
# (1x1 bottleneck channels, output channels) of the SSDLite extra layers (TF: layer_19_1/2_Conv2d_2..5).
EXTRAS: tuple[tuple[int, int], ...] = ((256, 512), (128, 256), (128, 256), (64, 128))
FEATURE_CHANNELS: tuple[int, ...] = (576, 1280) + tuple(out for _, out in EXTRAS)


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection, + input when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = ConvSame(in_channels, hidden) if expansion != 1 else None
        self.depthwise = ConvSame(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvSame(hidden, out_channels, relu6=False)
        self.residual = stride == 1 and in_channels == out_channels

    def expanded(self, x: Tensor) -> Tensor:
        return self.expand(x) if self.expand is not None else x

    def reduce(self, x: Tensor, h: Tensor) -> Tensor:
        """Depthwise + projection of the expanded tensor `h`; `x` is the block input for the residual."""
        y = self.project(self.depthwise(h))
        return x + y if self.residual else y

    def forward(self, x: Tensor) -> Tensor:
        return self.reduce(x, self.expanded(x))


class ExtraLayer(nn.Module):
    """SSDLite extra feature layer: 1x1 (ReLU6) -> 3x3 depthwise stride 2 (ReLU6) -> 1x1 (ReLU6)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = ConvSame(in_channels, mid_channels)
        self.depthwise = ConvSame(mid_channels, mid_channels, 3, 2, groups=mid_channels)
        self.pointwise = ConvSame(mid_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(self.reduce(x)))


class MobileNetV2Features(nn.Module):
    """Normalised [B, 3, 300, 300] -> the six SSD feature maps, largest first."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvSame(3, 32, 3, 2)
        blocks = []
        channels = 32
        for expansion, out, stride in BLOCKS:
            blocks.append(InvertedResidual(channels, out, stride, expansion))
            channels = out
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvSame(channels, 1280)  # TF: Conv_1
        extras = []
        channels = 1280
        for mid, out in EXTRAS:
            extras.append(ExtraLayer(channels, mid, out))
            channels = out
        self.extras = nn.ModuleList(extras)

    def forward(self, x: Tensor) -> list[Tensor]:
        features: list[Tensor] = []
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            if i == TAP_BLOCK:
                h = block.expanded(x)
                features.append(h)
                x = block.reduce(x, h)
            else:
                x = block(x)
        x = self.head(x)
        features.append(x)
        for extra in self.extras:
            x = extra(x)
            features.append(x)
        return features
