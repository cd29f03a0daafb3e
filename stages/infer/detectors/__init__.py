"""The primary detectors an infer stage can run: one module each in this package, holding its options (whose
`type` the config names) and its Detector class, found by the plugin registry. Adding a detector is one new file.

Reading a config imports every module here (to build the options union), so a detector module imports torch,
its runtimes and its weights only in the code that builds or runs the model: the CLI checks a config without
torch, and COCO-SSD on a CPU runtime runs without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter

from pipeline.plugins import Registry
from stages.infer.detector import Detector

DETECTORS: Registry[type[Detector]] = Registry("detector", Detector, "stages.infer.detectors", key="type")  # type: ignore[type-abstract]
if TYPE_CHECKING:
    DetectorConfig = Any  # made at run time, from the modules found: no static type can list them
else:
    # The options of every detector, told apart by `type` (errors name the detector's fields).
    DetectorConfig = Annotated[Union[tuple(cls.Options for cls in DETECTORS.all().values())], Field(discriminator="type")]  # noqa: UP007
_ADAPTER: TypeAdapter[Any] = TypeAdapter(DetectorConfig)


def detector_mapping(data: Any) -> Any:
    """A detector named alone (`detector: motion`) as the mapping it stands for: that detector, defaults.
    A missing or unknown `type` is an error that lists the known ones, in the words of the config."""
    if isinstance(data, str):
        data = {"type": data}
    if isinstance(data, dict):
        known = ", ".join(DETECTORS.names())
        if "type" not in data:
            raise ValueError(f"needs a type: one of {known} (e.g. detector: {{type: coco_ssd, score_threshold: 0.4}})")
        if isinstance(data["type"], str) and data["type"] not in DETECTORS.all():
            raise ValueError(f"unknown detector {data['type']!r}; known: {known}")
    return data


def parse_detector_config(data: Any) -> BaseModel:
    """Validate one detector's options (a name, or a mapping with `type`); raises pydantic.ValidationError or ValueError."""
    return _ADAPTER.validate_python(detector_mapping(data))


def build_detector(options: BaseModel | str | dict[str, Any]) -> Detector:
    """The detector for validated options (or a name or mapping, validated here). This is where a detector
    imports its model code (torch, a runtime) and loads its weights."""
    opts = options if isinstance(options, BaseModel) else parse_detector_config(options)
    return DETECTORS.get(opts.type)(opts)  # type: ignore[attr-defined,call-arg]
