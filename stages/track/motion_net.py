"""The motion LSTM as a torch module: the window of a track's normalised boxes (stages/track/motion_lstm.py
`encode`) -> the box at the target frame, relative to the track's newest box. Used by training
(tools/train_motion.py) and exports; the tracker runs it through the backend layer (MotionPredictor)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stages.track.motion_lstm import CTX_FEATURES, SEQ_FEATURES


class MotionLSTM(nn.Module):
    """LSTM over the normalised window + MLP head -> normalised offsets of the box at the target frame."""

    def __init__(self, hidden: int = 64, layers: int = 1, uncertainty: bool = False) -> None:
        super().__init__()
        self.hidden, self.layers, self.uncertainty = hidden, layers, uncertainty
        self.lstm = nn.LSTM(SEQ_FEATURES, hidden, layers, batch_first=True)
        # 8: rate corrections and residuals; with `uncertainty`, 4 more: the log-variance of each output.
        self.head = nn.Sequential(nn.Linear(hidden + CTX_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, 12 if uncertainty else 8))
        # Start as the constant-velocity guess: zero rate corrections and residuals.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, seq: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """seq [N, K, 13], ctx [N, 7] -> [N, 4] (dx, dy, log w ratio, log h ratio) relative to the newest box;
        with `uncertainty`, [N, 8]: those and the log-variance of each (a Gaussian's, same units)."""
        _, (h_n, _) = self.lstm(seq)
        out = self.head(torch.cat([h_n[-1], ctx], 1))
        age = torch.exp(ctx[:, :1])  # frames from the newest observation to the target
        base = torch.cat([ctx[:, 3:5], torch.zeros_like(ctx[:, 5:7])], 1)  # size: no trend by default
        # Sizes are noisy: only the positions extrapolate the window's mean rate.
        mean = age * (base + out[:, :4]) + out[:, 4:8]
        if not self.uncertainty:
            return mean
        # The spread grows with the frames to extrapolate unless the network says otherwise.
        return torch.cat([mean, out[:, 8:] + 2 * torch.log(age)], 1)


def load_lstm(weights: str | Path) -> tuple[MotionLSTM, dict]:
    """The MotionLSTM of a checkpoint ({hparams, state_dict}) in eval mode, and its hparams."""
    ckpt = torch.load(Path(weights), map_location="cpu", weights_only=True)
    hp = ckpt["hparams"]
    model = MotionLSTM(int(hp["hidden"]), int(hp["layers"]), bool(hp.get("uncertainty", False)))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), hp
