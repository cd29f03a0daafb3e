"""Convolution with TensorFlow 'SAME' padding, the building block of every layer of the port.

TF pads SAME convolutions by total = max((ceil(n/s) - 1) * s + k - n, 0) and puts the odd
pixel at the bottom/right. For the stride-2 convs at 300->150, 150->75, 38->19, 10->5 and
2->1 that is (0, 1), which PyTorch's symmetric `padding=` cannot express: it shifts every
later feature map by one pixel (scores then move by up to 0.9 on vtest.avi's first frame).
Batch norm is folded into the weights and bias.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one spatial axis under TF 'SAME'."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvSame(nn.Conv2d):
    """nn.Conv2d (with bias) padded like TF 'SAME', optionally followed by ReLU6."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=True)
        self.relu6 = relu6

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if k == 1 and s == 1:
            y = F.conv2d(x, self.weight, self.bias)
        else:
            top, bottom = tf_same_padding(x.shape[-2], k, s)
            left, right = tf_same_padding(x.shape[-1], k, s)
            if top == bottom and left == right:
                y = F.conv2d(x, self.weight, self.bias, s, (top, left), 1, self.groups)
            else:
                y = F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, s, 0, 1, self.groups)
        # In place: the conv output is fresh, and skipping an allocation per layer saves ~5% on CPU.
        return F.hardtanh_(y, 0.0, 6.0) if self.relu6 else y

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu6" if self.relu6 else "")
