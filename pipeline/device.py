"""Where and in what precision a plugin's models run: CUDA in fp16 when present, the CPU in fp32 otherwise
(a detector measured in bf16 may take bf16 where the CPU computes it natively: `CnnDetector.cpu_bf16_default`).

torch is imported only where a torch object is asked for: on a machine without an NVIDIA driver, `device_name` and
`precision_name` answer without it, so a model on a CPU runtime never loads torch.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

# What a CUDA device needs on Linux before torch can see one: without any of these, `auto` is the CPU.
NVIDIA_DRIVER_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version")

DeviceSpec = str  # "auto", "cpu", "cuda", "cuda:1"

Precision = Literal["auto", "fp32", "fp16", "bf16"]


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


def cuda_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded (and CUDA_VISIBLE_DEVICES does not hide every device)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(os.path.exists(f) for f in NVIDIA_DRIVER_FILES)


def device_name(spec: DeviceSpec) -> str:
    """select_device(spec) as a string ("cpu", "cuda:0"), without torch where no CUDA device can be present."""
    if spec == "cpu" or (spec == "auto" and not cuda_driver_present()):
        return "cpu"
    return str(select_device(spec))


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX): only there is bf16 faster than fp32."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False  # not Linux: no flags to read, so no claim
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_name(precision: Precision, device: str) -> str:
    """resolve_precision's answer by name (fp32, fp16, bf16), for a device name; torch-free."""
    on_cuda = device.startswith("cuda")
    if precision == "auto":
        return "fp16" if on_cuda else "fp32"
    if precision == "fp16" and not on_cuda:
        raise ValueError("precision fp16 needs a CUDA device; on the CPU use fp32 or bf16")
    return precision


def select_device(spec: DeviceSpec) -> torch.device:
    """`auto` is the first CUDA device when one is present, else the CPU; names are checked."""
    import torch

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
    """fp16 on CUDA and fp32 on the CPU by default (torch's autocast): bf16 is faster in eager torch only where
    the CPU has bf16 instructions, and moves raw scores by up to 0.1 (bench/detect.py measures it)."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision_name(precision, str(device))]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed precision for the network, fp32 where autocast keeps it (sigmoid, box decoding)."""
    import torch

    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
