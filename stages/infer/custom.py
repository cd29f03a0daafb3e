"""Bring your own detector: a TorchScript or ONNX model with a declared input and output layout.

The model runs through `CnnDetector` like COCO-SSD: frames of one size are batched and uploaded as
uint8, resized (torch bilinear, antialias off, optionally letterboxed) and normalised on the device,
then the shared thresholds, per-class NMS and category mapping apply. What the config declares:

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
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.categories import category_id
from pipeline.device import autocast, select_device
from stages.infer.backend import InputSpec, Runner, compile_module, load_onnx
from stages.infer.detector import CnnDetector, cnn_backend
from stages.infer.options import CustomOptions

log = logging.getLogger(__name__)

ONNX_MISSING = "ONNX models need onnxruntime, which is not installed: pip install vidpipe[onnx]"


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(ONNX_MISSING) from exc
    return onnxruntime


def load_torchscript(o: CustomOptions, device: torch.device) -> torch.nn.Module:
    """The TorchScript module of `o.path`; ValueError with a hint when the file is something else."""
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

    def __init__(self, options: CustomOptions) -> None:
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
