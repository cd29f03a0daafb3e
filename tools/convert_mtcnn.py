"""Convert facenet-pytorch 2.6.0's MTCNN weights into stages/infer/weights/mtcnn.pt.

    pip download --no-deps facenet-pytorch==2.6.0        # or any copy of the wheel; it is not installed
    python -m tools.convert_mtcnn --wheel facenet_pytorch-2.6.0-py3-none-any.whl

The wheel is read as a zip: facenet_pytorch/data/{pnet,rnet,onet}.pt are plain state_dicts, loaded with
torch.load(weights_only=True); none of the package's code is imported or run. The tensors are renamed for
stages.infer.faces.mtcnn's modules and rearranged where the layout differs:

- R-Net's and O-Net's first dense layer: facenet-pytorch flattens the conv output as (W, H, C) (the order of
  the TensorFlow port it came from), these modules flatten (C, H, W), so the weight's columns are permuted;
- O-Net's landmark layer emits x0..x4, y0..y4 upstream and x0, y0, x1, y1, ... here (rows permuted).

No arithmetic touches a value, so the tensors are bit for bit the package's. Before writing, each network is
checked against a functional re-statement of the package's layer layout on random inputs, and the file is
written deterministically (the same bytes for the same torch version).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.infer.faces.mtcnn import DEFAULT_WEIGHTS, MtcnnNets

PACKAGE = "facenet-pytorch"
VERSION = "2.6.0"
SOURCES = {net: f"facenet_pytorch/data/{net}.pt" for net in ("pnet", "rnet", "onet")}
LICENSE = "facenet_pytorch-2.6.0.dist-info/LICENSE.md"

# (our key, upstream key) per network; the tensor is copied unless a fix-up below says otherwise.
_RENAMES: dict[str, list[tuple[str, str]]] = {
    "pnet": [
        ("conv1", "conv1"), ("act1", "prelu1"), ("conv2", "conv2"), ("act2", "prelu2"),
        ("conv3", "conv3"), ("act3", "prelu3"), ("face", "conv4_1"), ("box", "conv4_2"),
    ],
    "rnet": [
        ("conv1", "conv1"), ("act1", "prelu1"), ("conv2", "conv2"), ("act2", "prelu2"),
        ("conv3", "conv3"), ("act3", "prelu3"), ("fc", "dense4"), ("act4", "prelu4"),
        ("face", "dense5_1"), ("box", "dense5_2"),
    ],
    "onet": [
        ("conv1", "conv1"), ("act1", "prelu1"), ("conv2", "conv2"), ("act2", "prelu2"),
        ("conv3", "conv3"), ("act3", "prelu3"), ("conv4", "conv4"), ("act4", "prelu4"),
        ("fc", "dense5"), ("act5", "prelu5"), ("face", "dense6_1"), ("box", "dense6_2"),
        ("landmarks", "dense6_3"),
    ],
}
# Channels and side of the feature map the first dense layer reads.
_FC_INPUT = {"rnet": (64, 3), "onet": (128, 3)}
_LANDMARK_ROWS = [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]  # upstream x0..x4, y0..y4 -> x0, y0, ..., x4, y4
_INPUT_SIDE = {"pnet": 31, "rnet": 24, "onet": 48}


def _fc_wh_c_to_c_h_w(weight: Tensor, channels: int, side: int) -> Tensor:
    """Columns of a dense weight [out, W*H*C] (input flattened as W, H, C) reordered for a (C, H, W) flatten."""
    out = weight.shape[0]
    return weight.reshape(out, side, side, channels).permute(0, 3, 2, 1).reshape(out, -1)


def convert_state(net: str, upstream: dict[str, Tensor]) -> OrderedDict[str, Tensor]:
    """One network's state_dict in this project's layout."""
    out: dict[str, Tensor] = {}
    used = set()
    for ours, theirs in _RENAMES[net]:
        for suffix in ("weight", "bias"):
            key = f"{theirs}.{suffix}"
            if key not in upstream:
                if theirs.startswith("prelu") and suffix == "bias":
                    continue
                raise KeyError(f"{net}: {key} missing from the package's state_dict")
            used.add(key)
            value = upstream[key]
            if ours == "fc" and suffix == "weight":
                value = _fc_wh_c_to_c_h_w(value, *_FC_INPUT[net])
            if ours == "landmarks":
                value = value[_LANDMARK_ROWS]
            out[f"{ours}.{suffix}"] = value.detach().to(torch.float32).contiguous().clone()
    unused = sorted(set(upstream) - used)
    if unused:
        raise ValueError(f"{net}: tensors left unused: {unused}")
    reference = getattr(MtcnnNets(), net).state_dict()
    if set(reference) != set(out):
        missing, extra = sorted(set(reference) - set(out)), sorted(set(out) - set(reference))
        raise ValueError(f"{net}: keys differ: missing {missing}, extra {extra}")
    state: OrderedDict[str, Tensor] = OrderedDict()
    for key, ref in reference.items():  # the module's own key order, for a deterministic file
        if out[key].shape != ref.shape:
            raise ValueError(f"{net}.{key}: converted {tuple(out[key].shape)}, module wants {tuple(ref.shape)}")
        state[key] = out[key]
    return state


def upstream_forward(net: str, w: dict[str, Tensor], x: Tensor) -> tuple[Tensor, ...]:
    """The package's layer layout restated with functional ops (outputs in its order: box offsets, [landmarks,]
    probabilities), to check the converted modules against."""

    def conv(t: Tensor, name: str) -> Tensor:
        return F.conv2d(t, w[f"{name}.weight"], w[f"{name}.bias"])

    def dense(t: Tensor, name: str) -> Tensor:
        return F.linear(t, w[f"{name}.weight"], w[f"{name}.bias"])

    def prelu(t: Tensor, name: str) -> Tensor:
        return F.prelu(t, w[f"{name}.weight"])

    def pool(t: Tensor, k: int) -> Tensor:
        return F.max_pool2d(t, k, 2, ceil_mode=True)

    if net == "pnet":
        t = pool(prelu(conv(x, "conv1"), "prelu1"), 2)
        t = prelu(conv(prelu(conv(t, "conv2"), "prelu2"), "conv3"), "prelu3")
        return conv(t, "conv4_2"), torch.softmax(conv(t, "conv4_1"), dim=1)
    t = pool(prelu(conv(x, "conv1"), "prelu1"), 3)
    t = pool(prelu(conv(t, "conv2"), "prelu2"), 3)
    if net == "rnet":
        t = prelu(conv(t, "conv3"), "prelu3")
        t = prelu(dense(t.permute(0, 3, 2, 1).reshape(len(t), -1), "dense4"), "prelu4")
        return dense(t, "dense5_2"), torch.softmax(dense(t, "dense5_1"), dim=1)
    t = pool(prelu(conv(t, "conv3"), "prelu3"), 2)
    t = prelu(conv(t, "conv4"), "prelu4")
    t = prelu(dense(t.permute(0, 3, 2, 1).reshape(len(t), -1), "dense5"), "prelu5")
    return dense(t, "dense6_2"), dense(t, "dense6_3"), torch.softmax(dense(t, "dense6_1"), dim=1)


def check(net: str, upstream: dict[str, Tensor], state: dict[str, Tensor]) -> float:
    """Largest difference between the converted module and the upstream layout on random inputs."""
    module: nn.Module = getattr(MtcnnNets(), net)
    module.load_state_dict(state, strict=True)
    module.eval()
    side = _INPUT_SIDE[net]
    x = torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = upstream_forward(net, upstream, x)
        got = module(x)
    if net in ("pnet", "rnet"):
        pairs = [(got[0], ref[1][:, 1]), (got[1], ref[0])]
    else:
        pairs = [(got[0], ref[2][:, 1]), (got[1], ref[0]), (got[2], torch.stack((ref[1][:, :5], ref[1][:, 5:]), dim=-1))]
    diff = max(float((a - b).abs().max()) for a, b in pairs)
    if diff > 1e-4:
        raise ValueError(f"{net}: converted module differs from the package's layout by {diff}")
    return diff


def convert(wheel: Path) -> tuple[dict[str, OrderedDict[str, Tensor]], dict[str, str]]:
    """The weights file's content and the sha256 of each file read (the wheel first)."""
    data = wheel.read_bytes()
    digests = {wheel.name: _sha256(data)}
    weights: dict[str, OrderedDict[str, Tensor]] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for net, path in SOURCES.items():
            raw = z.read(path)
            digests[path] = _sha256(raw)
            upstream = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            weights[net] = convert_state(net, upstream)
            diff = check(net, upstream, weights[net])
            print(f"check  {net}: max |converted - upstream layout| on random input {diff:.2e}")
        digests[LICENSE] = _sha256(z.read(LICENSE))
    return weights, digests


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, required=True, help=f"{PACKAGE}=={VERSION} wheel (.whl)")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="where to write the weights (.pt)")
    args = parser.parse_args(argv)
    weights, digests = convert(args.wheel)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Through a buffer, so the archive's inner folder is "archive" whatever the output file is named.
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    args.out.write_bytes(buffer.getvalue())
    for name, digest in digests.items():
        print(f"read   {digest}  {name}")
    params = sum(t.numel() for sd in weights.values() for t in sd.values())
    print(f"wrote  {_sha256(args.out.read_bytes())}  {args.out}  ({params:,} parameters, {args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
