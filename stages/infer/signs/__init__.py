"""Traffic signs: candidate regions found by colour and shape, classified by a small CNN into SIGN_CLASSES or
background (stages/infer/signs/finder.py). The classes and their drawing rules are in classes.py; the network in
net.py; tools/train_signs.py makes the training data and trains it.
"""

from __future__ import annotations

from pathlib import Path

from stages.infer.signs.classes import SIGN_CLASSES

__all__ = ["CROP", "DEFAULT_WEIGHTS", "SIGN_CLASSES"]

CROP = 32  # classifier input: CROP x CROP RGB crops of a candidate box padded by PAD on each side
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "signs.pt"
