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

from stages.infer.ssd.taps import legacy_taps as numpy_taps

# float32(1/127.5) and 1.0, the constants of the graph's Preprocessor/mul and Preprocessor/sub.
PIXEL_SCALE = 0.007843137718737125
PIXEL_SHIFT = 1.0


def legacy_taps(
    height: int, width: int, size: tuple[int, int], device: torch.device | str = "cpu", bgr: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """stages.infer.ssd.taps.legacy_taps as tensors on `device`: (rows, cols, dy, dx), see there."""
    return tuple(torch.from_numpy(t).to(device) for t in numpy_taps(height, width, size, bgr))  # type: ignore[return-value]


def gather_taps(images: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """uint8 NHWC frames [B, H, W, C] -> the source pixels of every output tap, [B, len(rows), len(cols)].

    Rows are gathered first (whole rows: cheap), then columns of the flattened rows; the column gather runs on
    the transposed view, which is 2-3x faster in torch than index_select on the last axis.
    """
    flat = images.reshape(images.shape[0], images.shape[1], -1).index_select(1, rows)
    return flat.transpose(1, 2).index_select(1, cols).transpose(1, 2)


def blend_taps(taps: Tensor, dy: Tensor, dx: Tensor, channels: int = 3) -> Tensor:
    """TF's bilinear blend of gathered taps [B, 2h, 2 * w * C] with weights dy [B, h], dx [B, w * C]
    -> float32 [B, h, w, C]: top = tl + (tr - tl) * dx, bottom = bl + (br - bl) * dx,
    out = top + (bottom - top) * dy, in float32 as TF computes it."""
    h, wc = taps.shape[1] // 2, taps.shape[2] // 2
    t = taps.to(torch.float32)
    tl, tr, bl, br = t[:, :h, :wc], t[:, :h, wc:], t[:, h:, :wc], t[:, h:, wc:]
    dx = dx[:, None, :]
    top = tl + (tr - tl) * dx
    bottom = bl + (br - bl) * dx
    out = top + (bottom - top) * dy[:, :, None]
    return out.reshape(taps.shape[0], h, wc // channels, channels)


def resize_bilinear_legacy(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize NHWC images ([B, H, W, 3], any real dtype) to [B, h, w, 3] float32 like TF1 ResizeBilinear.

    The four corner pixels are gathered in the input dtype (uint8 frames stay small until
    the 300x300 result exists) and blended in float32 with TF's formula (`blend_taps`).
    """
    h, w = images.shape[1:3]
    if (h, w) == tuple(size):
        return images.to(torch.float32)  # every tap weight is 0: the graph's resize is the identity here
    rows, cols, dy, dx = legacy_taps(h, w, size, images.device)
    taps = gather_taps(images, rows, cols)
    b = images.shape[0]
    return blend_taps(taps, dy.expand(b, -1), dx.expand(b, -1), images.shape[3])


def preprocess(images: Tensor, size: tuple[int, int] = (300, 300)) -> Tensor:
    """uint8 RGB frames [B, H, W, 3] -> normalised float32 [B, 3, h, w] (a channels_last-strided view)."""
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected RGB frames shaped [B, H, W, 3], got {tuple(images.shape)}")
    x = resize_bilinear_legacy(images, size)
    x = x * PIXEL_SCALE - PIXEL_SHIFT
    # NHWC -> NCHW without a copy: the result is laid out channels_last already.
    return x.permute(0, 3, 1, 2)
