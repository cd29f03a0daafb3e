"""The infer stage kind: runs the configured detector on every frame of a batch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.protocol import Frame
from pipeline.stage import Stage, StageContext
from stages.infer.motion import MotionDetector, MotionOptions


class InferOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: Literal["motion"] = Field("motion", description="Primary detector.")
    motion: MotionOptions = Field(default_factory=MotionOptions, description="Settings of the motion detector.")


class InferStage(Stage):
    kind = "infer"
    Options = InferOptions

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.detector = MotionDetector(self.options.motion)

    def process(self, batch: list[Frame]) -> list[Frame]:
        for frame in batch:
            if frame.image is None:
                raise ValueError("frame carries no pixels: set forward_pixels on the stage before infer")
            frame.detections = self.detector.detect(frame.stream, frame.image)
        return batch

    def end_stream(self, stream: str, info: dict[str, Any]) -> dict[str, Any]:
        self.detector.reset(stream)
        return info
