"""Device and precision choice of the CNN detectors.

There is no GPU on these machines: `torch.cuda.is_available` and `device_count` are mocked to
check the choice itself; the CUDA forward pass is not exercised here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pipeline.device import autocast, cpu_cores, cpu_has_bf16, resolve_precision, select_device


def test_auto_is_cpu_in_fp32_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device = select_device("auto")
    assert device == torch.device("cpu")
    assert resolve_precision("auto", device) == torch.float32
    with pytest.raises(ValueError, match="no CUDA device is available"):
        select_device("cuda")


def test_auto_is_cuda_in_fp16_with_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:  # GPU mocked
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    device = select_device("auto")
    assert device.type == "cuda"
    assert resolve_precision("auto", device) == torch.float16
    assert resolve_precision("bf16", device) == torch.bfloat16
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        select_device("cuda:3")


def test_bad_choices_name_the_problem() -> None:
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="device 'tpu'"):
        select_device("tpu")


def test_bf16_autocast_on_the_cpu_runs_convolutions_in_bf16() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    with torch.inference_mode(), autocast(torch.device("cpu"), torch.bfloat16):
        assert conv(torch.zeros(1, 3, 8, 8)).dtype == torch.bfloat16
    with torch.inference_mode(), autocast(torch.device("cpu"), torch.float32):
        assert conv(torch.zeros(1, 3, 8, 8)).dtype == torch.float32


def test_cpu_cores_follows_the_affinity_mask_and_the_cgroup_quota(tmp_path: Path) -> None:
    mask = len(os.sched_getaffinity(0))
    unlimited = tmp_path / "unlimited"
    unlimited.write_text("max 100000\n")
    assert cpu_cores(unlimited) == mask
    assert cpu_cores(tmp_path / "absent") == mask
    quota = tmp_path / "quota"
    quota.write_text("150000 100000\n")  # a pod limit of 1.5 CPUs: two threads, not the host's count
    assert cpu_cores(quota) == min(mask, 2)
    quota.write_text("10000 100000\n")  # 0.1 CPU still runs one thread
    assert cpu_cores(quota) == 1


def test_cpu_has_bf16_reads_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not cpu_has_bf16(info)  # AVX-512 without its bf16 instructions: fp32 stays the fast precision
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert cpu_has_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert cpu_has_bf16(info)
    assert not cpu_has_bf16(tmp_path / "absent")  # no /proc/cpuinfo (not Linux): no claim
