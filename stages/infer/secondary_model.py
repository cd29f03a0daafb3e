"""What a secondary model is (the SecondaryModel plug-in interface) and how one is configured; no torch here.

A built-in model is a module of stages/infer/secondaries/ whose SecondaryModel class sets `kind`, found by the
plugin registry (SECONDARY_MODELS); a user's own is named `package.module:Class`. The runner that crops
detections and runs the models is stages.infer.secondary.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from pipeline.categories import check_categories
from pipeline.plugins import Registry

if TYPE_CHECKING:
    import torch
    from torch import Tensor

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


# Rows a model did not run on get NaN (floats) or -1 (signed ints): unsigned and bool columns could not say so.
_DTYPES = {"f4", "f8", "i2", "i4", "i8"}


# "run": crops the model ran on; the others: detections of its classes skipped, by the setting that skipped them.
OUTCOMES = ("run", "min_score", "min_size", "max_crops")


OnCount = Callable[[str, str, int], None]
"""Called after each batch with (model name, outcome, crops), for every outcome in OUTCOMES."""


class SecondaryModel(ABC):
    """What a secondary model kind implements. A built-in one sets `kind` (the name the config's `kind` gives)."""

    Options: ClassVar[type[BaseModel]]  # its own settings, a pydantic model with extra="forbid"
    kind: ClassVar[str] = ""
    columns: ClassVar[dict[str, str]]  # column -> numpy dtype string ("f4", "i4", ...)
    crop_size: tuple[int, int]  # (w, h) of the crops run() takes: set in __init__ or a property

    def __init__(self, options: Any, device: torch.device) -> None:
        self.options = options
        self.device = device

    @abstractmethod
    def run(self, crops: Tensor) -> dict[str, Tensor]:
        """float32 RGB crops [N, 3, h, w] in [0, 1] on the device -> one tensor [N] per declared column.
        Called under torch.inference_mode, at most once per batch of frames, never with N = 0."""


SECONDARY_MODELS: Registry[type[SecondaryModel]] = Registry("secondary model", SecondaryModel, "stages.infer.secondaries", key="kind")  # type: ignore[type-abstract]


def resolve_secondary(kind: str) -> type[SecondaryModel]:
    """The SecondaryModel class of a built-in kind or of `package.module:Class`; ValueError saying what is wrong otherwise."""
    module_name, sep, class_name = kind.partition(":")
    if sep and (not module_name or not class_name.isidentifier()):
        raise ValueError(f"secondary kind {kind!r} must be a built-in name or package.module:Class")
    try:
        cls = SECONDARY_MODELS.get(kind)
    except ValueError:
        raise  # the registry's own: an unknown kind (with the known ones), no such module, not a SecondaryModel
    except Exception as exc:  # a module that fails on import (or lacks a dependency) is a config problem, reported with its path
        module = module_name if sep else f"{SECONDARY_MODELS.package}.{kind}"
        raise ValueError(f"secondary kind {kind!r}: importing {module} failed: {type(exc).__name__}: {exc}") from None
    class_name = cls.__name__
    if inspect.isabstract(cls):
        raise ValueError(f"secondary kind {kind!r}: {class_name} is abstract (it must implement run)")
    options = getattr(cls, "Options", None)
    if not (inspect.isclass(options) and issubclass(options, BaseModel)) or options.model_config.get("extra") != "forbid":
        # extra="forbid": a misspelt option is an error, not a silently ignored key.
        raise ValueError(f"secondary kind {kind!r}: {class_name}.Options must be a pydantic model with extra='forbid'")
    columns = getattr(cls, "columns", None)
    if not isinstance(columns, dict) or not columns:
        raise ValueError(f"secondary kind {kind!r}: {class_name}.columns must declare at least one column")
    for col, dtype in columns.items():
        if not (isinstance(col, str) and _NAME.fullmatch(col)) or dtype not in _DTYPES:
            raise ValueError(
                f"secondary kind {kind!r}: column {col!r}: {dtype!r} must be a lower-case name "
                f"with a dtype of {', '.join(sorted(_DTYPES))}"
            )
    return cls


class SecondaryConfig(BaseModel):
    """One secondary model of an infer stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Unique name; the model's columns are written as NAME.COLUMN.")
    kind: str = Field(
        description="The model: a built-in one by name (a module of stages/infer/secondaries/), or your own SecondaryModel class as package.module:Class."
    )
    classes: list[str] = Field(min_length=1, description="Categories whose detections it runs on.")
    min_score: float = Field(0.0, ge=0, le=1, description="Detections scoring lower are skipped.")
    min_size: int = Field(8, ge=0, description="Boxes narrower or shorter than this many pixels are skipped.")
    padding: float = Field(0.0, ge=0, le=1, description="Fraction of the box's width and height added on each side.")
    max_crops: int = Field(
        256, ge=1, le=65536, description="Most crops per batch, the highest scores first; the rest are skipped."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="The kind's own settings, checked by its Options.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("must be 1-32 lower-case letters, digits or '_', starting with a letter")
        return v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        resolve_secondary(v)
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        check_categories(v)
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("kind")  # absent when the kind itself failed: that error is reported already
        if kind is not None:
            # A ValidationError raised here keeps its locations, below this field's path (secondary[0].options.x).
            resolve_secondary(kind).Options.model_validate(v)
        return v


def _unique_names(configs: list[SecondaryConfig]) -> list[SecondaryConfig]:
    names = [c.name for c in configs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate name {', '.join(dup)} (names prefix the columns, so they must differ)")
    return configs


SecondaryList = Annotated[list[SecondaryConfig], AfterValidator(_unique_names)]
"""The type of an options field holding secondary models: each one checked, names unique."""


class _Holder(BaseModel):
    secondary: SecondaryList


def validate_secondary(items: Any) -> list[SecondaryConfig]:
    """Validated configs; pydantic's ValidationError locates each problem (`secondary`, 0, `options`, `x`)."""
    return _Holder.model_validate({"secondary": items}).secondary
