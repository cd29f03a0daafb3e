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

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.categories import category_id
from stages.infer.detector import CnnDetector
from stages.infer.device import autocast, select_device
from stages.infer.options import CustomOptions

log = logging.getLogger(__name__)

ONNX_MISSING = "ONNX models need onnxruntime, which is not installed: pip install vidpipe[onnx]"


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(ONNX_MISSING) from exc
    return onnxruntime


class _TorchScriptRunner:
    def __init__(self, o: CustomOptions, device: torch.device) -> None:
        try:
            self.model = torch.jit.load(str(Path(o.path).expanduser()), map_location=device).eval()
        except Exception as exc:
            hint = " (a state_dict or a pickled module is not TorchScript: save with torch.jit.script(model).save(path))"
            if Path(o.path).suffix.lower() == ".pt2":
                hint = " (a torch.export .pt2 archive is not TorchScript: save with torch.jit.script(model).save(path), or export to ONNX)"
            raise ValueError(f"cannot load {o.path!r} as TorchScript: {str(exc).splitlines()[0]}{hint}") from None
        self.channels_last = o.channels_last and o.input_layout == "nchw"
        if self.channels_last:
            try:
                self.model.to(memory_format=torch.channels_last)
            except Exception:  # some scripted modules refuse; the input's layout still applies
                pass
        self.names = o.output_names

    def __call__(self, x: Tensor) -> list[Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model(x)
        if isinstance(out, Tensor):
            return [out]
        if isinstance(out, dict):
            if self.names is None:
                return list(out.values())
            missing = [n for n in self.names if n not in out]
            if missing:
                raise ValueError(f"model has no output named {', '.join(missing)}; it returns {', '.join(out)}")
            return [out[n] for n in self.names]
        if isinstance(out, (tuple, list)) and all(isinstance(t, Tensor) for t in out):
            if self.names is not None:
                raise ValueError("output_names needs a model that returns a dict; this one returns a tuple (use boxes_output)")
            return list(out)
        raise ValueError(f"model returned {type(out).__name__}; expected a tensor, a tuple of tensors or a dict of them")


class _OnnxRunner:
    def __init__(self, o: CustomOptions, device: torch.device) -> None:
        ort = import_onnxruntime()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(Path(o.path).expanduser()), sess_options=so, providers=providers)
        except Exception as exc:
            raise ValueError(f"cannot load {o.path!r} as ONNX: {str(exc).splitlines()[0]}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"ONNX model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); one image input is supported")
        inp = inputs[0]
        self.input_name = inp.name
        want_type = "tensor(float)" if o.input_dtype == "float32" else "tensor(uint8)"
        if inp.type != want_type:
            raise ValueError(f"ONNX input {inp.name!r} is {inp.type}, but input_dtype is {o.input_dtype} ({want_type})")
        shape = list(inp.shape)
        w, h = o.input_size
        want = [None, 3, h, w] if o.input_layout == "nchw" else [None, h, w, 3]
        if len(shape) != 4 or any(isinstance(d, int) and e is not None and d != e for d, e in zip(shape, want)):
            raise ValueError(
                f"ONNX input {inp.name!r} is shaped {shape}; input_size {list(o.input_size)} and input_layout "
                f"{o.input_layout} make [B, {', '.join(map(str, want[1:]))}]"
            )
        # A model exported with a fixed batch of 1 gets the frames one at a time.
        self.one_at_a_time = shape[0] == 1
        outputs = [x.name for x in self.session.get_outputs()]
        if o.output_names is not None:
            missing = [n for n in o.output_names if n not in outputs]
            if missing:
                raise ValueError(f"ONNX model has no output named {', '.join(missing)}; its outputs: {', '.join(outputs)}")
            self.output_names = list(o.output_names)
        else:
            self.output_names = outputs
        self.device = device

    def __call__(self, x: Tensor) -> list[Tensor]:
        arr = x.detach().contiguous().cpu().numpy()
        if self.one_at_a_time and len(arr) > 1:
            parts = [self.session.run(self.output_names, {self.input_name: arr[i : i + 1]}) for i in range(len(arr))]
            outs = [np.concatenate(cols) for cols in zip(*parts)]
        else:
            outs = self.session.run(self.output_names, {self.input_name: arr})
        return [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in outs]


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
        if o.model_format == "onnx":
            self.dtype = torch.float32  # onnxruntime runs the exported precision; no autocast around it
            self.runner: _TorchScriptRunner | _OnnxRunner = _OnnxRunner(o, self.device)
        else:
            self.runner = _TorchScriptRunner(o, self.device)
        self.format = o.model_format
        self.box_format = o.model_box_format
        self.normalized = o.model_normalized
        w, h = o.input_size
        self._mean = torch.tensor(o.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(o.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._check_outputs(w, h)

    # -- checks ---------------------------------------------------------------------------------

    def _check_outputs(self, w: int, h: int) -> None:
        """Run the model once on a blank frame of the input size; the outputs must match the layout."""
        dummy = torch.zeros((1, h, w, 3), dtype=torch.uint8, device=self.device)
        try:
            with torch.inference_mode(), autocast(self.device, self.dtype):
                x, _ = self._preprocess(dummy)
                outputs = self.runner(x)
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
        boxes, scores = self._select(self.runner(x), batch=rgb.shape[0])
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
