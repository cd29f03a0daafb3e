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
from typing import Any

import numpy as np

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "motion_lstm.pt"

SEQ_FEATURES = 13
CTX_FEATURES = 7
_CLIP = 10.0  # no normalised feature beyond +-10: a glitch box must not blow up the LSTM state


def _xywh(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    w = np.maximum(boxes[..., 2] - boxes[..., 0], 1e-3)
    h = np.maximum(boxes[..., 3] - boxes[..., 1], 1e-3)
    return boxes[..., 0] + w / 2, boxes[..., 1] + h / 2, w, h


def encode(boxes: np.ndarray, ages: np.ndarray, valid: np.ndarray, history: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    return np.stack([(cx - ref[:, 0]) / ref[:, 3], (cy - ref[:, 1]) / ref[:, 3], np.log(w / ref[:, 2]), np.log(h / ref[:, 3])], 1).astype(np.float32)


class MotionPredictor:
    """Batched box prediction for a tracker: all tracks in one forward pass, through the backend layer (ONNX
    Runtime, one thread, on a CPU: the batch is far too small to split; eager torch on a GPU)."""

    history: int

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", backend: str = "auto") -> None:
        from stages.infer.backend import compile_cached, file_key, resolve_backend

        weights = Path(weights) if weights else DEFAULT_WEIGHTS
        device = str(device)
        chosen = resolve_backend(backend, device, "onnxruntime")
        if chosen == "cuda":  # fp16 would move the boxes; a batch of tracks gains nothing from CUDA graphs
            chosen = "torch"
        hp: dict = {}

        def build() -> tuple[Any, list[Any]]:
            import torch

            from stages.track.motion_net import load_lstm

            model, hp_ = load_lstm(weights)
            hp.update(hp_)
            k = int(hp_["history"])
            return model, [torch.zeros(4, k, SEQ_FEATURES), torch.zeros(4, CTX_FEATURES)]

        key = file_key([weights, Path(__file__).resolve().parent / "motion_net.py"], "motion_lstm")
        self.net = compile_cached(build, key=key, name="motion_lstm", backend=chosen, device=device,
                                  cpu_default="onnxruntime", threads=1, channels_last=False)  # fmt: skip
        self.backend = self.net.backend
        specs = getattr(self.net, "input_specs", None)
        if specs is not None:  # an export: its window length is the model's
            self.history = int(specs[0].shape[1])
        else:
            if not hp:
                build()
            self.history = int(hp["history"])
        self.device = device
        self.spread: np.ndarray | None = None  # [N] pixels: the last call's centre standard deviation, if the model has one

    def predict(self, boxes: np.ndarray, ages: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """boxes [N, K, 4] xyxy (oldest first), ages [N, K] frames before the target, valid [N, K] -> [N, 4] xyxy.

        A track with a single observation keeps its box: one box says nothing about motion.
        """
        n = len(boxes)
        if n == 0:
            return np.zeros((0, 4), np.float32)
        seq, ctx, ref, n_valid = encode(boxes, ages, valid, self.history)
        if self.backend in ("onnxruntime", "openvino"):
            out = np.asarray(self.net(seq, ctx)[0], np.float32)
        else:
            import torch

            with torch.inference_mode():
                (res,) = self.net(torch.from_numpy(seq).to(self.device), torch.from_numpy(ctx).to(self.device))
            out = res.float().cpu().numpy()
        if out.shape[1] == 8:  # a model with a predictive uncertainty: keep the centre's spread
            self.spread = np.exp(0.5 * out[:, 4:6].clip(-20, 20)).max(1) * ref[:, 3]
            out = out[:, :4]
        else:
            self.spread = None
        out[n_valid <= 1] = 0.0
        return decode(out, ref)
