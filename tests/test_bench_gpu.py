"""bench/gpu.py's dry run (the CPU stand-in for the GPU benchmark) runs through and prints its whole table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_bench_dry_run_prints_the_table() -> None:
    res = subprocess.run(
        [sys.executable, "bench/gpu.py", "--dry-run"], cwd=ROOT, check=False, capture_output=True, text=True, timeout=120
    )
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "dry run on the CPU" in out, out
    assert "1. detector (COCO-SSD)" in out, out
    assert "2. appearance CNN" in out, out
    assert "3. streams of 640x360 at 30 fps" in out, out
    assert "streams sustained:" in out, out
    # One row per detector batch (1 and 2) and per crop count (2 and 4), and the N=1 stream row.
    rows = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert any(r[3:4] == ["1"] for r in rows) and any(r[3:4] == ["2"] for r in rows), out
    assert any(r[3:4] == ["4"] for r in rows), out
    assert any(r[:2] == ["1", "30"] for r in rows), out
