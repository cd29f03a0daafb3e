"""A deliberately slow stage kind for back-pressure tests (loaded as `tests.helpers.slow_stage:SlowStage`)."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from pipeline.protocol import Frame
from pipeline.stage import Stage


class SlowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds_per_frame: float = Field(0.1, ge=0)
    fail_on_seq: list[int] = Field(default_factory=list, description="Raise on these sequence numbers.")
    fail_on_start: bool = Field(False, description="Raise when the stage starts (a stage that cannot run).")


class SlowStage(Stage):
    kind = "slow"
    Options = SlowOptions

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        if self.options.fail_on_start:
            raise RuntimeError("deliberate failure at start")

    def process(self, batch: list[Frame]) -> list[Frame]:
        for frame in batch:
            if frame.seq in self.options.fail_on_seq:
                raise RuntimeError(f"deliberate failure on frame {frame.seq}")
        time.sleep(self.options.seconds_per_frame * len(batch))
        return batch
