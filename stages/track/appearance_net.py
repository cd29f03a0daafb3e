"""The appearance CNN as torch modules: a truncated ImageNet MobileNetV2 plus a small head (AppearanceNet), its
inference preparation for eager torch (batch norm folded, oneDNN convolutions, bf16) and the crops cut on the
device with one bilinear `grid_sample` per frame (all boxes of that frame at once).

Used by training (tools/train_appearance.py), by exports, and by the encoder on the torch and CUDA backends.
On a CPU runtime the tracker never imports this module (stages/track/appearance.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.track.appearance import MEAN_RGB, STD_RGB, AppearanceConfig
from stages.track.mobilenet_v2 import MobileNetV2Features


class AppearanceNet(nn.Module):
    """Normalised RGB crops [B, 3, crop_h, crop_w] -> [B, dim] L2-normalised embeddings.

    Truncated MobileNetV2 -> 1x1 conv + BN + ReLU -> average over each of `stripes` horizontal stripes ->
    linear -> L2 norm. Stripes rather than a flattened map: a box that slides sideways or a mirrored person
    keeps its embedding, while the vertical layout (shirt over trousers) still counts.
    """

    def __init__(self, config: AppearanceConfig = AppearanceConfig()) -> None:
        super().__init__()
        self.config = config
        self.backbone = MobileNetV2Features(config.blocks)
        c = self.backbone.out_channels
        self.reduce = nn.Sequential(
            nn.Conv2d(c, config.head_channels, 1, bias=False),
            nn.BatchNorm2d(config.head_channels),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(config.head_channels * config.stripes, config.dim)

    def forward(self, x: Tensor) -> Tensor:
        f = stripe_pool(self.reduce(self.backbone(x)), self.config.stripes)
        return F.normalize(self.fc(f.float()), dim=1)  # the head in float32 also when the convs run in bf16


def stripe_pool(x: Tensor, stripes: int) -> Tensor:
    """AdaptiveAvgPool2d((stripes, 1)) then flatten, [B, C, H, W] -> [B, C * stripes], as a mean over the width
    and a fixed [H, stripes] averaging matrix: the same bins, and it exports to ONNX when H is not a multiple
    of `stripes` (the 6-row map of a 48-pixel crop into 4 stripes), which adaptive pooling does not."""
    h = int(x.shape[2])
    bins = [((i * h) // stripes, -(-((i + 1) * h) // stripes)) for i in range(stripes)]
    rows = [[1.0 / (hi - lo) if lo <= r < hi else 0.0 for lo, hi in bins] for r in range(h)]
    # Built from Python numbers, so an export records one constant (in-place writes export unreliably).
    weights = torch.tensor(rows, dtype=x.dtype, device=x.device)
    return torch.matmul(x.mean(dim=3), weights).flatten(1)


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that follows a Conv2d in an nn.Sequential into the conv (in place):
    inference then skips a full pass over each activation map."""
    for child in module.children():
        fuse_batchnorm(child)
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                fused = nn.Conv2d(
                    conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True,
                ).to(conv.weight.device)  # fmt: skip
                with torch.no_grad():
                    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
                module[i], module[i + 1] = fused, nn.Identity()
    return module


class OneDnnConv(nn.Module):
    """An eval-mode Conv2d and the ReLU/ReLU6 after it as ONE oneDNN call, weights reordered once.

    Eager PyTorch runs the activation as a separate pass over the activation map (a fifth of the bf16
    forward here) and re-lays out the weights on every call. These are the private ops torch's own inductor
    compiler emits for CPU; prepare_for_inference falls back to plain convolutions where they are missing.
    """

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None, input_size: list[int], dtype: torch.dtype) -> None:
        super().__init__()
        self.padding, self.stride = list(conv.padding), list(conv.stride)  # type: ignore[arg-type]
        self.dilation, self.groups = list(conv.dilation), conv.groups
        if isinstance(act, nn.ReLU6):
            self.attr, self.scalars = "hardtanh", [0.0, 6.0]
        elif isinstance(act, nn.ReLU):
            self.attr, self.scalars = "relu", []
        else:
            self.attr, self.scalars = "none", []
        weight = conv.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        packed = torch.ops.mkldnn._reorder_convolution_weight(weight, self.padding, self.stride, self.dilation, self.groups, input_size)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("weight", packed)
        self.register_buffer("bias", bias.to(dtype))

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.attr, self.scalars, "",
        )  # fmt: skip


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def prepare_for_inference(net: AppearanceNet, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Eval copy for fast inference: batch norm folded, channels_last, convolutions in `dtype` (the head's
    linear layer stays float32); on CPU with oneDNN every conv and its activation become one OneDnnConv."""
    net = fuse_batchnorm(net.eval()).to(device, memory_format=torch.channels_last)
    example = torch.zeros(50, 3, net.config.crop_h, net.config.crop_w, device=device)
    example = example.contiguous(memory_format=torch.channels_last)
    if device.type == "cpu" and onednn_available():
        try:
            fused = _onednn_convs(copy.deepcopy(net), example, dtype)
            with torch.no_grad():
                fused(example.to(dtype))
            return fused
        except (RuntimeError, TypeError):  # another torch whose private oneDNN ops differ: plain convs
            pass
    net.backbone.to(dtype)
    net.reduce.to(dtype)
    return net


def _onednn_convs(net: AppearanceNet, example: Tensor, dtype: torch.dtype) -> AppearanceNet:
    sizes: dict[nn.Module, list[int]] = {}  # input shape of every conv, for oneDNN's weight layout choice
    hooks = [m.register_forward_pre_hook(lambda m, a: sizes.__setitem__(m, list(a[0].shape)))
             for m in net.modules() if isinstance(m, nn.Conv2d)]  # fmt: skip
    with torch.no_grad():
        net(example)
    for h in hooks:
        h.remove()
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i, conv in enumerate(seq):
            if not isinstance(conv, nn.Conv2d):
                continue
            j = i + 1
            while j < len(seq) and isinstance(seq[j], nn.Identity):  # the folded BatchNorm's place
                j += 1
            act = seq[j] if j < len(seq) and isinstance(seq[j], (nn.ReLU, nn.ReLU6)) else None
            seq[i] = OneDnnConv(conv, act, sizes[conv], dtype)
            if act is not None:
                seq[j] = nn.Identity()
    return net


def _axis_grid(lo: Tensor, hi: Tensor, n: int, size: int) -> tuple[Tensor, Tensor]:
    """Sample positions of n output pixels spread over [lo, hi) of an axis of `size` pixels.

    Returns (normalised coordinates for grid_sample with align_corners=False, in-image weight). Output pixel
    j samples the continuous position lo + (j + 0.5) * (hi - lo) / n, as cv2.resize of the crop does. The
    weight is the share of the bilinear footprint that falls inside the image: 1 inside, 0 beyond it.
    """
    steps = (torch.arange(n, device=lo.device, dtype=torch.float32) + 0.5) / n
    pos = lo[:, None] + (hi - lo)[:, None] * steps[None, :]  # [N, n] continuous pixel coordinates
    inside = torch.minimum(pos + 0.5, size + 0.5 - pos).clamp_(0.0, 1.0)
    return pos * (2.0 / size) - 1.0, inside


def crop_batch(frames: list[Tensor], boxes: list[Tensor], crop_h: int, crop_w: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Bilinear crops of xyxy pixel boxes, normalised for the network: [sum Ni, 3, crop_h, crop_w] RGB in
    `dtype`, in channels_last memory format (what the CPU convolutions are fastest with).

    frames: HxWx3 uint8 BGR tensors already on the device; boxes: [Ni, 4] float32 tensors on the same device.
    Parts of a box outside its frame read as the ImageNet mean colour (0 after normalisation): no invented
    edge pixels, and the box keeps its geometry, so a person half out of the frame stays person-shaped.
    """
    device = frames[0].device if frames else torch.device("cpu")
    total = sum(len(b) for b in boxes)
    out = torch.empty((total, crop_h, crop_w, 3), device=device, dtype=dtype)  # NHWC = channels_last NCHW
    mean = torch.tensor(MEAN_RGB, device=device).view(3, 1, 1)
    inv_std = 1.0 / torch.tensor(STD_RGB, device=device).view(3, 1, 1)
    start = 0
    for img, b in zip(frames, boxes):
        n = len(b)
        if n == 0:
            continue
        h, w = img.shape[:2]
        b = b.float()
        x2 = torch.maximum(b[:, 2], b[:, 0] + 1e-3)  # a degenerate box still samples one column
        y2 = torch.maximum(b[:, 3], b[:, 1] + 1e-3)
        gx, wx = _axis_grid(b[:, 0], x2, crop_w, w)
        gy, wy = _axis_grid(b[:, 1], y2, crop_h, h)
        grid = torch.stack((gx[:, None, :].expand(-1, crop_h, -1), gy[:, :, None].expand(-1, -1, crop_w)), -1)
        # One grid_sample per frame, over the frame converted once and broadcast (not copied) to every box:
        # a batch of n lets the sampler spread the boxes over the threads.
        src = img.permute(2, 0, 1).unsqueeze(0).float().expand(n, -1, -1, -1)
        crops = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False).flip(1)
        inside = (wy[:, :, None] * wx[:, None, :]).unsqueeze(1)  # [n, 1, crop_h, crop_w]
        # Zero padding plus mean * (1 - inside) is padding with the mean colour.
        torch.mul(crops - mean * inside, inv_std, out=out[start : start + n].permute(0, 3, 1, 2))
        start += n
    return out.permute(0, 3, 1, 2)


def load_net(weights: str | Path) -> AppearanceNet:
    """The AppearanceNet of a checkpoint ({config, state_dict}), on the CPU, in eval mode."""
    ckpt = torch.load(weights, map_location="cpu", weights_only=True)
    net = AppearanceNet(AppearanceConfig.from_dict(ckpt["config"]))
    net.load_state_dict(ckpt["state_dict"], strict=True)
    return net.eval()
