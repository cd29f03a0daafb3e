"""The infer stage's settings, in one module that imports no torch: the detector's (each detector's options are
in its module of stages/infer/detectors/), the motion gate's, the faces' and the secondary models'.

The CLI checks a whole config before it starts any stage; with the options here it does so without loading
torch (about 2 s), and so does every stage process that runs no model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from pipeline.categories import check_categories
from pipeline.paths import InputPath
from stages.infer.backend import BackendName
from stages.infer.detectors import DetectorConfig, detector_mapping
from stages.infer.detectors.coco_ssd import CocoSsdOptions
from stages.infer.detectors.motion import MotionOptions
from stages.infer.faces.watchlist import WatchlistOptions
from stages.infer.secondary_model import SecondaryList


class GateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Skip the CNN on frames without motion (fixed cameras).")
    refresh_frames: int = Field(25, ge=1, description="Run the CNN at least every this many frames of a stream.")
    motion: MotionOptions = Field(default_factory=MotionOptions, description="Settings of the motion detector that gates.")


Probability = Annotated[float, Field(ge=0, le=1)]


class MtcnnOptions(BaseModel):
    """Settings of the MTCNN cascade; the defaults are facenet-pytorch's (and the paper code's), except the last two."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_face_size: float = Field(
        20,
        ge=8,
        le=10_000,
        description="Smallest face side searched for, in pixels: the pyramid's largest level scales the frame by "
        "12 / min_face_size (P-Net's window is 12 pixels). Halving it roughly quadruples P-Net's work.",
    )
    thresholds: tuple[Probability, Probability, Probability] = Field(
        (0.6, 0.7, 0.7),
        description="Face-probability thresholds of P-Net, R-Net and O-Net (P-Net keeps >=, the others >).",
    )
    scale_factor: float = Field(
        0.709,
        gt=0.1,
        le=0.95,
        description="Ratio between successive pyramid levels (0.709 ~ 1/sqrt(2): each level halves the pixel count).",
    )
    nms_thresholds: tuple[Probability, Probability, Probability, Probability] = Field(
        (0.5, 0.7, 0.7, 0.7),
        description="NMS overlap thresholds: P-Net within one pyramid level (IoU), P-Net across levels (IoU), "
        "R-Net (IoU), O-Net (intersection over the smaller box, with MATLAB's +1 pixel sizes). A box overlapping "
        "a better one by more than this is dropped.",
    )
    score_threshold: Probability = Field(
        0.9,
        description="Lowest O-Net probability reported. Between O-Net's own cut (thresholds[2], 0.7) and 0.9 lie "
        "false detections on dark or textured background (0.78 on Megamind frame 165) and also small real faces "
        "(0.83 for a 9-pixel face in vtest frame 500): 0.9 trades some of those faces for fewer false ones. "
        "Set it to thresholds[2] or lower to get every face the cascade finds, as facenet-pytorch reports them.",
    )
    max_faces: int = Field(100, ge=1, le=10_000, description="Most faces reported per image, the highest scores first.")
    backend: BackendName = Field(
        "auto", description="Backend of the three networks: auto (fastest measured for the device: eager torch on the CPU), torch, onnxruntime, openvino or cuda."
    )

    @model_validator(mode="after")
    def _check(self) -> MtcnnOptions:
        if not all(0 < t < 1 for t in self.thresholds):
            raise ValueError(f"thresholds must lie strictly between 0 and 1, got {self.thresholds}")
        return self


class FacesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    on: Literal["frames", "persons"] = Field(
        "frames", description="Look for faces in whole frames, or in the head region of person detections (cheaper in wide scenes)."
    )
    person_min_height: int = Field(48, ge=8, description="persons: person boxes shorter than this (pixels) are not searched.")
    person_min_score: float = Field(0.4, ge=0, le=1, description="persons: person detections below this score are not searched.")
    mtcnn: MtcnnOptions = Field(default_factory=MtcnnOptions, description="The MTCNN face detector's settings.")
    watchlist: WatchlistOptions | None = Field(None, description="Recognise faces against these identities (needs the [faces] extra).")
    reencode_after_s: float = Field(
        1.0, ge=0, description="A face overlapping one encoded less than this long ago in its stream keeps that identity "
        "instead of being encoded again (encoding costs ~80 ms a face on a CPU); 0: encode every face in every frame.",
    )
    blur: Literal["none", "all", "unlisted"] = Field(
        "none", description="Blur every face, or every face but watchlist matches, in the frames handed on (and so in everything downstream)."
    )


class SignOptions(BaseModel):
    """The traffic-sign finder (stages/infer/signs/): colour candidates classified by a small CNN; see Traffic signs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_score: float = Field(0.6, gt=0, lt=1, description="Lowest classifier probability of a sign class kept (the rest is background).")
    nms_iou: float = Field(0.3, gt=0, le=1, description="Signs overlapping a more probable one by more than this IoU are dropped.")
    min_size: int = Field(10, ge=4, le=1000, description="Smallest candidate region (its longer side, pixels); smaller signs are not looked for.")
    max_size: int = Field(200, ge=8, le=10_000, description="Largest candidate region (its longer side, pixels).")
    max_candidates: int = Field(64, ge=1, le=1000, description="Most colour candidates classified per frame, the largest first.")
    proposal_classes: list[str] = Field(
        ["stop_sign"], description="Detector categories whose boxes are classified too (COCO-SSD's stop signs); the detector's own rows stay."
    )
    weights: InputPath | None = Field(None, description="state_dict of SignNet; null: the bundled weights (README, Traffic signs).")
    backend: BackendName = Field("auto", description="Inference backend of the sign classifier (auto: the fastest for the device).")

    @field_validator("proposal_classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        check_categories(v)
        return v

    @model_validator(mode="after")
    def _sizes(self) -> SignOptions:
        if self.max_size < self.min_size:
            raise ValueError(f"max_size {self.max_size} is below min_size {self.min_size}")
        return self


# The per-detector sections infer options had before `detector` held the detector's own settings.
_MOVED_SECTIONS = ("coco_ssd", "custom", "motion")


def _moved(key: str, section: Any, detector: Any) -> str:
    """What to write instead of the old section `key:` (with the old `detector:` value)."""
    settings = section if isinstance(section, dict) else {}
    new = yaml.safe_dump({"type": key, **settings}, default_flow_style=True, sort_keys=False, width=10_000).strip()
    old = detector if isinstance(detector, str) else "coco_ssd"
    if old != key:  # the old config ran another detector: this section did nothing
        return f"detector settings moved, and these were unused (the detector was {old}): remove them, or write detector: {new} to run {key}"
    return f"detector settings moved: write detector: {new}"


class FixedObject(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    category: str = Field(description="Its category, e.g. traffic_light.")
    box: tuple[float, float, float, float] = Field(description="[x1, y1, x2, y2] in pixels of the frames (or fractions with `relative`).")
    relative: bool = Field(False, description="The box is in fractions (0..1) of the frame's width and height.")
    streams: list[str] | None = Field(None, description="The streams it is in (default: all).")

    @field_validator("category")
    @classmethod
    def _category(cls, v: str) -> str:
        check_categories([v])
        return v

    @model_validator(mode="after")
    def _box(self) -> FixedObject:
        x1, y1, x2, y2 = self.box
        if not (x2 > x1 and y2 > y1) or min(self.box) < 0 or (self.relative and max(self.box) > 1):
            raise ValueError(f"box {list(self.box)} must be [x1, y1, x2, y2] with x2 > x1, y2 > y1, inside the frame")
        return self


class InferOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: DetectorConfig = Field(
        default_factory=CocoSsdOptions,
        description="The primary detector: its type and settings, e.g. {type: coco_ssd, score_threshold: 0.4} "
        "(each type's keys are below), or the type alone for its defaults (detector: motion).",
    )
    motion_gate: GateOptions = Field(default_factory=GateOptions, description="Skip the CNN on frames without motion.")
    torch_threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads of the models (torch and the ONNX runtimes); default: one per core."
    )
    faces: FacesOptions | None = Field(
        None, description="Face detection (MTCNN), watchlist recognition and blurring; see Faces. null: off."
    )
    signs: SignOptions | None = Field(
        None, description="Find and classify traffic signs (traffic_sign rows with sign.class and sign.score): see Traffic signs. null: off."
    )
    secondary: SecondaryList = Field(
        default_factory=list, description="Models run on crops of the detections (faces, signs, posture): see stages/infer/secondary_model.py."
    )
    fixed_objects: list[FixedObject] = Field(
        default_factory=list,
        description="Objects that do not move in a fixed camera's view (the traffic light over a junction): added to every frame's detections "
        "(score 1) before the secondary models, so they are classified and the rules see them even where the detector misses them.",
    )

    @model_validator(mode="before")
    @classmethod
    def _old_sections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        found = [k for k in _MOVED_SECTIONS if k in data]
        if found:
            # Raised as a ValidationError so that each problem is located at its own key (options.coco_ssd).
            raise ValidationError.from_exception_data(cls.__name__, [
                InitErrorDetails(type=PydanticCustomError("moved", "{msg}", {"msg": _moved(k, data[k], data.get("detector"))}), loc=(k,), input=data[k])
                for k in found
            ])  # fmt: skip
        return data

    @field_validator("detector", mode="before")
    @classmethod
    def _detector_name(cls, v: Any) -> Any:
        return detector_mapping(v)
