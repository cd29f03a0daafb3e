"""bench/overhead.py (the framework's cost with a null model) runs through on a short clip and prints its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.analytics import make_clip

ROOT = Path(__file__).resolve().parent.parent


def test_overhead_bench_prints_per_frame_and_per_hop_costs(tmp_path: Path, samples: Path) -> None:
    clip = make_clip(samples / "vtest.avi", tmp_path / "clip.avi", 400)
    res = subprocess.run([sys.executable, "bench/overhead.py", "--video", str(clip), "--rounds", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    for name in ("read", "1 null", "3 nulls"):
        assert re.search(rf"^{name}\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert re.search(r"CPU per extra hop of a frame with its pixels .*: -?[\d.]+ ms", out), out
    # The stages' own steady-state costs, scraped while the replay ran (a short clip: at least one stage's).
    assert re.search(r"3 nulls: .*null\d [\d.]+", out), out
