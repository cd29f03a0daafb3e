"""Input pre-processing of the COCO-SSD graph: resize to 300x300 and scale pixels to [-1, 1].

The TF graph resizes with TF1 `ResizeBilinear(align_corners=False, half_pixel_centers=False)`
(ONNX `Resize` with coordinate_transformation_mode="asymmetric"): source = dest * in/out, no
half-pixel shift. `torch.nn.functional.interpolate` only offers the half-pixel variant, which
shifts every sample by up to half a source pixel; on vtest.avi's first frame that moves scores by
up to 0.14 and boxes by 0.05. So the legacy sampling is rebuilt here from gathers; it runs on
whatever device the frames are on.
"""

from __future__ import annotations

import torch
from torch import Tensor

# float32(1/127.5) and 1.0, the constants of the graph's Preprocessor/mul and Preprocessor/sub.
PIXEL_SCALE = 0.007843137718737125
PIXEL_SHIFT = 1.0


def _legacy_taps(in_size: int, out_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Lower and upper source index and the upper weight of each output position (TF LegacyScaler)."""
    # TF computes the scale and the source coordinate in float32; do the same to pick the same taps.
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    src = torch.arange(out_size, dtype=torch.float32) * scale
    lo = src.floor().to(torch.int64)
    hi = torch.clamp(lo + 1, max=in_size - 1)
    frac = src - lo.to(torch.float32)
    return lo.to(device), hi.to(device), frac.to(device)


def resize_bilinear_legacy(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize NHWC images ([B, H, W, C], any real dtype) to [B, h, w, C] float32 like TF1 ResizeBilinear.

    The four corner pixels are gathered in the input dtype (uint8 frames stay small until
    the 300x300 result exists) and blended in float32 with TF's formula:
    top = tl + (tr - tl) * dx, bottom = bl + (br - bl) * dx, out = top + (bottom - top) * dy.
    """
    h, w = images.shape[1:3]
    oh, ow = size
    if (h, w) == (oh, ow):
        return images.to(torch.float32)  # every tap weight is 0: the graph's resize is the identity here
    y0, y1, dy = _legacy_taps(h, oh, images.device)
    x0, x1, dx = _legacy_taps(w, ow, images.device)
    top_rows = images.index_select(1, y0)
    bottom_rows = images.index_select(1, y1)
    tl = top_rows.index_select(2, x0).to(torch.float32)
    tr = top_rows.index_select(2, x1).to(torch.float32)
    bl = bottom_rows.index_select(2, x0).to(torch.float32)
    br = bottom_rows.index_select(2, x1).to(torch.float32)
    dx = dx.view(1, 1, ow, 1)
    dy = dy.view(1, oh, 1, 1)
    top = tl + (tr - tl) * dx
    bottom = bl + (br - bl) * dx
    return top + (bottom - top) * dy


def preprocess(images: Tensor, size: tuple[int, int] = (300, 300)) -> Tensor:
    """uint8 RGB frames [B, H, W, 3] -> normalised float32 [B, 3, h, w] (a channels_last-strided view)."""
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected RGB frames shaped [B, H, W, 3], got {tuple(images.shape)}")
    x = resize_bilinear_legacy(images, size)
    x = x * PIXEL_SCALE - PIXEL_SHIFT
    # NHWC -> NCHW without a copy: the result is laid out channels_last already.
    return x.permute(0, 3, 1, 2)
