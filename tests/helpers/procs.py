"""Real processes and ports for tests: every process started here is stopped by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free loopback ports (held open together, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_block(count: int) -> int:
    """A base port with `count` consecutive free ports (the config's metrics.port_base)."""
    from pipeline.cli import _free_port_block

    return _free_port_block(count)


def vidpipe(*args: str, log_path: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `python -m pipeline.cli ARGS` as a real process; output goes to log_path."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-P", "-m", "pipeline.cli", *args], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def run_vidpipe(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `vidpipe ARGS` to the end, capturing its output. On a timeout every process of the pipeline
    prints its threads' stacks (SIGUSR1) before it is stopped, and the assertion shows them: a hang in
    CI then says where it waited."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    cmd = [sys.executable, "-P", "-m", "pipeline.cli", *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=err)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            dump_stacks_and_stop(proc)
            err.seek(0)
            raise AssertionError(f"vidpipe {' '.join(args)} ran over {timeout}s; its stderr ends:\n" + err.read().decode(errors="replace")[-20000:])
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def dump_stacks_and_stop(proc: subprocess.Popen[bytes]) -> None:
    """A hung pipeline: its launcher and stages print their stacks to stderr (SIGUSR1), then it is stopped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(3)
    stop(proc, signal.SIGINT, timeout=60)


def run_logged(*args: str, log_path: Path, timeout: float = 300) -> tuple[int, str]:
    """Run `vidpipe ARGS` to the end with its output in log_path; on a timeout the process is
    stopped and the assertion shows the end of its log (what each stage did, and where each waited)."""
    proc = vidpipe(*args, log_path=log_path)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        dump_stacks_and_stop(proc)
        raise AssertionError(f"vidpipe {' '.join(args)} ran over {timeout}s; its log ends:\n" + log_path.read_text()[-20000:])
    return proc.returncode, log_path.read_text()


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 30) -> int:
    """Stop a process by its PID, escalating to SIGKILL; returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def wait_for(pred: Callable[[], object], timeout: float, interval: float = 0.1, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # not up yet
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, list[tuple[dict[str, str], float]]]:
    """A real Prometheus text-format scrape: sample name -> [(labels, value)]."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def metric(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == val for k, val in labels.items()))


def histogram_quantile(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, q: float, **labels: str) -> float:
    """Upper bound of the bucket holding quantile q, as Prometheus' histogram_quantile would bound it."""
    buckets = sorted(
        (float(lab["le"]), v)
        for lab, v in samples.get(name + "_bucket", [])
        if all(lab.get(k) == val for k, val in labels.items())
    )
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= q * total:
            return le
    return float("inf")


def find_stage(pid: int, stage: str | None = None) -> int | None:
    """PID of a stage process (`... stage NAME ...`) below `pid`; any stage when `stage` is None."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for c in children:
        try:
            argv = " ".join(c.cmdline()).split()  # a forked stage's title is one string
        except psutil.NoSuchProcess:
            continue
        if "stage" in argv:
            i = argv.index("stage")
            if stage is None or argv[i + 1 : i + 2] == [stage]:
                return c.pid
    return None
