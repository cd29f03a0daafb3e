"""MobileNetV2 feature layers in torchvision's layout, so torchvision's ImageNet state_dict loads by name.

Unlike the detector's port (stages/infer/ssd/mobilenet_v2.py: TF 'SAME' padding, batch norm folded), this
is torchvision's network: symmetric padding, separate BatchNorm2d layers that fine-tuning can update.
`features[0]` is the stem, `features[1..17]` the inverted-residual blocks and `features[18]` the final 1x1
conv to 1280 channels; `MobileNetV2Features(blocks=n)` keeps `features[0..n]` only, because the appearance
embedding needs neither the deep, low-resolution layers nor their cost.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

# (expansion, output channels, repeats, first stride) of torchvision's inverted_residual_setting.
SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
NUM_BLOCKS = 17
LAST_CHANNELS = 1280


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6; indices 0/1/2 as in torchvision's Conv2dNormActivation."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection (+ input when shapes match); `conv` as torchvision."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [ConvBNReLU(cin, hidden, 1)] if expansion != 1 else []
        layers += [
            ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def block_specs() -> list[tuple[int, int, int, int]]:
    """(in channels, out channels, stride, expansion) of blocks 1..17."""
    specs = []
    cin = 32
    for t, c, n, s in SETTING:
        for i in range(n):
            specs.append((cin, c, s if i == 0 else 1, t))
            cin = c
    return specs


def block_stride(blocks: int) -> int:
    """Total spatial stride of the output of features[0..blocks]."""
    stride = 2
    for _, _, s, _ in block_specs()[:blocks]:
        stride *= s
    return stride


class MobileNetV2Features(nn.Module):
    """torchvision MobileNetV2 `features`, truncated after inverted-residual block `blocks` (1..17), or
    complete with the 1280-channel conv when blocks=18. Input: ImageNet-normalised RGB [B, 3, H, W]."""

    def __init__(self, blocks: int = NUM_BLOCKS) -> None:
        super().__init__()
        if not 1 <= blocks <= NUM_BLOCKS + 1:
            raise ValueError(f"blocks must be in 1..{NUM_BLOCKS + 1}, got {blocks}")
        layers: list[nn.Module] = [ConvBNReLU(3, 32, 3, 2)]
        channels = 32
        for cin, cout, stride, expansion in block_specs()[: min(blocks, NUM_BLOCKS)]:
            layers.append(InvertedResidual(cin, cout, stride, expansion))
            channels = cout
        if blocks > NUM_BLOCKS:
            layers.append(ConvBNReLU(channels, LAST_CHANNELS, 1))
            channels = LAST_CHANNELS
        self.features = nn.Sequential(*layers)
        self.blocks = blocks
        self.out_channels = channels
        self.stride = block_stride(min(blocks, NUM_BLOCKS))

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def load_imagenet(self, source: str | Path | dict[str, Tensor]) -> None:
        """Load torchvision's mobilenet_v2 state_dict (e.g. mobilenet_v2-b0353104.pth), strictly by name.

        Every tensor of the kept layers must be present with its shape; the keys left over must all belong
        to the cut-off layers or the classifier, so a file of another layout fails instead of half-loading.
        """
        state = torch.load(source, map_location="cpu", weights_only=True) if not isinstance(source, dict) else source
        n = len(self.features)
        kept = {k: v for k, v in state.items() if k.startswith("features.") and int(k.split(".")[1]) < n}
        dropped = [k for k in state if k not in kept]
        bad = [k for k in dropped if not (k.startswith("classifier.") or k.startswith("features."))]
        if bad:
            raise ValueError(f"unexpected keys in the MobileNetV2 state_dict: {bad[:5]}")
        self.load_state_dict(kept, strict=True)
