"""Tiny real secondary models for the tests (loaded as `tests.helpers.secondary_models:Class`)."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from stages.infer.secondary_model import SecondaryModel


class CropOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(16, ge=1)
    height: int = Field(16, ge=1)


class MeanColour(SecondaryModel):
    """Mean R, G, B of each crop; keeps every batch of crops it was given (calls and geometry)."""

    Options = CropOptions
    columns = {"r": "f4", "g": "f4", "b": "f4"}

    def __init__(self, options: CropOptions, device: torch.device) -> None:
        super().__init__(options, device)
        self.crop_size = (options.width, options.height)
        self.batches: list[Tensor] = []

    def run(self, crops: Tensor) -> dict[str, Tensor]:
        self.batches.append(crops.clone())
        r, g, b = crops.mean(dim=(2, 3)).unbind(1)
        return {"r": r, "g": g, "b": b}


class DominantChannel(SecondaryModel):
    """The brightest channel of each crop as a class: 0 red, 1 green, 2 blue."""

    Options = CropOptions
    columns = {"channel": "i4"}

    def __init__(self, options: CropOptions, device: torch.device) -> None:
        super().__init__(options, device)
        self.crop_size = (options.width, options.height)

    def run(self, crops: Tensor) -> dict[str, Tensor]:
        return {"channel": crops.mean(dim=(2, 3)).argmax(dim=1)}


class NotAModel:
    """For the config tests: a class that is not a SecondaryModel."""
