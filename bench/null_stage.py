"""A stage kind that does nothing to a batch (`bench.null_stage:NullStage`): what the framework alone costs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from pipeline.protocol import Frame
from pipeline.stage import Stage


class NullOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NullStage(Stage):
    kind = "null"
    Options = NullOptions

    def process(self, batch: list[Frame]) -> list[Frame]:
        return batch
