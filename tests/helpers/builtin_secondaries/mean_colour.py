"""A built-in secondary model: named by its kind, as a module of stages/infer/secondaries/ would be."""

from __future__ import annotations

from tests.helpers.secondary_models import MeanColour


class BuiltinMeanColour(MeanColour):
    kind = "mean_colour"
