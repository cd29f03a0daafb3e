"""What the training scripts share: the cosine learning-rate schedule, weights written so that the same training
gives the same file bytes (the sha256 the provenance files quote), and a digest of the tensors themselves."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import torch


def cosine_schedule(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate falls from its start to 0 along half a cosine over `total_steps` steps."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))


def save_state_dict(state_dict: dict[str, torch.Tensor], out: Path) -> str:
    """Writes `state_dict` to `out` and returns the file's sha256. Through a buffer: torch.save names the archive
    after the file, so the bytes would otherwise depend on the path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    out.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and bytes of all tensors: equal for two runs that trained the same weights."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous().flatten()
        h.update(name.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
