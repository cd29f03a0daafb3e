"""MTCNN face detection (Zhang, Zhang, Li, Qiao: "Joint Face Detection and Alignment Using Multitask Cascaded
Convolutional Networks", IEEE SPL 2016) in torch, batched, on the frames' device.

    mtcnn = Mtcnn(MtcnnOptions(), torch.device("cpu"))
    for boxes, scores, landmarks in mtcnn.detect([frame_bgr_uint8_tensor, ...]): ...

The cascade, for a batch of frames (sizes may differ):

1. P-Net, fully convolutional, scores every 12x12 window (stride 2) of an image pyramid; windows above
   thresholds[0] become boxes, NMS runs per pyramid level and then across levels, and the boxes are moved
   by P-Net's regression and made square.
2. R-Net scores a 24x24 crop of each box; survivors above thresholds[1] go through NMS, regression, squaring.
3. O-Net scores a 48x48 crop of each; survivors above thresholds[2] get five landmarks and a last regression,
   then an NMS by intersection over the smaller box.

The weights are facenet-pytorch 2.6.0's (stages/infer/weights/PROVENANCE-mtcnn.md) and the arithmetic
follows that package's `detect_face` step by step, so that the port reproduces its detections
(tests/test_mtcnn_parity.py): RGB pixels scaled (x - 127.5) / 128; pyramid scales 12 / min_face_size *
scale_factor^k while the short side still covers 12 pixels, level size (int(h*s + 1), int(w*s + 1)), area
averaging (`F.interpolate(mode="area")`); P-Net cell (row r, column c) at scale s is the window
floor((2c + 1) / s), floor((2r + 1) / s), floor((2c + 12) / s), floor((2r + 12) / s); crops are the box
truncated to integers, clipped to the frame and area-averaged to the network's input, so a box that sticks
out of the frame is squeezed rather than padded, as in facenet-pytorch (the original MATLAB code pads
with zeros instead).

Deliberate differences from facenet-pytorch:
- Output boxes are in this project's pixel-edge convention (frame pixel i covers [i, i + 1)): the
  cascade works, as the original MATLAB code did, with 1-based inclusive pixel indices (the box x1..x2
  crops pixels x1 - 1 .. x2 - 1), so facenet-pytorch's (x1, y1, x2, y2) is returned as
  (x1 - 1, y1 - 1, x2, y2). Landmarks already are in pixel-edge coordinates (crop edge + fraction of the
  crop) and are returned unchanged. Boxes are not clipped to the frame.
- A box that lies wholly outside the frame (nothing to crop) is dropped; facenet-pytorch skips its crop
  but keeps the box, which shifts every later box onto the wrong crop.
- score_threshold and max_faces filter the cascade's output; with score_threshold <= thresholds[2] and
  enough max_faces the faces are facenet-pytorch's (MTCNN(keep_all=True).detect).
- Faces come out per image in decreasing score, not largest first.

Everything runs in torch on the frames' device, under inference mode, in float32. P-Net runs per pyramid
level on all frames of one size at once (on the CPU at most PNET_BATCH_PIXELS_CPU pixels per call: bigger
batches fall out of the caches and get slower per frame). NMS is greedy as in pipeline.boxes
(torchvision's semantics), walked in blocks so that thousands of P-Net windows need no N x N matrix. The
R-Net and O-Net crops of the whole batch are cut in one gather each from integral images of the frames,
which is area averaging over each crop's own bins, bit for bit what F.interpolate(mode="area") gives on
each crop (integer sums, divided by the bin's rows and then its columns as torch's adaptive average
pooling does).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.boxes import box_iou_torch, greedy_keep_torch
from stages.infer.backend import CpuRuntime, compile_module
from stages.infer.options import MtcnnOptions

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "mtcnn.pt"
PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125  # 1 / 128
PNET_WINDOW = 12
PNET_STRIDE = 2
RNET_SIZE = 24
ONET_SIZE = 48
# Most pixels of same-size frames P-Net takes in one call (a vtest frame is 0.44 Mpixel).
PNET_BATCH_PIXELS_CPU = 1 << 19
PNET_BATCH_PIXELS_CUDA = 1 << 25
# Fastest for the whole cascade on the CPU (bench/backends.py): OpenVINO runs P-Net alone in half the time,
# but the pyramid gives it a new input shape on every call, and re-fitting to it costs more than it saves.
CPU_RUNTIME: CpuRuntime = "torch"


class ProposalNet(nn.Module):
    """P-Net: fully convolutional 12x12-window face classifier and box regressor (stride 2).

    Input: normalised RGB [B, 3, H, W] (H, W >= 12). Output: face probability [B, H', W'] and box offsets
    [B, 4, H', W'] (x1, y1, x2, y2 as fractions of the window side), H' = (ceil((H - 2) / 2) - 4).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.act1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.act2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.act3 = nn.PReLU(32)
        self.face = nn.Conv2d(32, 2, 1)  # logits (not a face, face)
        self.box = nn.Conv2d(32, 4, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.act3(self.conv3(self.act2(self.conv2(x))))
        return torch.softmax(self.face(x), dim=1)[:, 1], self.box(x)


class RefineNet(nn.Module):
    """R-Net: 24x24 crops [K, 3, 24, 24] -> face probability [K] and box offsets [K, 4]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.act1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.act2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.act3 = nn.PReLU(64)
        self.fc = nn.Linear(64 * 3 * 3, 128)  # input flattened channel-major (C, H, W)
        self.act4 = nn.PReLU(128)
        self.face = nn.Linear(128, 2)
        self.box = nn.Linear(128, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = self.act4(self.fc(self.act3(self.conv3(x)).flatten(1)))
        return torch.softmax(self.face(x), dim=1)[:, 1], self.box(x)


class OutputNet(nn.Module):
    """O-Net: 48x48 crops [K, 3, 48, 48] -> face probability [K], box offsets [K, 4] and landmarks [K, 5, 2]
    (left eye, right eye, nose, left and right mouth corner; x, y as fractions of the crop)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.act1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.act2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.act3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.act4 = nn.PReLU(128)
        self.fc = nn.Linear(128 * 3 * 3, 256)  # input flattened channel-major (C, H, W)
        self.act5 = nn.PReLU(256)
        self.face = nn.Linear(256, 2)
        self.box = nn.Linear(256, 4)
        self.landmarks = nn.Linear(256, 10)  # x0, y0, x1, y1, ... x4, y4

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = self.pool3(self.act3(self.conv3(x)))
        x = self.act5(self.fc(self.act4(self.conv4(x)).flatten(1)))
        return torch.softmax(self.face(x), dim=1)[:, 1], self.box(x), self.landmarks(x).reshape(-1, 5, 2)


class MtcnnNets(nn.Module):
    """The three networks; state_dict() keys are those of stages/infer/weights/mtcnn.pt prefixed pnet., rnet., onet."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet = ProposalNet()
        self.rnet = RefineNet()
        self.onet = OutputNet()


def load_nets(weights: str | Path | None = None, device: torch.device | str = "cpu") -> MtcnnNets:
    """The networks with converted weights ({"pnet": state_dict, "rnet": ..., "onet": ...}), eval mode, on device."""
    state = torch.load(weights or DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    nets = MtcnnNets()
    for name in ("pnet", "rnet", "onet"):
        getattr(nets, name).load_state_dict(state[name], strict=True)
    # NHWC: several times faster on the CPU for these small convolutions and, above all, their ceil-mode max
    # pools; facenet-pytorch's inputs are NHWC too (views of HxWx3 frames), so the arithmetic is the same.
    return nets.eval().to(device, memory_format=torch.channels_last)


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """The pyramid's scales, largest first: 12 / min_face_size * factor^k while min(h, w) * scale >= 12.

    Accumulated by repeated multiplication in Python floats, as facenet-pytorch does, so the level sizes
    int(h * s + 1) come out the same."""
    scale = PNET_WINDOW / min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= PNET_WINDOW:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _offsets_to_boxes(boxes: Tensor, offsets: Tensor, plus_one: bool) -> Tensor:
    """Boxes [N, 4] moved by regression offsets [N, 4] (fractions of the width and height; MATLAB's
    inclusive size w = x2 - x1 + 1 after P-Net's first step, plain x2 - x1 for P-Net)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    if plus_one:
        w, h = w + 1, h + 1
    return boxes + offsets * torch.stack((w, h, w, h), dim=1)


def _square(boxes: Tensor) -> Tensor:
    """Boxes [N, 4] grown to squares of side max(w, h) around the same centre."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack((x1, y1, x1 + side, y1 + side), dim=1)


def min_overlap(a: Tensor, b: Tensor) -> Tensor:
    """[N, M] intersection over the smaller of the two areas, with MATLAB's inclusive pixel sizes (x2 - x1 + 1)."""
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (high - low + 1).clamp(min=0).prod(dim=-1)
    return inter / torch.minimum(area_a[:, None], area_b[None, :])


def grouped_nms(
    boxes: Tensor,
    scores: Tensor,
    groups: Tensor,
    threshold: float,
    overlap: Callable[[Tensor, Tensor], Tensor] = box_iou_torch,
    block: int = 1024,
) -> Tensor:
    """Indices kept by greedy NMS, highest score first: a box is dropped when its overlap with a kept box of its own
    group and a higher score (ties: input order) is above `threshold`.

    With the default IoU this is pipeline.boxes.batched_nms_torch (torchvision's semantics), built from the same
    pieces, but it walks the boxes in score order `block` at a time so that memory stays O(block * (block + kept))
    instead of O(N^2): P-Net can propose thousands of windows on a large frame or batch.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b, g = boxes[order].float(), groups[order]
    kept: list[Tensor] = []
    kept_boxes, kept_groups = b[:0], g[:0]
    for start in range(0, len(b), block):
        bb, gg = b[start : start + block], g[start : start + block]
        alive = torch.ones(len(bb), dtype=torch.bool, device=b.device)
        if len(kept_boxes):  # boxes already kept are final: whatever they suppress is out
            alive = ~((overlap(kept_boxes, bb) > threshold) & (kept_groups[:, None] == gg[None, :])).any(dim=0)
        suppresses = torch.triu((overlap(bb, bb) > threshold) & (gg[:, None] == gg[None, :]), diagonal=1)
        keep = greedy_keep_torch(suppresses & alive[:, None]) & alive  # a dead box suppresses nothing
        kept.append(torch.nonzero(keep).squeeze(1) + start)
        kept_boxes, kept_groups = torch.cat((kept_boxes, bb[keep])), torch.cat((kept_groups, gg[keep]))
    return order[torch.cat(kept)]


class _IntegralImages:
    """Integral images of a list of frames of any sizes, in one flat integer buffer, for area-averaged crops.

    Frame i is stored as [H + 1, W + 1, 3] from base[i]: S[y, x, c] = sum of channel c over pixels [0, y) x [0, x).
    int32 while the largest frame's sum fits (up to 8.4 Mpixel), int64 beyond.
    """

    def __init__(self, frames: list[Tensor]) -> None:
        """frames: uint8 [H, W, 3] each."""
        device = frames[0].device
        sizes = [(f.shape[0] + 1) * (f.shape[1] + 1) * 3 for f in frames]
        largest = max(f.shape[0] * f.shape[1] for f in frames)
        dtype = torch.int32 if largest * 255 < 2**31 else torch.int64
        self.flat = torch.zeros(sum(sizes), dtype=dtype, device=device)
        base = 0
        bases, rows = [], []
        for f, size in zip(frames, sizes):
            h, w = f.shape[:2]
            table = self.flat[base : base + size].view(h + 1, w + 1, 3)
            table[1:, 1:] = f
            table.cumsum_(0)
            table.cumsum_(1)
            bases.append(base)
            rows.append((w + 1) * 3)
            base += size
        self.base = torch.tensor(bases, dtype=torch.int64, device=device)
        self.row = torch.tensor(rows, dtype=torch.int64, device=device)

    def crops(
        self, image: Tensor, x0: Tensor, y0: Tensor, x1: Tensor, y1: Tensor, size: int, channels: tuple[int, ...] = (0, 1, 2)
    ) -> Tensor:
        """Area-averaged crops [K, 3, size, size] float32 (channels-last memory) of the pixel rectangles
        [y0, y1) x [x0, x1) (int64, non-empty, inside the frame) of frames `image` [K], channels in the order
        `channels`: the same bins and arithmetic as F.interpolate(mode="area") on each crop, output row i
        averaging rows floor(i * h / size) .. ceil((i + 1) * h / size) - 1 of the crop, the integer sum
        divided by the bin's rows and then its columns."""
        dev = x0.device
        i = torch.arange(size, dtype=torch.int64, device=dev)
        h, w = (y1 - y0)[:, None], (x1 - x0)[:, None]
        ys = y0[:, None] + torch.div(i * h, size, rounding_mode="floor")  # [K, S]
        ye = y0[:, None] - torch.div(-(i + 1) * h, size, rounding_mode="floor")  # ceil
        xs = x0[:, None] + torch.div(i * w, size, rounding_mode="floor")
        xe = x0[:, None] - torch.div(-(i + 1) * w, size, rounding_mode="floor")
        start = self.base[image][:, None, None, None] + torch.tensor(channels, dtype=torch.int64, device=dev)  # [K, 1, 1, 3]
        row = self.row[image][:, None, None, None]

        def at(y: Tensor, x: Tensor) -> Tensor:
            return self.flat[start + y[:, :, None, None] * row + x[:, None, :, None] * 3]

        total = at(ye, xe) - at(ys, xe) - at(ye, xs) + at(ys, xs)  # [K, S, S, 3]
        rows = (ye - ys).to(torch.float32)[:, :, None, None]
        cols = (xe - xs).to(torch.float32)[:, None, :, None]
        return (total.to(torch.float32) / rows / cols).permute(0, 3, 1, 2)  # NCHW view of NHWC memory


def _normalise(x: Tensor) -> Tensor:
    return (x - PIXEL_MEAN) * PIXEL_SCALE


class Mtcnn:
    """MTCNN face detector on one device: uint8 BGR frames in, boxes, scores and five landmarks per face out."""

    def __init__(self, options: MtcnnOptions, device: torch.device, weights: str | None = None) -> None:
        """weights: a file made by `python -m tools.convert_mtcnn` (default: the packaged mtcnn.pt)."""
        self.options = options
        self.device = torch.device(device)
        self.nets = load_nets(weights, self.device)
        # Through the backend layer; P-Net is fully convolutional: its export keeps height and width dynamic.
        self.pnet, self.rnet, self.onet = (
            compile_module(
                getattr(self.nets, name), [torch.zeros(1, 3, size, size)], name=f"mtcnn_{name}", backend=options.backend,
                device=self.device, cpu_default=CPU_RUNTIME, dynamic={0: {2: "height", 3: "width"}} if name == "pnet" else None,
            )
            for name, size in (("pnet", 4 * PNET_WINDOW), ("rnet", RNET_SIZE), ("onet", ONET_SIZE))
        )  # fmt: skip

    def detect_numpy(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """detect() for HxWx3 uint8 BGR numpy frames: per frame boxes [N, 4], scores [N], landmarks [N, 5, 2]
        as float32 numpy arrays."""
        tensors = [torch.from_numpy(np.ascontiguousarray(im)).to(self.device) for im in images]
        return [(b.cpu().numpy(), s.cpu().numpy(), p.cpu().numpy()) for b, s, p in self.detect(tensors)]

    def detect(self, images: list[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Faces in each frame, highest score first.

        images: uint8 [H, W, 3] BGR tensors (sizes may differ), best already on this detector's device (others
        are copied there). Returns per frame (boxes [N, 4] float32 x1, y1, x2, y2 in frame pixels, pixel i
        covering [i, i + 1), not clipped to the frame; scores [N] O-Net face probabilities; landmarks
        [N, 5, 2] float32 x, y of left eye, right eye, nose, left and right mouth corner), N <= max_faces.
        """
        for k, im in enumerate(images):
            if im.dtype != torch.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(f"image {k}: expected a uint8 [H, W, 3] tensor, got {im.dtype} {tuple(im.shape)}")
        with torch.inference_mode():
            return self._detect([im.to(self.device) for im in images])

    # The cascade. Candidates of every frame travel together as rows: `image` holds each row's frame.

    def _detect(self, images: list[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
        o = self.options
        dev = self.device
        n = len(images)
        if not n:
            return []
        boxes, scores, image = self._proposals(images)
        landmarks = torch.zeros((0, 5, 2), device=dev)
        if len(boxes):
            integral = _IntegralImages(images)  # BGR; crops read it as RGB
            sizes = torch.tensor([im.shape[:2] for im in images], dtype=torch.int64, device=dev).reshape(-1, 2)
            # R-Net
            boxes, image, crops = self._crops(integral, sizes, boxes, image, RNET_SIZE)
            prob, offsets = self.rnet(_normalise(crops))
            keep = prob > o.thresholds[1]
            boxes, scores, image, offsets = boxes[keep], prob[keep], image[keep], offsets[keep]
            keep = grouped_nms(boxes, scores, image, o.nms_thresholds[2])
            boxes = _square(_offsets_to_boxes(boxes[keep], offsets[keep], plus_one=True))
            scores, image = scores[keep], image[keep]
        if len(boxes):
            # O-Net
            boxes, image, crops = self._crops(integral, sizes, boxes, image, ONET_SIZE)
            prob, offsets, marks = self.onet(_normalise(crops))
            keep = prob > o.thresholds[2]
            boxes, scores, image, offsets, marks = boxes[keep], prob[keep], image[keep], offsets[keep], marks[keep]
            # Landmarks as fractions of the crop, whose left edge is x1 - 1 and width x2 - x1 + 1.
            wh = (boxes[:, 2:] - boxes[:, :2] + 1)[:, None, :]
            landmarks = wh * marks + boxes[:, None, :2] - 1
            boxes = _offsets_to_boxes(boxes, offsets, plus_one=True)
            keep = grouped_nms(boxes, scores, image, o.nms_thresholds[3], overlap=min_overlap)
            boxes, scores, image, landmarks = boxes[keep], scores[keep], image[keep], landmarks[keep]
        # To the pixel-edge convention (see the module docstring), then per frame, best first.
        boxes = boxes - torch.tensor([1.0, 1.0, 0.0, 0.0], device=dev)
        keep = scores >= o.score_threshold
        boxes, scores, image, landmarks = boxes[keep], scores[keep], image[keep], landmarks[keep]
        order = torch.sort(scores, descending=True, stable=True).indices
        order = order[torch.sort(image[order], stable=True).indices]
        counts = torch.bincount(image, minlength=n).tolist() if len(image) else [0] * n
        out = []
        for b, s, p in zip(boxes[order].split(counts), scores[order].split(counts), landmarks[order].split(counts)):
            out.append((b[: o.max_faces].float(), s[: o.max_faces].float(), p[: o.max_faces].float()))
        return out

    def _proposals(self, images: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """P-Net over each frame's pyramid, frames of one size batched per level: squared boxes [M, 4] (1-based
        inclusive pixel convention), scores [M], frame index [M]."""
        o = self.options
        dev = self.device
        by_size: dict[tuple[int, int], list[int]] = {}
        for k, im in enumerate(images):
            by_size.setdefault((im.shape[0], im.shape[1]), []).append(k)
        # On the CPU a batch bigger than the caches is slower per frame than one frame at a time.
        budget = PNET_BATCH_PIXELS_CUDA if dev.type == "cuda" else PNET_BATCH_PIXELS_CPU
        found: list[Tensor] = []  # rows x1, y1, x2, y2, score, dx1, dy1, dx2, dy2
        frames: list[Tensor] = []
        for (h, w), same_size in by_size.items():
            per_call = max(1, budget // (h * w))
            for first in range(0, len(same_size), per_call):
                members = same_size[first : first + per_call]
                # RGB, NCHW, contiguous: area resampling is faster on it than on NHWC, with the same results.
                batch = torch.stack([images[k] for k in members]).permute(0, 3, 1, 2)[:, [2, 1, 0]].float().contiguous()
                index = torch.tensor(members, dtype=torch.int64, device=dev)
                for scale in pyramid_scales(h, w, o.min_face_size, o.scale_factor):
                    level = F.interpolate(batch, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
                    prob, offsets = self.pnet(_normalise(level).contiguous(memory_format=torch.channels_last))
                    hit = prob >= o.thresholds[0]
                    where = hit.nonzero()  # [M, 3] (member, row, column)
                    if not len(where):
                        continue
                    cell = where[:, 1:].to(prob.dtype).flip(1)  # (column, row)
                    top_left = ((PNET_STRIDE * cell + 1) / scale).floor()
                    bottom_right = ((PNET_STRIDE * cell + PNET_WINDOW) / scale).floor()
                    rows = torch.cat((top_left, bottom_right, prob[hit][:, None], offsets.permute(0, 2, 3, 1)[hit]), dim=1)
                    member = index[where[:, 0]]
                    keep = grouped_nms(rows[:, :4], rows[:, 4], member, o.nms_thresholds[0])
                    found.append(rows[keep])
                    frames.append(member[keep])
        if not found:
            return torch.zeros((0, 4), device=dev), torch.zeros(0, device=dev), torch.zeros(0, dtype=torch.int64, device=dev)
        rows = torch.cat(found)
        image = torch.cat(frames)
        keep = grouped_nms(rows[:, :4], rows[:, 4], image, o.nms_thresholds[1])
        rows, image = rows[keep], image[keep]
        return _square(_offsets_to_boxes(rows[:, :4], rows[:, 5:], plus_one=False)), rows[:, 4], image

    def _crops(
        self, integral: _IntegralImages, sizes: Tensor, boxes: Tensor, image: Tensor, size: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Crops [K, 3, size, size] (0-255) of the boxes: pixels trunc(x1) - 1 .. trunc(x2) - 1 (1-based inclusive
        box), clipped to the frame; boxes with nothing inside the frame are dropped (returned boxes, image match)."""
        t = boxes.trunc().to(torch.int64)
        hw = sizes[image]
        x0 = t[:, 0].clamp(min=1) - 1
        y0 = t[:, 1].clamp(min=1) - 1
        x1 = torch.minimum(t[:, 2], hw[:, 1])
        y1 = torch.minimum(t[:, 3], hw[:, 0])
        ok = (x1 > x0) & (y1 > y0)
        if not bool(ok.all()):
            boxes, image, x0, y0, x1, y1 = boxes[ok], image[ok], x0[ok], y0[ok], x1[ok], y1[ok]
        return boxes, image, integral.crops(image, x0, y0, x1, y1, size, channels=(2, 1, 0))
