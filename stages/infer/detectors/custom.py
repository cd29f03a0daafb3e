"""Bring your own detector: a TorchScript or ONNX model with a declared input and output layout.

The model runs through `CnnDetector` like COCO-SSD: frames of one size are batched and uploaded as
uint8, resized (torch bilinear, antialias off, optionally letterboxed) and normalised on the device,
then the shared thresholds, per-class NMS and category mapping apply. What the config declares
(`detector: {type: custom, ...}`, checked by `CustomOptions`):

- input: `input_size` [w, h], `input_layout` nchw|nhwc, `input_dtype` float32|uint8, `color` rgb|bgr,
  and for float32 input `(pixel * scale - mean) / std`;
- output, `layout: yolo`: one tensor [B, N, 4+C] (or [B, 4+C, N] with `channels_first`), the box then C
  class scores per row; `layout: ssd`: boxes [B, N, 4] and scores [B, N, C] as two outputs;
- boxes as `box_format` (cxcywh, xyxy or yxyx), in input pixels or `normalized` to the input;
- scores as probabilities (`sigmoid`, `probs`) or `logits` (a sigmoid is applied);
- `class_map`: the pipeline category of each score column, null to drop the column
  (`background_column`, when set, is an extra column that is dropped first).

TorchScript runs on the detector's device under its precision (autocast); ONNX runs through
onnxruntime (an optional dependency: `pip install vidpipe[onnx]`), on the CPU or, when the device is
CUDA and onnxruntime has the CUDA provider, on the GPU, always in the precision it was exported in.
At load the model runs once on a dummy input and its output shapes are checked against the layout.

torch is imported where the model is loaded and run, not with this module: reading a config imports every
detector module (stages/infer/detectors/__init__.py), and that must not load torch.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.categories import category_id, check_categories
from pipeline.device import autocast, select_device
from pipeline.paths import InputPath
from stages.infer.backend import InputSpec, Runner, compile_module, load_onnx
from stages.infer.detector import CnnDetector, CnnOptions, cnn_backend

if TYPE_CHECKING:
    import torch
    from torch import Tensor

log = logging.getLogger(__name__)

ONNX_MISSING = "ONNX models need onnxruntime, which is not installed: pip install vidpipe[onnx]"


TORCHSCRIPT_SUFFIXES = (".pt", ".pt2", ".ts", ".torchscript")


ONNX_SUFFIXES = (".onnx",)


Format = Literal["torchscript", "onnx"]


BoxFormat = Literal["cxcywh", "xyxy", "yxyx"]


class CustomOptions(CnnOptions):
    """A TorchScript or ONNX detector described by its input and output layout."""

    type: Literal["custom"] = Field("custom", description="Your own TorchScript or ONNX model: see Bring your own detector.")
    path: InputPath = Field(..., description="Model file: .pt, .pt2, .ts (TorchScript) or .onnx (ONNX); see `format`.")
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


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(ONNX_MISSING) from exc
    return onnxruntime


def load_torchscript(o: CustomOptions, device: torch.device) -> torch.nn.Module:
    """The TorchScript module of `o.path`; ValueError with a hint when the file is something else."""
    import torch

    try:
        return torch.jit.load(str(Path(o.path).expanduser()), map_location=device).eval()
    except Exception as exc:
        hint = " (a state_dict or a pickled module is not TorchScript: save with torch.jit.script(model).save(path))"
        if Path(o.path).suffix.lower() == ".pt2":
            hint = " (a torch.export .pt2 archive is not TorchScript: save with torch.jit.script(model).save(path), or export to ONNX)"
        raise ValueError(f"cannot load {o.path!r} as TorchScript: {str(exc).splitlines()[0]}{hint}") from None


def check_onnx_input(o: CustomOptions, specs: list[InputSpec]) -> None:
    """The ONNX graph must take one image input of the declared dtype, layout and size."""
    if len(specs) != 1:
        raise ValueError(f"ONNX model has {len(specs)} inputs ({', '.join(i.name for i in specs)}); one image input is supported")
    inp = specs[0]
    if inp.dtype != o.input_dtype:
        raise ValueError(f"ONNX input {inp.name!r} is tensor({inp.dtype.replace('32', '')}), but input_dtype is {o.input_dtype} "
                         f"(tensor({o.input_dtype.replace('32', '')}))")  # fmt: skip
    w, h = o.input_size
    want = [None, 3, h, w] if o.input_layout == "nchw" else [None, h, w, 3]
    if len(inp.shape) != 4 or any(d is not None and e is not None and d != e for d, e in zip(inp.shape, want)):
        raise ValueError(
            f"ONNX input {inp.name!r} is shaped {inp.shape}; input_size {list(o.input_size)} and input_layout "
            f"{o.input_layout} make [B, {', '.join(map(str, want[1:]))}]"
        )


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


class CustomDetector(CnnDetector):
    """A TorchScript or ONNX detector whose outputs are declared by `CustomOptions`."""

    type = "custom"
    Options = CustomOptions

    def __init__(self, options: CustomOptions) -> None:
        import torch

        o = options
        if o.model_format == "onnx":
            ort = import_onnxruntime()  # the clear message before anything else
            if select_device(o.device).type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
                if o.device != "auto":
                    log.warning("device %s asked for, but onnxruntime has no CUDAExecutionProvider: the ONNX model runs on the CPU", o.device)
                o = o.model_copy(update={"device": "cpu"})
        columns = [category_id(c) if c is not None else None for c in o.class_map]
        super().__init__(o, columns)
        self.format = o.model_format
        self.box_format = o.model_box_format
        self.normalized = o.model_normalized
        w, h = o.input_size
        self._mean = torch.tensor(o.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(o.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        # Through the backend layer: an ONNX file on onnxruntime (auto on the CPU), OpenVINO or ONNX Runtime's
        # CUDA provider; a TorchScript module in eager torch (auto on the CPU: a user's graph may not export),
        # fp16 CUDA graphs on a GPU, or exported to ONNX for onnxruntime or OpenVINO when asked for.
        self.runner: Runner
        if o.model_format == "onnx":
            self.dtype = torch.float32  # the runtimes run the exported precision; no autocast around them
            self.runner = load_onnx(Path(o.path).expanduser(), backend=o.backend, device=self.device)
            check_onnx_input(o, self.runner.input_specs)  # type: ignore[attr-defined]
        else:
            module = load_torchscript(o, self.device)
            with torch.inference_mode():
                example, _ = self._preprocess(torch.zeros((1, h, w, 3), dtype=torch.uint8, device=self.device))
            self.runner = compile_module(
                module, [example.cpu()], name="custom", backend=cnn_backend(o, self.device_name, self.precision, "torch"),
                device=self.device, cpu_default="torch", channels_last=o.channels_last and o.input_layout == "nchw",
                extra="file=" + hashlib.sha256(Path(o.path).expanduser().read_bytes()).hexdigest(),
            )  # fmt: skip
        self.backend = self.runner.backend
        self._check_outputs(w, h)

    def describe(self) -> str:
        return f"custom ({self.format}, {self.o.path}) on {self.device_name} ({self.precision}, {self.backend})"  # type: ignore[attr-defined]

    def _outputs(self, x: Tensor) -> list[Tensor]:
        """The model's outputs on x, those named by output_names when it is set, on the detector's device."""
        o: CustomOptions = self.o  # type: ignore[assignment]
        outs = list(self.runner(x))
        names = self.runner.output_names
        if o.output_names is not None:
            if names is None:
                raise ValueError("output_names needs a model that returns a dict; this one returns a tuple (use boxes_output)")
            missing = [n for n in o.output_names if n not in names]
            if missing:
                raise ValueError(f"model has no output named {', '.join(missing)}; its outputs: {', '.join(names)}")
            outs = [outs[names.index(n)] for n in o.output_names]
        return [t.to(self.device) for t in outs]

    # -- checks ---------------------------------------------------------------------------------

    def _check_outputs(self, w: int, h: int) -> None:
        """Run the model once on a blank frame of the input size; the outputs must match the layout."""
        import torch

        dummy = torch.zeros((1, h, w, 3), dtype=torch.uint8, device=self.device)
        try:
            with torch.inference_mode(), autocast(self.device, self.dtype):
                x, _ = self._preprocess(dummy)
                outputs = self._outputs(x)
        except ValueError:
            raise
        except Exception as exc:
            shape = [1, 3, h, w] if self.o.input_layout == "nchw" else [1, h, w, 3]  # type: ignore[attr-defined]
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            why = lines[-1] if lines else type(exc).__name__  # TorchScript puts the model's own error last
            raise ValueError(f"model {self.o.path!r} failed on a dummy input {shape}: {why}") from None  # type: ignore[attr-defined]
        self._select(outputs, batch=1)

    def _select(self, outputs: list[Tensor], batch: int) -> tuple[Tensor, Tensor]:
        """boxes [B, N, 4] and raw scores [B, N, C_model] out of the model's outputs, shapes checked."""
        o: CustomOptions = self.o  # type: ignore[assignment]
        c = len(o.class_map)
        c_text = f"C=len(class_map)={c}" + (", +1 background column" if o.background_column is not None else "")
        cm = o.score_columns
        got = [_shape(t) for t in outputs]
        if o.layout == "yolo":
            if len(outputs) != 1 and o.output_names is None:
                raise ValueError(f"yolo layout expects one output, model returned {len(outputs)}: {got} (name it with output_names)")
            out = outputs[0]
            s = _shape(out)
            if o.channels_first:
                ok = len(s) == 3 and s[0] == batch and s[1] == 4 + cm
                if not ok:
                    raise ValueError(f"yolo layout with channels_first expects [B, 4+C, N] with {c_text}, model returned {s}")
                out = out.transpose(1, 2)
            else:
                ok = len(s) == 3 and s[0] == batch and s[2] == 4 + cm
                if not ok:
                    hint = "; it looks like [B, 4+C, N]: set channels_first: true" if len(s) == 3 and s[1] == 4 + cm else ""
                    raise ValueError(f"yolo layout expects [B, N, 4+C] with {c_text}, model returned {s}{hint}")
            return out[..., :4], out[..., 4:]
        if len(outputs) < 2:
            raise ValueError(f"ssd layout expects two outputs (boxes [B, N, 4], scores [B, N, C]), model returned {len(outputs)}: {got}")
        if o.output_names is not None:
            boxes, scores = outputs[0], outputs[1]
        else:
            boxes, scores = outputs[o.boxes_output], outputs[1 - o.boxes_output]
        b, sc = _shape(boxes), _shape(scores)
        if not (len(b) == 3 and b[0] == batch and b[2] == 4):
            raise ValueError(f"ssd layout expects boxes [B, N, 4], model returned {b} (scores {sc}); check boxes_output or output_names")
        if not (len(sc) == 3 and sc[0] == batch and sc[1] == b[1] and sc[2] == cm):
            raise ValueError(f"ssd layout expects scores [B, N, C] with N={b[1]} and {c_text}, model returned {sc}")
        return boxes, scores

    # -- the network ----------------------------------------------------------------------------

    def _preprocess(self, rgb: Tensor) -> tuple[Tensor, tuple[float, float, float, float]]:
        """uint8 RGB [B, H, W, 3] -> the model's input, and where the frame lies in it:
        (x offset, y offset, width, height) in input pixels."""
        import torch
        import torch.nn.functional as F

        o: CustomOptions = self.o  # type: ignore[assignment]
        w, h = o.input_size
        fh, fw = rgb.shape[1:3]
        if o.color == "bgr":
            rgb = rgb.flip(-1)
        with torch.autocast(self.device.type, enabled=False):
            x = rgb.permute(0, 3, 1, 2).float()  # NCHW view of the NHWC frames
            if o.letterbox:
                s = min(w / fw, h / fh)
                cw, ch = max(1, min(w, round(fw * s))), max(1, min(h, round(fh * s)))
            else:
                cw, ch = w, h
            if (ch, cw) != (fh, fw):
                x = F.interpolate(x, size=(ch, cw), mode="bilinear", align_corners=False, antialias=False)
            px, py = (w - cw) // 2, (h - ch) // 2
            if (cw, ch) != (w, h):
                x = F.pad(x, (px, w - cw - px, py, h - ch - py), value=float(o.pad_value))
            if o.input_dtype == "uint8":
                x = x.round_().clamp_(0, 255).to(torch.uint8)
            else:
                x = (x * o.scale - self._mean) / self._std
            if o.input_layout == "nhwc":
                x = x.permute(0, 2, 3, 1)
            x = x.contiguous()
        return x, (float(px), float(py), float(cw), float(ch))

    def forward(self, rgb: Tensor) -> tuple[Tensor, Tensor]:
        import torch

        o: CustomOptions = self.o  # type: ignore[assignment]
        x, (px, py, cw, ch) = self._preprocess(rgb)
        boxes, scores = self._select(self._outputs(x), batch=rgb.shape[0])
        scores = scores.float()
        if o.scores == "logits":
            scores = torch.sigmoid(scores)
        if o.background_column is not None:
            keep = [j for j in range(o.score_columns) if j != o.background_column]
            scores = scores[..., keep]
        boxes = boxes.float()
        if self.box_format == "cxcywh":
            cx, cy, bw, bh = boxes.unbind(-1)
            x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
        elif self.box_format == "xyxy":
            x1, y1, x2, y2 = boxes.unbind(-1)
        else:
            y1, x1, y2, x2 = boxes.unbind(-1)
        w, h = o.input_size
        if self.normalized:
            x1, x2, y1, y2 = x1 * w, x2 * w, y1 * h, y2 * h
        # Input pixels -> [0, 1] of the frame: the frame fills (px, py, cw, ch) of the input.
        x1, x2 = (x1 - px) / cw, (x2 - px) / cw
        y1, y2 = (y1 - py) / ch, (y2 - py) / ch
        return scores, torch.stack([y1, x1, y2, x2], dim=-1)
