"""The traffic-sign classifier: a small CNN on a 32x32 RGB crop in [0, 1], softmax over SIGN_CLASSES + background."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from stages.infer.signs import DEFAULT_WEIGHTS, SIGN_CLASSES

N_OUTPUTS = len(SIGN_CLASSES) + 1  # the last output is "not a sign"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SignNet(nn.Module):
    """[N, 3, 32, 32] RGB in [0, 1] -> probabilities [N, len(SIGN_CLASSES) + 1], background last.

    Two convolutions at full resolution before the first pooling: the digits of a speed limit are a few pixels
    wide at this size. A 4x4 grid is kept to the end (where the red is, ring or disk, is evidence)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w), _block(w, w), nn.MaxPool2d(2),  # 16x16
            _block(w, 2 * w), _block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8x8
            _block(2 * w, 4 * w), nn.MaxPool2d(2),  # 4x4
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * w * 16, 128), nn.ReLU(inplace=True), nn.Linear(128, N_OUTPUTS))

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.features(x - 0.5))

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x), dim=1)


def load_model(weights: Path | str = DEFAULT_WEIGHTS) -> SignNet:
    """The network with a state_dict from `weights`, in eval mode."""
    net = SignNet()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()
