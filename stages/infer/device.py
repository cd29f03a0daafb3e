"""Where and in what precision the CNN detectors run: CUDA in fp16 when present, the CPU in fp32 otherwise."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterator

import torch

from stages.infer.options import Precision

DeviceSpec = str  # "auto", "cpu", "cuda", "cuda:1"


def cpu_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may really use: its affinity mask, capped by a cgroup v2 CPU quota.

    os.cpu_count() is the whole host's count: in a container or a Kubernetes pod limited to 2 CPUs on a
    64-core node it would give the models 64 threads, which the quota then throttles.
    """
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the affinity mask is the limit
    return max(1, n)


def select_device(spec: DeviceSpec) -> torch.device:
    """`auto` is the first CUDA device when one is present, else the CPU; names are checked."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ValueError(f"device {spec!r}: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} asked for, but no CUDA device is available (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise ValueError(f"device {spec!r}: only cpu and cuda are supported")
    return device


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    """fp16 on CUDA and fp32 on the CPU by default. bf16 on the CPU is opt-in: it is faster where the
    CPU has bf16 instructions but moves raw scores by up to 0.1 (bench/detect.py measures it)."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 needs a CUDA device; on the CPU use fp32 or bf16")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed precision for the network, fp32 where autocast keeps it (sigmoid, box decoding)."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
