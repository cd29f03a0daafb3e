"""Command-line tools the deployment tests run (promtool, amtool, ...): found on PATH or in /usr/bin."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any


def find_tool(name: str) -> str | None:
    found = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + "/usr/bin:/usr/sbin")
    return found if found and os.access(found, os.X_OK) else None


def run_tool(cmd: list[str], cwd: Path) -> str:
    """Run a tool to the end; its output is printed, and a failure fails the test with that output."""
    proc = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=120)
    out = f"$ {' '.join(cmd)}  (in {cwd})\n{proc.stdout}{proc.stderr}"
    print(out)
    assert proc.returncode == 0, f"{Path(cmd[0]).name} failed with status {proc.returncode}:\n{out}"
    return out


def exposed_names(registry: Any) -> set[str]:
    """The sample names a prometheus_client registry exposes (counters with _total, histograms' series)."""
    names: set[str] = set()
    for fam in registry.collect():
        if fam.type == "counter":
            names.add(fam.name + "_total")
        elif fam.type == "histogram":
            names |= {fam.name + "_bucket", fam.name + "_sum", fam.name + "_count"}
        else:
            names.add(fam.name)
    return names
