#!/usr/bin/env python
"""What the framework costs per frame, with a null model: serialisation, hops and batching, same run.

Runs, alternately for `--rounds` rounds, on VIDEO (default vtest.avi, 768x576):

  read     cv2.VideoCapture reads every frame in this process: the decode stage's own work, no framework
  1 null   `vidpipe replay` with decode -> null -> record (JSONL only, no video): two hops
  3 nulls  decode -> null -> null -> null -> record: four hops

`null` is bench/null_stage.py: process() returns the batch. Each replay is a subprocess timed from start to exit;
CPU is its whole process tree. Printed: fps and CPU ms per frame of each (medians), the framework's CPU per frame
beyond the bare read (1 null - read), the CPU per extra hop of a frame with its pixels ((3 nulls - 1 null) / 2),
and the per-stage CPU ms per frame in steady state from the stages' own /metrics.

    python bench/overhead.py [--video V] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_loop import run_vidpipe  # noqa: E402  (bench/vs_loop.py: one replay, timed, stages scraped)

DEFAULT_VIDEO = ROOT / "sample_videos" / "vtest.avi"
# The replays load the null stage as bench.null_stage: this checkout must be importable in them.
os.environ["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)


def run_read(video: str) -> dict[str, Any]:
    import cv2

    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    cap = cv2.VideoCapture(video)
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": time.perf_counter() - t0, "cpu": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, "frames": frames}


def write_config(path: Path, hops: int) -> str:
    nulls = [{"name": f"null{i + 1}", "kind": "bench.null_stage:NullStage"} for i in range(hops)]
    stages = [{"name": "decode", "kind": "decode"}, *nulls, {"name": "record", "kind": "record", "options": {"video": False}}]
    path.write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", default=str(DEFAULT_VIDEO))
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    video = os.path.abspath(a.video)
    print(f"framework overhead with a null model: {os.path.relpath(video, ROOT)}, {os.cpu_count()} CPUs, {a.rounds} rounds")
    results: dict[str, list[dict[str, Any]]] = {"read": [], "1 null": [], "3 nulls": []}
    with tempfile.TemporaryDirectory(prefix="vp-overhead-") as tmp:
        configs = {"1 null": write_config(Path(tmp) / "one.yaml", 1), "3 nulls": write_config(Path(tmp) / "three.yaml", 3)}
        order = list(results)
        for r in range(a.rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                res = run_read(video) if name == "read" else run_vidpipe(video, configs[name], tmp)
                results[name].append(res)
                print(f"  round {r + 1} {name:7s} {res['frames']:5d} frames {res['frames'] / res['wall']:8.1f} fps"
                      f"  CPU {res['cpu'] / res['frames'] * 1e3:6.2f} ms/frame")  # fmt: skip

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] / x["frames"] for x in results[name]) * 1e3

    print(f"\n{'':10s} {'fps':>8s} {'wall ms/frame':>14s} {'CPU ms/frame':>13s}")
    for name in results:
        print(f"{name:10s} {1e3 / med(name, 'wall'):8.1f} {med(name, 'wall'):14.2f} {med(name, 'cpu'):13.2f}")
    framework = med("1 null", "cpu") - med("read", "cpu")
    per_hop = (med("3 nulls", "cpu") - med("1 null", "cpu")) / 2
    print(f"\nframework CPU per frame beyond the bare read (2 hops, JSONL out, start-up included): {framework:.2f} ms")
    print(f"CPU per extra hop of a frame with its pixels (send, receive, batch, metrics): {per_hop:.2f} ms")
    print("\nper stage, steady state (CPU ms per frame, from /metrics; median over rounds):")
    for name in ("1 null", "3 nulls"):
        stages: dict[str, list[float]] = {}
        for res in results[name]:
            for stage, ms in res["stage_ms"].items():
                if ms is not None:
                    stages.setdefault(stage, []).append(ms)
        print(f"  {name}: " + ", ".join(f"{s} {statistics.median(v):.2f}" for s, v in sorted(stages.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
