"""Read a TFLite flatbuffer into plain Python: its tensors (name, dtype, shape, constant data) and its ops.

    pip install tflite==2.18.0      # the pure-Python flatbuffer schema (Apache-2.0, 150 kB); not a vidpipe dependency
    from tools.tflite_graph import read_graph
    graph = read_graph(Path("movenet.tflite").read_bytes())
    for op in graph.ops: print(op.kind, op.options, [graph.tensors[i].shape for i in op.inputs])

Only what a converter needs: the first subgraph, each op's builtin name, inputs, outputs and its builtin
options as a dict, and every constant buffer as a numpy array. `graph.constant(i)` gives a constant as
float32, dequantised: float16 -> float32 exactly; int8/uint8/int16 affine (per-tensor or per-channel along
`quantized_dimension`) as (q - zero_point) * scale in float64, rounded once. A tensor that is the output of a
DEQUANTIZE op of a constant (how a float16 model stores its weights) is followed back to that constant.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_DTYPES = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "INT8": np.int8, "INT16": np.int16, "UINT16": np.uint16, "UINT32": np.uint32, "BOOL": np.bool_,
}  # fmt: skip
# Builtin options read for the ops the MoveNet converter checks; others are left as {}.
_OPTIONS = {
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions", "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions", "RESIZE_BILINEAR": "ResizeBilinearOptions", "ADD": "AddOptions",
    "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions", "CONCATENATION": "ConcatenationOptions",
    "REDUCE_MAX": "ReducerOptions", "SUM": "ReducerOptions", "ARG_MAX": "ArgMaxOptions", "PACK": "PackOptions",
    "UNPACK": "UnpackOptions", "STRIDED_SLICE": "StridedSliceOptions", "SQUEEZE": "SqueezeOptions",
}  # fmt: skip


@dataclass
class Quantization:
    scale: np.ndarray  # float32, one per tensor or per channel
    zero_point: np.ndarray  # int64
    axis: int


@dataclass
class Tensor:
    index: int
    name: str
    dtype: str  # the TFLite type name: FLOAT32, FLOAT16, INT32, ...
    shape: tuple[int, ...]  # as stored; -1 in shape_signature marks a dynamic axis
    shape_signature: tuple[int, ...]
    data: np.ndarray | None  # the constant's values in its stored dtype and shape, None for activations
    quantization: Quantization | None


@dataclass
class Op:
    index: int
    kind: str  # builtin operator name, e.g. CONV_2D; CUSTOM:<code> for custom ops
    inputs: list[int]  # tensor indices, -1 for an omitted optional input
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    description: str
    version: int

    def producer(self, tensor: int) -> Op | None:
        """The op that writes `tensor`, None for graph inputs and constants."""
        for op in self.ops:
            if tensor in op.outputs:
                return op
        return None

    def constant(self, tensor: int) -> np.ndarray:
        """A constant as float32 (dequantised; see the module docstring). Raises for an activation."""
        t = self.tensors[tensor]
        if t.data is None:
            op = self.producer(tensor)
            if op is None or op.kind != "DEQUANTIZE":
                raise ValueError(f"tensor {tensor} ({t.name}) is not a constant")
            return self.constant(op.inputs[0])
        return dequantize(t)


def dequantize(t: Tensor) -> np.ndarray:
    """A constant tensor's values as float32."""
    assert t.data is not None
    data = t.data
    if data.dtype == np.float32:
        return data
    if data.dtype == np.float16:
        return data.astype(np.float32)  # exact: every float16 is a float32
    if t.quantization is None or not len(t.quantization.scale):
        if data.dtype.kind == "f":
            return data.astype(np.float32)
        raise ValueError(f"{t.name}: {t.dtype} constant without quantisation parameters")
    q = t.quantization
    shape = [1] * data.ndim
    if len(q.scale) > 1:  # per channel
        shape[q.axis] = len(q.scale)
    scale = q.scale.astype(np.float64).reshape(shape)
    zero = q.zero_point.astype(np.float64).reshape(shape) if len(q.zero_point) else 0.0
    return ((data.astype(np.float64) - zero) * scale).astype(np.float32)


def _builtin_names(tflite: Any) -> dict[int, str]:
    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def _options(tflite: Any, op: Any, kind: str) -> dict[str, Any]:
    cls_name = _OPTIONS.get(kind)
    table = op.BuiltinOptions()
    if cls_name is None or table is None:
        return {}
    opts = getattr(tflite, cls_name)()
    opts.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    for name in dir(opts):
        if not name[:1].isupper() or name == "Init" or name.endswith(("IsNone", "Length", "AsNumpy")):
            continue
        value = getattr(opts, name)
        if not inspect.ismethod(value):  # the generated classes' static and class helpers
            continue
        params = len(inspect.signature(value).parameters)
        if params == 0:
            out[name] = value()
        elif params == 1 and hasattr(opts, f"{name}Length"):  # a vector field: read through its Length
            out[name] = [value(j) for j in range(getattr(opts, f"{name}Length")())]
    return out


def read_graph(model: bytes) -> Graph:
    """The first subgraph of a TFLite model (its flatbuffer bytes)."""
    import tflite  # the flatbuffer schema: see the module docstring

    m = tflite.Model.GetRootAsModel(model, 0)
    if m.SubgraphsLength() != 1:
        raise ValueError(f"{m.SubgraphsLength()} subgraphs; only single-graph models are read")
    type_names = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_") and isinstance(v, int)}
    builtins = _builtin_names(tflite)
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # the schema keeps codes < 127 in the deprecated field
        name = builtins[code]
        codes.append(f"CUSTOM:{oc.CustomCode().decode()}" if name == "CUSTOM" else name)
    g = m.Subgraphs(0)
    tensors: list[Tensor] = []
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        dtype = type_names[t.Type()]
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        signature = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape
        buffer = m.Buffers(t.Buffer())
        data = None
        if buffer.Offset():  # models over 2 GB keep buffers after the flatbuffer
            start, size = int(buffer.Offset()), int(buffer.Size())
            raw = model[start : start + size]
            data = np.frombuffer(raw, _DTYPES[dtype]).reshape(shape).copy()
        elif buffer.DataLength():
            data = np.frombuffer(buffer.DataAsNumpy().tobytes(), _DTYPES[dtype]).reshape(shape).copy()
        quant = None
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            zero = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(0)
            quant = Quantization(q.ScaleAsNumpy().astype(np.float32), np.asarray(zero, np.int64), int(q.QuantizedDimension()))
        tensors.append(Tensor(i, t.Name().decode(), dtype, shape, signature, data, quant))
    ops = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        kind = codes[op.OpcodeIndex()]
        inputs = [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else []
        outputs = [int(x) for x in op.OutputsAsNumpy()] if op.OutputsLength() else []
        ops.append(Op(k, kind, inputs, outputs, _options(tflite, op, kind)))
    return Graph(
        tensors=tensors, ops=ops, inputs=[int(x) for x in g.InputsAsNumpy()], outputs=[int(x) for x in g.OutputsAsNumpy()],
        description=(m.Description() or b"").decode(), version=int(m.Version()),
    )  # fmt: skip
