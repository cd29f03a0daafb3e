"""Secondary models: run on crops of the primary detections, batched over the whole batch of frames.

A secondary model kind (face embedder, sign classifier, posture model) is a `SecondaryModel`
subclass that declares its options and the extra Detections columns it writes: a built-in one is a module
of stages/infer/secondaries/, a user's own is named `package.module:Class`. `SecondaryRunner`
picks, for each configured model, the detections it applies to across ALL frames of a batch, cuts
them out of the frames on the device in one bilinear sampling pass per frame size, runs the model once, and writes
its columns into every frame's Detections as `NAME.COLUMN`.

Columns carry the config's `name` as prefix: names are unique within a stage, so two models can
never write the same column, not even two of one kind (two face models both declaring `identity`),
and a reader of the results sees which model wrote a value. Names cannot contain a dot, so the
prefix splits off unambiguously.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.categories import category_id
from pipeline.detections import Detections
from pipeline.protocol import Frame
from stages.infer.secondary_model import OUTCOMES, OnCount, SecondaryConfig, SecondaryModel, _unique_names, resolve_secondary


@dataclass
class _Entry:
    config: SecondaryConfig
    model: SecondaryModel
    class_ids: np.ndarray
    crop_size: tuple[int, int]
    columns: dict[str, np.dtype]  # declared column -> dtype


@dataclass
class _Pick:
    """The detections one model runs on in this batch, in batch order."""

    frame: np.ndarray  # [K] index into the batch
    row: np.ndarray  # [K] row of that frame's Detections
    boxes: np.ndarray  # [K, 4] float32 x1, y1, x2, y2
    skipped: dict[str, int]


@dataclass
class _Stack:
    pixels: Tensor  # float32 [1, 3, n*H, W]: the frames of one size, one above the other, BGR 0-255
    slot: dict[int, int]  # batch index -> position in the stack


class SecondaryRunner:
    """Runs the configured secondary models on the detections of a batch of frames."""

    def __init__(self, configs: Sequence[SecondaryConfig], device: torch.device, on_count: OnCount | None = None) -> None:
        _unique_names(list(configs))
        self.device = device
        self.on_count = on_count
        self._entries: list[_Entry] = []
        self._buffers: dict[tuple[int, ...], Tensor] = {}  # float frame stacks, reused across batches
        for cfg in configs:
            cls = resolve_secondary(cfg.kind)
            model = cls(cls.Options.model_validate(cfg.options), device)
            size = tuple(getattr(model, "crop_size", ()))
            if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
                raise ValueError(f"secondary {cfg.name!r}: crop_size must be (width, height) in pixels, got {size!r}")
            class_ids = np.array([category_id(c) for c in cfg.classes], np.int32)
            columns = {c: np.dtype(d) for c, d in cls.columns.items()}
            self._entries.append(_Entry(cfg, model, class_ids, size, columns))  # type: ignore[arg-type]

    @property
    def models(self) -> dict[str, SecondaryModel]:
        return {e.config.name: e.model for e in self._entries}

    @property
    def columns(self) -> dict[str, np.dtype]:
        """Every extra column the runner writes, as NAME.COLUMN -> dtype."""
        return {f"{e.config.name}.{c}": d for e in self._entries for c, d in e.columns.items()}

    def apply(self, frames: list[Frame]) -> None:
        """Adds every model's columns to each frame's Detections (fill values where a model did not run)."""
        if not self._entries:
            return
        picks = [_select(e, frames) for e in self._entries]
        extra = [dict(f.detections.extra) for f in frames]
        with torch.inference_mode():
            stacks = self._upload(frames, {int(i) for p in picks for i in p.frame})
            results = [self._run(e, p, frames, stacks) for e, p in zip(self._entries, picks)]
        for e, p, values in zip(self._entries, picks, results):
            for col, dtype in e.columns.items():
                fill = np.nan if dtype.kind == "f" else -1
                for fi, f in enumerate(frames):
                    out = np.full(len(f.detections), fill, dtype)
                    mine = p.frame == fi
                    out[p.row[mine]] = values[col][mine]
                    extra[fi][f"{e.config.name}.{col}"] = out
        for f, ex in zip(frames, extra):
            d = f.detections
            # A new object, not an update in place: the motion gate hands one Detections to several frames.
            f.detections = Detections(d.boxes, d.scores, d.class_ids, d.track_ids, ex)
        if self.on_count is not None:  # only once every model ran: a batch that raises is retried
            for e, p in zip(self._entries, picks):
                self.on_count(e.config.name, "run", len(p.frame))
                for outcome in OUTCOMES[1:]:
                    self.on_count(e.config.name, outcome, p.skipped[outcome])

    def _upload(self, frames: list[Frame], needed: set[int]) -> dict[tuple[int, ...], _Stack]:
        """The frames crops are taken from, uploaded as uint8 (a quarter of float's bytes), one stack per size."""
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i in sorted(needed):
            img = frames[i].image
            if img is None:
                raise ValueError(f"frame {frames[i].stream}#{frames[i].seq} carries no pixels (forward_pixels is off upstream)")
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"secondary models take 3-channel frames, got shape {img.shape}")
            by_size[img.shape].append(i)
        stacks = {}
        for shape, indices in by_size.items():
            h, w, _ = shape
            batch = torch.from_numpy(np.stack([frames[i].image for i in indices]))  # type: ignore[misc]
            if self.device.type == "cuda":
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=True)
            # The float copy goes into a buffer kept per frame size: a fresh one of this size is
            # mmapped and page-faulted on every batch, which on the CPU costs more than the copy itself.
            rows = len(indices) * h
            buf = self._buffers.get(shape)
            if buf is None or buf.shape[1] < rows:
                buf = self._buffers[shape] = torch.empty((1, rows, w, 3), dtype=torch.float32, device=self.device)
            tall = buf[:, :rows]
            tall.copy_(batch.reshape(1, rows, w, 3))
            # One tall image instead of a batch: grid_sample then cuts every box of every frame in one
            # call, without padding the per-frame box counts to a common size.
            stacks[shape] = _Stack(tall.permute(0, 3, 1, 2), {fi: s for s, fi in enumerate(indices)})
        return stacks

    def _run(self, e: _Entry, p: _Pick, frames: list[Frame], stacks: dict[tuple[int, ...], _Stack]) -> dict[str, np.ndarray]:
        k = len(p.frame)
        if k == 0:
            return {c: np.zeros(0, d) for c, d in e.columns.items()}
        by_stack: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for j, fi in enumerate(p.frame.tolist()):
            by_stack[frames[fi].image.shape].append(j)  # type: ignore[union-attr]
        parts = []
        for shape, js in by_stack.items():
            s = stacks[shape]
            slots = torch.tensor([s.slot[int(p.frame[j])] for j in js], device=self.device)
            boxes = torch.from_numpy(p.boxes[js]).to(self.device)
            parts.append((js, crop_boxes(s.pixels, shape[0], slots, boxes, e.crop_size, e.config.padding)))
        if len(parts) == 1:
            crops = parts[0][1]  # one frame size (the usual case): already in batch order
        else:
            crops = torch.empty((k, 3, e.crop_size[1], e.crop_size[0]), dtype=torch.float32, device=self.device)
            for js, part in parts:
                crops[torch.tensor(js, device=self.device)] = part
        # BGR -> RGB and [0, 1] on the crops, not the frames: far fewer pixels, and sampling is per channel.
        crops = crops[:, [2, 1, 0]].mul_(1 / 255)
        out = e.model.run(crops)
        values = {}
        for col, dtype in e.columns.items():
            t = out.get(col) if isinstance(out, dict) else None
            if not isinstance(t, Tensor) or t.shape != (k,):
                got = "missing" if t is None else f"shape {tuple(getattr(t, 'shape', ()))}"
                raise ValueError(f"secondary {e.config.name!r}: run() must return column {col!r} as a tensor [{k}], got {got}")
            values[col] = t.detach().cpu().numpy().astype(dtype, copy=False)
        return values


def _select(e: _Entry, frames: list[Frame]) -> _Pick:
    """The detections of the model's classes that pass its filters, the highest scores first up to max_crops."""
    c = e.config
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # (frame, row, score, box) per frame
    skipped = {o: 0 for o in OUTCOMES[1:]}
    for fi, f in enumerate(frames):
        d = f.detections
        mine = np.isin(d.class_ids, e.class_ids)
        if not mine.any():
            continue
        score_ok = d.scores >= c.min_score
        size_ok = (d.boxes[:, 2:] - d.boxes[:, :2]).min(axis=1) >= c.min_size
        skipped["min_score"] += int((mine & ~score_ok).sum())
        skipped["min_size"] += int((mine & score_ok & ~size_ok).sum())
        r = np.flatnonzero(mine & score_ok & size_ok)
        parts.append((np.full(len(r), fi), r, d.scores[r], d.boxes[r]))
    if not parts:
        return _Pick(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.float32), skipped)
    frame, row, scores, boxes = (np.concatenate(x) for x in zip(*parts))
    if len(frame) > c.max_crops:
        keep = np.sort(np.argsort(-scores, kind="stable")[: c.max_crops])  # ties: batch order; result in batch order
        skipped["max_crops"] = len(frame) - len(keep)
        frame, row, boxes = frame[keep], row[keep], boxes[keep]
    return _Pick(frame, row, boxes, skipped)


def crop_boxes(pixels: Tensor, height: int, slots: Tensor, boxes: Tensor, size: tuple[int, int], padding: float) -> Tensor:
    """Bilinear crops [K, C, h, w] of `boxes` (x1, y1, x2, y2 in frame pixels), box k taken from frame
    `slots[k]` of `pixels` [1, C, n*height, W], frames of `height` rows stacked one above the other.

    Each box gets its own affine map from crop to frame: crop pixel j's centre samples the frame at
    x1 + (j + 0.5) * (x2 - x1) / w, in coordinates where frame pixel i covers [i, i + 1), so the crop's
    edges lie on the (padded) box's edges and the crop's centre on the box's centre.
    """
    w, h = size
    width = pixels.shape[3]
    x1, y1, x2, y2 = boxes.float().unbind(1)
    pad_x, pad_y = (x2 - x1) * padding, (y2 - y1) * padding
    x1, x2, y1, y2 = x1 - pad_x, x2 + pad_x, y1 - pad_y, y2 + pad_y
    cx = torch.arange(w, dtype=torch.float32, device=pixels.device) + 0.5
    cy = torch.arange(h, dtype=torch.float32, device=pixels.device) + 0.5
    # Minus 0.5: positions in pixel-index space (pixel i's centre at i). Clamped to the box's own frame,
    # which replicates its border where padding reaches out of it and keeps every sample off the
    # neighbouring frame of the stack.
    xs = (x1[:, None] + cx * ((x2 - x1) / w)[:, None] - 0.5).clamp(0, width - 1)
    ys = (y1[:, None] + cy * ((y2 - y1) / h)[:, None] - 0.5).clamp(0, height - 1) + (slots * height)[:, None]
    # grid_sample's coordinates with align_corners=False: -1 and 1 are the outer edges of the image.
    gx = (2 * xs + 1) / width - 1
    gy = (2 * ys + 1) / pixels.shape[2] - 1
    k = len(boxes)
    grid = torch.stack((gx[:, None, :].expand(k, h, w), gy[:, :, None].expand(k, h, w)), dim=-1)
    out = F.grid_sample(pixels, grid.reshape(1, k * h, w, 2), mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(pixels.shape[1], k, h, w).transpose(0, 1)
