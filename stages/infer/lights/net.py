"""The traffic-light state CNN: four 3x3 conv layers on a 64x32 RGB crop in [0, 1], softmax over red/yellow/green."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from stages.infer.lights import DEFAULT_WEIGHTS, LIGHT_STATES


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LightStateNet(nn.Module):
    """[N, 3, 64, 32] RGB in [0, 1] -> class probabilities [N, 3] (LIGHT_STATES order).

    Pooling keeps a 4x2 grid to the end rather than averaging it away: where the lit lamp is (top, middle,
    bottom) is half of the evidence, colour the other half."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w), nn.MaxPool2d(2),  # 32x16
            _block(w, 2 * w), nn.MaxPool2d(2),  # 16x8
            _block(2 * w, 4 * w), nn.MaxPool2d(2),  # 8x4
            _block(4 * w, 4 * w), nn.MaxPool2d(2),  # 4x2
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * w * 8, len(LIGHT_STATES)))

    def logits(self, x: Tensor) -> Tensor:
        # Centred input: the net learns no offset for the [0, 1] range.
        return self.head(self.features(x - 0.5))

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x), dim=1)


def load_model(weights: Path | str = DEFAULT_WEIGHTS) -> LightStateNet:
    """The network with a state_dict from `weights`, in eval mode."""
    net = LightStateNet()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()
