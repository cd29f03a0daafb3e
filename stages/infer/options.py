"""The infer stage's settings: every option class of its detectors, in one module that imports no torch.

The CLI checks a whole config before it starts any stage; with the options here it does so without loading
torch (about 2 s), and so does every stage process that runs no model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pipeline.categories import check_categories
from stages.infer.backend import BackendName
from stages.infer.detector import CnnOptions
from stages.infer.faces.watchlist import WatchlistOptions
from stages.infer.secondary_model import SecondaryList


class CocoSsdOptions(CnnOptions):
    weights: str | None = Field(None, description="state_dict of SSDLiteMobileNetV2; null: the bundled COCO weights.")


TORCHSCRIPT_SUFFIXES = (".pt", ".pt2", ".ts", ".torchscript")


ONNX_SUFFIXES = (".onnx",)


Format = Literal["torchscript", "onnx"]


BoxFormat = Literal["cxcywh", "xyxy", "yxyx"]


class CustomOptions(CnnOptions):
    """A TorchScript or ONNX detector described by its input and output layout."""

    path: str = Field(..., description="Model file: .pt, .pt2, .ts (TorchScript) or .onnx (ONNX); see `format`.")
    format: Format | None = Field(None, description="torchscript or onnx; default: from the file's suffix.")
    layout: Literal["yolo", "ssd"] = Field(..., description="yolo: one output [B, N, 4+C]; ssd: boxes [B, N, 4] and scores [B, N, C].")
    class_map: list[str | None] = Field(..., min_length=1, description="Pipeline category of each score column, null to drop it.")
    background_column: int | None = Field(None, ge=0, description="An extra score column (e.g. SSD background) dropped before class_map applies.")
    channels_first: bool = Field(False, description="yolo: the output is [B, 4+C, N] instead of [B, N, 4+C].")
    output_names: list[str] | None = Field(None, description="Outputs to read by name: [out] for yolo, [boxes, scores] for ssd.")
    boxes_output: int = Field(0, ge=0, le=1, description="ssd without output_names: position of the boxes output (scores is the other).")
    box_format: BoxFormat | None = Field(None, description="cxcywh, xyxy or yxyx; default: cxcywh for yolo, yxyx for ssd.")
    normalized: bool | None = Field(None, description="Boxes are in [0, 1] of the input, not input pixels; default: false for yolo, true for ssd.")
    scores: Literal["sigmoid", "logits", "probs"] = Field("sigmoid", description="sigmoid or probs: scores in [0, 1] as they are; logits: a sigmoid is applied.")
    input_size: tuple[int, int] = Field(..., description="The model's input [width, height]; frames are resized to it on the device.")
    letterbox: bool = Field(False, description="Keep the aspect ratio: scale to fit and pad (centred) with pad_value.")
    pad_value: int = Field(114, ge=0, le=255, description="Pixel value of the letterbox padding (before scale, mean and std).")
    input_layout: Literal["nchw", "nhwc"] = Field("nchw", description="Memory layout of the model's input tensor.")
    input_dtype: Literal["float32", "uint8"] = Field("float32", description="float32: (pixel * scale - mean) / std; uint8: the pixels as they are.")
    scale: float = Field(1 / 255, gt=0, description="float32 input: pixels are multiplied by this first.")
    mean: tuple[float, float, float] = Field((0.0, 0.0, 0.0), description="float32 input: per-channel value subtracted after scale (in the input's channel order).")
    std: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="float32 input: per-channel divisor after mean (in the input's channel order).")
    color: Literal["rgb", "bgr"] = Field("rgb", description="Channel order the model expects.")

    @field_validator("class_map")
    @classmethod
    def _class_map(cls, v: list[str | None]) -> list[str | None]:
        for i, name in enumerate(v):
            if name is not None:
                try:
                    check_categories([name])
                except ValueError as exc:
                    raise ValueError(f"entry {i}: {exc} (or null to drop the column)") from None
        if all(name is None for name in v):
            raise ValueError("every class_map entry is null: no score column maps to a category")
        return v

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not all(8 <= s <= 8192 for s in v):
            raise ValueError(f"width and height must be between 8 and 8192, got {list(v)}")
        return v

    @field_validator("std")
    @classmethod
    def _std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError(f"std must be positive, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "CustomOptions":
        p = Path(self.path).expanduser()
        suffix = p.suffix.lower()
        if self.format is None and suffix not in TORCHSCRIPT_SUFFIXES + ONNX_SUFFIXES:
            raise ValueError(
                f"path {self.path!r}: cannot tell the model format from the suffix {suffix or '(none)'!r}; "
                f"use {', '.join(TORCHSCRIPT_SUFFIXES)} (TorchScript) or .onnx, or set format: torchscript|onnx"
            )
        if not p.is_file():
            raise ValueError(f"path {self.path!r}: model file not found" + ("" if p.is_absolute() else f" (relative to {Path.cwd()})"))
        if self.output_names is not None and len(self.output_names) != (1 if self.layout == "yolo" else 2):
            want = "[out]" if self.layout == "yolo" else "[boxes, scores]"
            raise ValueError(f"output_names: the {self.layout} layout reads {want}, got {self.output_names}")
        if self.background_column is not None and self.background_column > len(self.class_map):
            raise ValueError(
                f"background_column {self.background_column} is outside the model's {len(self.class_map) + 1} score columns"
            )
        if self.input_dtype == "uint8" and (self.scale != 1 / 255 or self.mean != (0.0, 0.0, 0.0) or self.std != (1.0, 1.0, 1.0)):
            raise ValueError("scale, mean and std apply to input_dtype float32; a uint8 input gets the pixels as they are")
        if self.model_format == "onnx" and self.precision in ("fp16", "bf16"):
            raise ValueError("precision applies to TorchScript models; an ONNX model runs in the precision it was exported in")
        return self

    @property
    def model_format(self) -> Format:
        if self.format is not None:
            return self.format
        return "onnx" if Path(self.path).suffix.lower() in ONNX_SUFFIXES else "torchscript"

    @property
    def model_box_format(self) -> BoxFormat:
        return self.box_format or ("cxcywh" if self.layout == "yolo" else "yxyx")

    @property
    def model_normalized(self) -> bool:
        return self.normalized if self.normalized is not None else self.layout == "ssd"

    @property
    def score_columns(self) -> int:
        """Score columns the model outputs: class_map's, plus the background column when there is one."""
        return len(self.class_map) + (self.background_column is not None)


class MotionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    history: int = Field(300, ge=10, le=10_000, description="Frames the background model remembers.")
    var_threshold: float = Field(25.0, gt=0, description="MOG2 squared Mahalanobis distance that counts as foreground.")
    detect_shadows: bool = Field(True, description="Mark shadows and leave them out of the boxes.")
    work_width: int = Field(320, ge=64, le=4096, description="Frames are scaled to this width for the model.")
    min_area: float = Field(0.0015, gt=0, lt=1, description="Smallest box, as a fraction of the frame area.")
    warmup_frames: int = Field(15, ge=0, description="Frames at the start of a stream that only train the model.")
    dilate: int = Field(2, ge=0, le=20, description="Dilation iterations that join the parts of one object.")


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


class InferOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: Literal["coco_ssd", "motion", "custom"] = Field("coco_ssd", description="Primary detector.")
    coco_ssd: CocoSsdOptions = Field(default_factory=CocoSsdOptions, description="Settings of the COCO-SSD detector.")
    custom: CustomOptions | None = Field(
        None, validate_default=True, description="Your own TorchScript or ONNX model (detector: custom); see Bring your own detector."
    )
    motion: MotionOptions = Field(default_factory=MotionOptions, description="Settings of the motion detector.")
    motion_gate: GateOptions = Field(default_factory=GateOptions, description="Skip the CNN on frames without motion.")
    torch_threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads of the models (torch and the ONNX runtimes); default: one per core."
    )
    faces: FacesOptions | None = Field(
        None, description="Face detection (MTCNN), watchlist recognition and blurring; see Faces. null: off."
    )
    secondary: SecondaryList = Field(
        default_factory=list, description="Models run on crops of the detections (faces, signs, posture): see stages/infer/secondary_model.py."
    )

    @field_validator("custom")
    @classmethod
    def _custom_given(cls, v: CustomOptions | None, info: ValidationInfo) -> CustomOptions | None:
        # A field validator (not a model one), so the problem is reported at options.custom.
        if v is None and info.data.get("detector") == "custom":
            raise ValueError("required when detector is custom: options.custom describes the model (path, layout, class_map, input_size)")
        return v
