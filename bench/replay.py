#!/usr/bin/env python
"""Replay benchmark: the whole pipeline against plain OpenCV doing the same work, same run.

Per round, in rotating order:

  read             cv2.VideoCapture reads every frame (what the decode stage does), in this process
  read+motion      the same plus stages.infer.detectors.motion.MotionDetector (default MotionOptions) on every frame
  read+motion+rec  the same plus what the record stage does per frame (annotate, mp4v VideoWriter, JSONL),
                   i.e. all of the replay's work in one process, without the framework
  replay           `python -m pipeline.cli --log-level WARNING replay VIDEO --out TMP --quiet`, a subprocess,
                   timed wall clock from start to exit (process start-up, imports and shutdown included)
  replay short     the same on a clip of the first few frames, to estimate the fixed start/stop cost:
                   the replay's marginal fps = (frames - short frames) / (wall - short wall)

fps figures are medians over the rounds; CPU ms/frame is user+system time of the process (the replay's
counts its whole process tree). On a noisy shared machine read the ratios, which were measured side by side.

    python bench/replay.py              # ~60 s
    python bench/replay.py --quick      # ~12 s: one round, no record baseline, no short clip
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's pipeline/ and stages/, also without an install

DEFAULT_VIDEO = os.path.join(ROOT, "sample_videos", "vtest.avi")
VTEST_FRAMES = 795
SHORT_FRAMES = 25


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------------------
# in-process baselines


def _open(path: str) -> Any:
    import cv2

    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)  # as stages.decode opens files
    if not cap.isOpened():
        raise SystemExit(f"cannot open {path}")
    return cap


def _images(cap: Any) -> Iterator[Any]:
    """Every frame of an open capture, then release it."""
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return
            yield img
    finally:
        cap.release()


def run_read(path: str, _tmp: str) -> int:
    return sum(1 for _ in _images(_open(path)))


def run_motion(path: str, _tmp: str) -> int:
    from stages.infer.detectors.motion import MotionDetector, MotionOptions

    det = MotionDetector(MotionOptions())
    n = 0
    for img in _images(_open(path)):
        det.detect_image("s", img)
        n += 1
    return n


def run_motion_record(path: str, tmp: str) -> int:
    """read + motion + the record stage's per-frame work (its own functions), one process."""
    import cv2

    from pipeline.protocol import Frame
    from stages.infer.detectors.motion import MotionDetector, MotionOptions
    from stages.record import CODECS, RecordOptions, annotate, frame_record

    o = RecordOptions()
    det = MotionDetector(MotionOptions())
    cap = _open(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    n = 0
    with open(os.path.join(tmp, "inproc.jsonl"), "w", encoding="utf-8") as jsonl:
        for img in _images(cap):
            h, w = img.shape[:2]
            frame = Frame("s", n, n / fps, time.time(), w, h, img)
            frame.detections = det.detect_image("s", img)
            jsonl.write(json.dumps(frame_record(frame), separators=(",", ":")) + "\n")
            if writer is None:
                out = os.path.join(tmp, "inproc" + CODECS[o.codec])
                writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*o.codec), fps, (w, h))
            writer.write(annotate(img, frame, o.labels))
            n += 1
    if writer is not None:
        writer.release()
    return n


# --------------------------------------------------------------------------------------
# the pipeline, as a subprocess


def _children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def run_replay(video: str, out_dir: str, timeout_s: float) -> tuple[float, float, dict[str, Any]]:
    """(wall seconds, CPU seconds of the process tree, summary.json)."""
    cmd = [sys.executable, "-P", "-m", "pipeline.cli", "--log-level", "WARNING", "replay", video, "--out", out_dir, "--quiet"]
    cpu0 = _cpu_children()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kids = _children_of(proc.pid)
        proc.send_signal(signal.SIGTERM)  # the launcher stops its stages
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        for pid in kids:  # stages still draining: they were started by our launcher
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise SystemExit(f"replay of {video} did not finish within {timeout_s:.0f}s")
    wall = time.perf_counter() - t0
    cpu = _cpu_children() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"replay of {video} failed (exit {proc.returncode}):\n{out}\n{err}")
    summary = json.loads((Path(out_dir) / "summary.json").read_text())
    return wall, cpu, summary


def _short_clip(video: str, tmp: str, frames: int) -> str:
    import cv2

    cap = _open(video)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    path = os.path.join(tmp, "short.avi")
    writer = None
    for _ in range(frames):
        ok, img = cap.read()
        if not ok:
            break
        if writer is None:
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (img.shape[1], img.shape[0]))
        writer.write(img)
    cap.release()
    if writer is None:
        raise SystemExit(f"no frame could be read from {video}")
    writer.release()
    return path


def _check(summary: dict[str, Any], expected: int) -> tuple[bool, str]:
    streams = summary.get("streams") or {}
    if len(streams) != 1:
        return False, f"{len(streams)} streams in summary.json"
    (sid, s), = streams.items()
    ok = s.get("frames") == expected and s.get("status") == "complete" and not s.get("error")
    return ok, f"{sid}: {s.get('frames')} frames, status {s.get('status')}" + (f", error {s['error']}" if s.get("error") else "")


# --------------------------------------------------------------------------------------


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", default=DEFAULT_VIDEO, help="video file (default sample_videos/vtest.avi)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 2; quick 1)")
    p.add_argument("--quick", action="store_true", help="one round of read, read+motion and replay (~12 s)")
    p.add_argument("--no-record-baseline", action="store_true", help="skip read+motion+rec")
    p.add_argument("--no-short", action="store_true", help="skip the short-clip replay (no marginal fps)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one replay may take (default 300)")
    a = p.parse_args(argv)
    rounds = a.rounds or (1 if a.quick else 2)
    with_rec = not (a.quick or a.no_record_baseline)
    with_short = not (a.quick or a.no_short)
    video = os.path.abspath(a.video)
    if not os.path.isfile(video):
        print(f"no such video: {video}", file=sys.stderr)
        return 2

    import cv2

    print(f"vidpipe replay benchmark: {os.path.relpath(video, ROOT)}, {os.cpu_count()} CPUs, OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads), {rounds} round(s)")
    t_begin = time.monotonic()
    tmp_root = tempfile.mkdtemp(prefix="vidpipe-bench-")
    short = _short_clip(video, tmp_root, SHORT_FRAMES) if with_short else None

    inproc: dict[str, Callable[[str, str], int]] = {"read": run_read, "read+motion": run_motion}
    if with_rec:
        inproc["read+motion+rec"] = run_motion_record
    names = list(inproc) + ["replay"] + (["replay short"] if with_short else [])
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    frames: dict[str, int] = {}
    checks: list[str] = []
    all_ok = True
    for rnd in range(rounds):
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        for name in order:
            tmp = tempfile.mkdtemp(prefix=f"r{rnd}-", dir=tmp_root)
            if name in inproc:
                c0, t0 = _cpu_self(), time.perf_counter()
                n = inproc[name](video, tmp)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(_cpu_self() - c0)
                frames[name] = n
            else:
                src = short if name == "replay short" else video
                w, c, summary = run_replay(src, tmp, a.timeout)
                wall[name].append(w)
                cpu[name].append(c)
                (s,) = summary["streams"].values()
                frames[name] = s.get("frames") or 0
                if name == "replay":
                    expected = VTEST_FRAMES if video == os.path.abspath(DEFAULT_VIDEO) else frames.get("read") or run_read(video, tmp)
                    ok, text = _check(summary, expected)
                    all_ok &= ok
                    checks.append(f"round {rnd + 1}: summary.json {text} ({'OK' if ok else f'FAIL, expected {expected} complete'})")

    n_frames = frames["replay"]
    base_fps = {n: frames[n] / statistics.median(wall[n]) for n in inproc}
    rows = [["run", "frames", "fps (median)", "walls s", "CPU ms/frame", "fps / read", "fps / read+motion"]
            + (["fps / read+motion+rec"] if with_rec else [])]

    def row(name: str, fps: float, walls: list[float], cpu_ms: float | None, n: int) -> None:
        r = [name, str(n), f"{fps:.1f}", " ".join(f"{x:.2f}" for x in walls), "-" if cpu_ms is None else f"{cpu_ms:.2f}",
             f"{fps / base_fps['read']:.3f}", f"{fps / base_fps['read+motion']:.3f}"]
        if with_rec:
            r.append(f"{fps / base_fps['read+motion+rec']:.3f}")
        rows.append(r)

    for name in inproc:
        row(name, base_fps[name], wall[name], statistics.median(cpu[name]) / frames[name] * 1e3, frames[name])
    rep_wall = statistics.median(wall["replay"])
    row("replay (wall clock)", n_frames / rep_wall, wall["replay"], statistics.median(cpu["replay"]) / n_frames * 1e3, n_frames)
    marg: list[float] = []
    marg_cpu: list[float] = []
    if with_short:
        sw = statistics.median(wall["replay short"])
        row(f"replay short ({frames['replay short']} frames)", frames["replay short"] / sw, wall["replay short"],
            statistics.median(cpu["replay short"]) / max(frames["replay short"], 1) * 1e3, frames["replay short"])
        # paired per round: the fixed cost measured next to each full replay
        marg = [(n_frames - frames["replay short"]) / (w - s) for w, s in zip(wall["replay"], wall["replay short"]) if w > s]
        marg_cpu = [(c - cs) / (n_frames - frames["replay short"]) * 1e3 for c, cs in zip(cpu["replay"], cpu["replay short"])]
        if marg:
            rows.append(["replay marginal (- short)", str(n_frames - frames["replay short"]), f"{statistics.median(marg):.1f}",
                         " ".join(f"{x:.2f}" for x in (w - s for w, s in zip(wall["replay"], wall["replay short"]))),
                         f"{statistics.median(marg_cpu):.2f}", f"{statistics.median(marg) / base_fps['read']:.3f}",
                         f"{statistics.median(marg) / base_fps['read+motion']:.3f}"]
                        + ([f"{statistics.median(marg) / base_fps['read+motion+rec']:.3f}"] if with_rec else []))
    print()
    print(_table(rows))
    print()
    cpu_rm = statistics.median(cpu["read+motion"]) / frames["read+motion"]
    cpu_rep = statistics.median(cpu["replay"]) / n_frames
    line = f"CPU per frame, replay / read+motion: {cpu_rep / cpu_rm:.2f}"
    if with_rec:
        cpu_rec = statistics.median(cpu["read+motion+rec"]) / frames["read+motion+rec"]
        line += f"; replay / read+motion+rec: {cpu_rep / cpu_rec:.2f}"
        if with_short and marg_cpu:
            line += f"; marginal / read+motion+rec: {statistics.median(marg_cpu) / 1e3 / cpu_rec:.2f}"
        line += "\n  (replay vs read+motion+rec is the framework's CPU overhead on the same work; marginal leaves out start/stop)"
    print(line)
    if with_short:
        print(f"fixed start/stop cost of a replay (short clip, {frames['replay short']} frames): "
              f"{statistics.median(wall['replay short']):.2f}s = "
              f"{statistics.median(wall['replay short']) / rep_wall * 100:.0f}% of the full replay's wall time")
    for c in checks:
        print(c)
    print(f"\n(total {time.monotonic() - t_begin:.0f}s)")
    import shutil

    shutil.rmtree(tmp_root, ignore_errors=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
