"""Motion LSTM: predicts each track's box at the target frame from its last K observed boxes.

Everything the model sees is relative to the track's newest box: centre offsets in units of its height,
log size ratios, and the observations' ages in frames. So the model is invariant to translation and to the
image and object scale, and the ages tell it the frame spacing (occlusion gaps, camera rate).
The output is a per-frame rate times the number of frames to extrapolate plus a residual, on top of the
track's mean velocity over the window: constant-velocity motion is the default the model corrects, and gaps
extrapolate further by construction rather than by what the network learnt of large ages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "motion_lstm.pt"

SEQ_FEATURES = 13
CTX_FEATURES = 7
_CLIP = 10.0  # no normalised feature beyond +-10: a glitch box must not blow up the LSTM state


def _xywh(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    w = np.maximum(boxes[..., 2] - boxes[..., 0], 1e-3)
    h = np.maximum(boxes[..., 3] - boxes[..., 1], 1e-3)
    return boxes[..., 0] + w / 2, boxes[..., 1] + h / 2, w, h


def encode(
    boxes: np.ndarray, ages: np.ndarray, valid: np.ndarray, history: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normalised model inputs of N tracks: seq [N, history, 13], ctx [N, 7], ref [N, 4], n_valid [N].

    ref holds the newest box's (cx, cy, w, h) in pixels: `decode` turns model outputs back into boxes with it.
    Shared by inference and training so both see exactly the same features.
    """
    boxes = np.asarray(boxes, np.float64)
    n = len(boxes)
    boxes = boxes.reshape(n, -1, 4)
    ages = np.asarray(ages, np.float64).reshape(n, -1)
    valid = np.asarray(valid, bool).reshape(n, -1)
    k = boxes.shape[1]
    if k > history:  # the model window: the newest `history` entries
        boxes, ages, valid = boxes[:, -history:], ages[:, -history:], valid[:, -history:]
    elif k < history:
        pad = history - k
        boxes = np.concatenate([np.zeros((n, pad, 4)), boxes], 1)
        ages = np.concatenate([np.ones((n, pad)), ages], 1)
        valid = np.concatenate([np.zeros((n, pad), bool), valid], 1)
    ages = np.where(valid, np.maximum(ages, 1.0), 1.0)
    cx, cy, w, h = _xywh(boxes)
    rcx, rcy, rw, rh = cx[:, -1:], cy[:, -1:], w[:, -1:], h[:, -1:]
    dx = (cx - rcx) / rh
    dy = (cy - rcy) / rh
    lw = np.log(w / rw)
    lh = np.log(h / rh)
    pos = np.stack([dx, dy, lw, lh], -1)  # [N, K, 4]

    # The previous valid observation of each entry (forward fill), for per-frame rates between observations.
    idx = np.where(valid, np.arange(history)[None, :], -1)
    last = np.maximum.accumulate(idx, 1)
    prev = np.concatenate([np.full((n, 1), -1), last[:, :-1]], 1)
    has_prev = valid & (prev >= 0)
    prev_c = np.maximum(prev, 0)
    rows = np.arange(n)[:, None]
    dt = np.where(has_prev, ages[rows, prev_c] - ages, 1.0)
    dt = np.maximum(dt, 1.0)
    rate = np.where(has_prev[..., None], (pos - pos[rows, prev_c]) / dt[..., None], 0.0)

    seq = np.concatenate(
        [
            valid[..., None],
            has_prev[..., None],
            pos,
            np.log(ages)[..., None],
            np.minimum(ages, 100.0)[..., None] / 10,
            np.log(dt)[..., None],
            rate,
        ],
        -1,
    )
    seq = np.where(valid[..., None], np.clip(seq, -_CLIP, _CLIP), 0.0)

    # Window-mean rates (oldest valid -> newest): the constant-velocity guess the output is relative to.
    n_valid = valid.sum(1)
    first = np.argmax(valid, 1)
    r = np.arange(n)
    span = np.maximum(ages[r, first] - ages[:, -1], 1.0)
    mean_rate = np.where((n_valid > 1)[:, None], (pos[:, -1] - pos[r, first]) / span[:, None], 0.0)
    target_age = ages[:, -1]
    ctx = np.concatenate(
        [
            np.log(target_age)[:, None],
            np.minimum(target_age, 100.0)[:, None] / 10,
            (n_valid / history)[:, None],
            np.clip(mean_rate, -_CLIP, _CLIP),
        ],
        1,
    )
    ref = np.concatenate([rcx, rcy, rw, rh], 1)
    return seq.astype(np.float32), ctx.astype(np.float32), ref, n_valid


def decode(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Normalised (dx, dy, log w ratio, log h ratio) [N, 4] + ref (cx, cy, w, h) -> xyxy [N, 4] float32."""
    out = np.asarray(out, np.float64)
    cx = ref[:, 0] + out[:, 0] * ref[:, 3]
    cy = ref[:, 1] + out[:, 1] * ref[:, 3]
    w = ref[:, 2] * np.exp(np.clip(out[:, 2], -3, 3))
    h = ref[:, 3] * np.exp(np.clip(out[:, 3], -3, 3))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)


def target_offsets(target: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The true box [N, 4] xyxy in the normalised output space of `decode` (for training and tests)."""
    cx, cy, w, h = _xywh(np.asarray(target, np.float64))
    return np.stack(
        [(cx - ref[:, 0]) / ref[:, 3], (cy - ref[:, 1]) / ref[:, 3], np.log(w / ref[:, 2]), np.log(h / ref[:, 3])], 1
    ).astype(np.float32)


class MotionLSTM(nn.Module):
    """LSTM over the normalised window + MLP head -> normalised offsets of the box at the target frame."""

    def __init__(self, hidden: int = 64, layers: int = 1) -> None:
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.lstm = nn.LSTM(SEQ_FEATURES, hidden, layers, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden + CTX_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, 8))
        # Start as the constant-velocity guess: zero rate corrections and residuals.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, seq: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """seq [N, K, 13], ctx [N, 7] -> [N, 4] (dx, dy, log w ratio, log h ratio) relative to the newest box."""
        _, (h_n, _) = self.lstm(seq)
        out = self.head(torch.cat([h_n[-1], ctx], 1))
        age = torch.exp(ctx[:, :1])  # frames from the newest observation to the target
        base = torch.cat([ctx[:, 3:5], torch.zeros_like(ctx[:, 5:7])], 1)  # size: no trend by default
        # Sizes are noisy: only the positions extrapolate the window's mean rate.
        return age * (base + out[:, :4]) + out[:, 4:]


class MotionPredictor:
    """Batched box prediction for a tracker: all tracks in one forward pass."""

    history: int

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        ckpt = torch.load(Path(weights) if weights else DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
        hp = ckpt["hparams"]
        self.history = int(hp["history"])
        self.device = torch.device(device)
        self.model = MotionLSTM(int(hp["hidden"]), int(hp["layers"]))
        self.model.load_state_dict(ckpt["state_dict"])
        self.model.to(self.device).eval()

    def predict(self, boxes: np.ndarray, ages: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """boxes [N, K, 4] xyxy (oldest first), ages [N, K] frames before the target, valid [N, K] -> [N, 4] xyxy.

        A track with a single observation keeps its box: one box says nothing about motion.
        """
        n = len(boxes)
        if n == 0:
            return np.zeros((0, 4), np.float32)
        seq, ctx, ref, n_valid = encode(boxes, ages, valid, self.history)
        # One intra-op thread on CPU: this batch is far too small to split, and on a busy machine waiting
        # for a descheduled worker thread costs ~100x the whole forward (measured: 170 ms vs 1.3 ms).
        threads = torch.get_num_threads() if self.device.type == "cpu" else 1
        if threads != 1:
            torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                out = self.model(torch.from_numpy(seq).to(self.device), torch.from_numpy(ctx).to(self.device))
        finally:
            if threads != 1:
                torch.set_num_threads(threads)
        out = out.float().cpu().numpy()
        out[n_valid <= 1] = 0.0
        return decode(out, ref)
