#!/usr/bin/env python
"""Process start to first frame of a one-stream replay, and the decode process's memory: before and after, same run.

"before" is a git worktree of `--baseline` (default dc3d1dc, the last commit before the torch-free track stage), "after"
this checkout. Each round runs both, in alternating order: `python -m pipeline.cli replay CLIP` (the default chain
decode -> COCO-SSD -> track -> record) on the first `--frames` frames of vtest.avi, a subprocess. Measured:

  first frame   seconds from starting the command until the record stage (the end of the chain) has received
                a frame: its vidpipe_frames_in_total, polled every 20 ms on its /metrics
  wall          seconds from start to exit
  decode RSS    peak resident memory of the decode stage's process, sampled every 20 ms

Medians over `--rounds` (default 3). Model exports are cached in a temporary folder that a warm-up run of each
version fills first, so both are measured as a user's second run is.

    python bench/startup.py [--baseline REV] [--rounds 3] [--frames 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_loop import running_config  # noqa: E402  (the ports of a running replay)


def make_clip(dst: Path, frames: int) -> Path:
    import cv2

    cap = cv2.VideoCapture(str(ROOT / "sample_videos" / "vtest.avi"))
    out = None
    for _ in range(frames):
        ok, img = cap.read()
        if not ok:
            break
        if out is None:
            out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (img.shape[1], img.shape[0]))
        out.write(img)
    cap.release()
    assert out is not None
    out.release()
    return dst


def record_url(out_dir: Path, private_tmp: Path) -> str | None:
    """The record stage's /metrics, from the config the replay runs with (see vs_loop.running_config)."""
    cfg = running_config(out_dir, str(private_tmp))
    return None if cfg is None else f"http://{cfg.metrics.host}:{cfg.metrics_port('record', None)}/metrics"


def frames_in(url: str) -> float:
    with urllib.request.urlopen(url, timeout=0.2) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vidpipe_frames_in_total{"))


def run_once(tree: Path, clip: Path, tmp: Path, cache: Path) -> dict[str, float]:
    import psutil

    out_dir = Path(tempfile.mkdtemp(prefix="out-", dir=tmp))
    private = Path(tempfile.mkdtemp(prefix="run-", dir=tmp))  # its TMPDIR: where its run dir, with its ports, is
    env = dict(os.environ, PYTHONPATH=str(tree), VIDPIPE_CACHE_DIR=str(cache), TMPDIR=str(private))
    cmd = [sys.executable, "-P", "-m", "pipeline.cli", "--log-level", "WARNING", "replay", str(clip), "--out", str(out_dir), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first: float | None = None
    peak = 0
    stop = threading.Event()

    def sample_decode() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                for child in parent.children(recursive=True):
                    cmdline = " ".join(child.cmdline()).split()  # a forked stage's title is one string
                    if "stage" in cmdline and "decode" in cmdline:
                        peak = max(peak, child.memory_info().rss)
            except psutil.Error:
                pass
            stop.wait(0.02)

    sampler = threading.Thread(target=sample_decode, daemon=True)
    sampler.start()
    url = None
    while proc.poll() is None and first is None:
        url = url or record_url(out_dir, private)
        if url:
            try:
                if frames_in(url) > 0:
                    first = time.perf_counter() - t0
            except OSError:
                pass
        time.sleep(0.02)
    err = proc.communicate()[1]
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    if proc.returncode != 0 or first is None:
        raise SystemExit(f"replay in {tree} failed (exit {proc.returncode}, first frame {first}):\n{err[-3000:]}")
    return {"first": first, "wall": wall, "rss": peak / 2**20}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default="dc3d1dc", help="git revision measured as 'before' (its config must parse in this checkout's replay)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--frames", type=int, default=100)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vp-startup-") as tmp_name:
        tmp = Path(tmp_name)
        base = tmp / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), a.baseline], check=True)
        try:
            clip = make_clip(tmp / "clip.avi", a.frames)
            trees = {f"before ({a.baseline})": base, "after (this checkout)": ROOT}
            caches = {name: tmp / f"cache{i}" for i, name in enumerate(trees)}
            print(f"replay of {a.frames} frames of vtest.avi, default chain, {os.cpu_count()} CPUs, {a.rounds} rounds")
            for name, tree in trees.items():  # warm-up: exports and compiled-model caches
                run_once(tree, clip, tmp, caches[name])
            results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for r in range(a.rounds):
                for name in list(trees)[r % 2 :] + list(trees)[: r % 2]:
                    res = run_once(trees[name], clip, tmp, caches[name])
                    results[name].append(res)
                    print(f"  round {r + 1} {name:24s} first frame {res['first']:5.2f} s  wall {res['wall']:5.2f} s  decode RSS {res['rss']:5.0f} MiB")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    print(f"\n{'':24s} {'first frame s':>14s} {'wall s':>8s} {'decode RSS MiB':>15s}")
    for name, rows in results.items():
        med = {k: statistics.median(x[k] for x in rows) for k in ("first", "wall", "rss")}
        print(f"{name:24s} {med['first']:14.2f} {med['wall']:8.2f} {med['rss']:15.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
