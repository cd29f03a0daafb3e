"""Starting the test RTSP server (tests/helpers/rtsp_server.py, Debian's GStreamer RTSP server) from a test."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.helpers.procs import ROOT, stop

SYSTEM_PYTHON = "/usr/bin/python3"  # the one with Debian's GStreamer bindings


def have_rtsp_server() -> bool:
    probe = 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer'
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_server(port: int, log: Path, path: str = "/cam", video: Path | None = None) -> subprocess.Popen[str]:
    """The server on 127.0.0.1:`port`, serving a test pattern, or `video` looped; returns once it listens.
    The caller stops it (stop(proc, SIGTERM))."""
    args = [SYSTEM_PYTHON, str(ROOT / "tests" / "helpers" / "rtsp_server.py"), "--port", str(port), "--path", path]
    if video is not None:
        args += ["--video", str(video)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(log, "a"), text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY"):
        stop(proc, signal.SIGKILL)  # type: ignore[arg-type]
        raise RuntimeError(f"RTSP server did not start: {line!r}; see {log}")
    return proc
