#!/usr/bin/env python
"""vidpipe replay against the single loop a user would write instead, same run.

The loop (`--loop-worker`, about 20 lines below): OpenCV decode, the reference COCO-SSD graph
(`../shared/reference/coco_ssd_mobilenet_v2.onnx`) in onnxruntime, per-class NMS at score 0.2 (the default
chain's threshold) and ByteTrack from Roboflow's `trackers` 2.6.1. The pipeline: `vidpipe replay VIDEO` with the
default chain (decode -> COCO-SSD -> track -> record), a subprocess, wall clock from start to exit.

Both run as child processes of this one, alternately, for `--rounds` rounds (default 5: the loop's speed is
bimodal here, see the README's Performance section). Printed per run: fps, CPU seconds of its whole process
tree, peak memory (the largest sum of the tree's RSS, sampled every 50 ms), then the medians and the ratio
vidpipe / loop. Then the per-stage breakdown, read from the stages' own /metrics (scraped while the replay
runs): CPU ms per frame (`process_cpu_seconds_total` over `vidpipe_frames_in_total`, steady state: from the
first scrape that saw frames to the last) and peak RSS per stage process.

    pip install --no-deps trackers==2.6.1 && pip install supervision==0.31.2 onnxruntime
    python bench/vs_loop.py [--video V] [--rounds 5] [--config C]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_VIDEO = ROOT / "sample_videos" / "vtest.avi"
REFERENCE = ROOT.parent / "shared" / "reference" / "coco_ssd_mobilenet_v2.onnx"
SCORE = 0.2
COCO_KEPT = [1, 2, 3, 4, 6, 8, 10, 13]  # the COCO ids the pipeline keeps (person, vehicles, light, stop sign)


def loop_worker(video: str, onnx_path: str) -> None:
    """The loop a user would write: decode, detect, track. Prints its frame count and tracked rows as JSON."""
    import cv2
    import numpy as np
    import onnxruntime as ort
    import supervision as sv
    from trackers import ByteTrackTracker

    cap = cv2.VideoCapture(video)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    tracker = ByteTrackTracker(frame_rate=cap.get(cv2.CAP_PROP_FPS) or 25.0)
    kept = np.array(COCO_KEPT) - 1
    frames = rows = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        h, w = bgr.shape[:2]
        scores, boxes = session.run(None, {name: bgr[None, :, :, ::-1]})
        scores, boxes = scores[0][:, kept], boxes[0, :, 0] * [h, w, h, w]
        cls, conf = scores.argmax(1), scores.max(1)
        m = conf >= SCORE
        xyxy = boxes[m][:, [1, 0, 3, 2]]
        keep = cv2.dnn.NMSBoxesBatched(xyxy.tolist(), conf[m].tolist(), cls[m].tolist(), SCORE, 0.5)
        keep = np.array(keep, dtype=int).reshape(-1)
        det = sv.Detections(xyxy=xyxy[keep], confidence=conf[m][keep], class_id=cls[m][keep])
        rows += len(tracker.update(det))
        frames += 1
    print(json.dumps({"frames": frames, "rows": rows}))


# --------------------------------------------------------------------------------------


class TreeSampler:
    """Peak of the summed RSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.peak = 0
        self.per_pid: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        rss = p.memory_info().rss
                        total += rss
                        name = " ".join(" ".join(p.cmdline()).split()[-6:])  # forked stages: a title
                        old = self.per_pid.get(p.pid, ("", 0))
                        self.per_pid[p.pid] = (name, max(old[1], rss))
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
                self.peak = max(self.peak, total)
            except psutil.NoSuchProcess:
                return
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_children() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_loop(video: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--loop-worker", video, "--reference", str(REFERENCE)]
    c0, t0 = _cpu_children(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"the loop failed:\n{err}")
    res = json.loads(out.strip().splitlines()[-1])
    return {"wall": wall, "cpu": _cpu_children() - c0, "rss": sampler.peak, "frames": res["frames"]}


def _scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=0.5) as resp:
        text = resp.read().decode()
    out = {"cpu": 0.0, "frames": 0.0, "rss": 0.0}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "process_cpu_seconds_total":
                out["cpu"] = s.value
            elif s.name == "process_resident_memory_bytes":
                out["rss"] = s.value
            elif s.name == "vidpipe_frames_in_total":
                out["frames"] += s.value
    return out


def running_config(out_dir: Path, private_tmp: str | None) -> Any:
    """The config a replay runs with, its ports included: the private copy in its run dir (made in the TMPDIR the
    bench gave it), or, from a vidpipe that wrote its ports there, the copy beside the results. None until written."""
    import glob

    import yaml

    from pipeline.config import parse_config

    paths = sorted(glob.glob(os.path.join(private_tmp, "vidpipe-*", "config.yaml"))) if private_tmp else []
    for path in [*paths, str(out_dir / "config.yaml")]:
        try:
            data = yaml.safe_load(Path(path).read_text())
            if isinstance(data, dict) and (data.get("metrics") or {}).get("port_base"):
                return parse_config(data, "bench")
        except Exception:
            continue  # not there yet, or still being written
    return None


class StageScraper:
    """Scrapes every stage's /metrics while a replay runs; keeps the first scrape with frames and the last."""

    def __init__(self, out_dir: str, private_tmp: str | None = None) -> None:
        self.out_dir = out_dir
        self.private_tmp = private_tmp
        self.first: dict[str, dict[str, float]] = {}
        self.last: dict[str, dict[str, float]] = {}
        self.peak_rss: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _ports(self) -> dict[str, str] | None:
        cfg = running_config(Path(self.out_dir), self.private_tmp)
        if cfg is None:
            return None
        return {
            stage + (f"[{stream}]" if stream else ""): f"http://{cfg.metrics.host}:{cfg.metrics_port(stage, stream)}/metrics"
            for stage, stream in cfg.process_names()
        }

    def _run(self) -> None:
        ports = None
        while not self._stop.is_set():
            ports = ports or self._ports()
            for name, url in (ports or {}).items():
                try:
                    m = _scrape(url)
                except OSError:
                    continue
                self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), m["rss"])
                if m["frames"] > 0 and name not in self.first:
                    self.first[name] = m
                self.last[name] = m
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def per_frame_ms(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, last in self.last.items():
            first = self.first.get(name)
            if first is None or last["frames"] - first["frames"] < 20:
                out[name] = None
            else:
                out[name] = (last["cpu"] - first["cpu"]) / (last["frames"] - first["frames"]) * 1e3
        return out


def run_vidpipe(video: str, config: str | None, tmp: str) -> dict[str, Any]:
    out_dir = tempfile.mkdtemp(prefix="replay-", dir=tmp)
    cmd = [sys.executable, "-P", "-m", "pipeline.cli", "--log-level", "WARNING", "replay", video, "--out", out_dir, "--quiet"]
    if config:
        cmd += ["--config", config]
    private = tempfile.mkdtemp(prefix="run-", dir=tmp)  # its TMPDIR: where its run dir, with its ports, is
    c0, t0 = _cpu_children(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": private})
    sampler = TreeSampler(proc.pid)
    scraper = StageScraper(out_dir, private)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop()
    scraper.stop()
    if proc.returncode != 0:
        raise SystemExit(f"vidpipe replay failed (exit {proc.returncode}):\n{out}\n{err}")
    summary = json.loads((Path(out_dir) / "summary.json").read_text())
    frames = sum(s["frames"] for s in summary["streams"].values())
    return {"wall": wall, "cpu": _cpu_children() - c0, "rss": sampler.peak, "frames": frames,
            "stage_ms": scraper.per_frame_ms(), "stage_rss": scraper.peak_rss}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", default=str(DEFAULT_VIDEO))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--config", help="a vidpipe config to replay with (default: the default chain)")
    p.add_argument("--loop-worker", metavar="VIDEO", help=argparse.SUPPRESS)
    p.add_argument("--reference", default=str(REFERENCE), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.loop_worker:
        loop_worker(a.loop_worker, a.reference)
        return 0
    if not REFERENCE.exists():
        print(f"the reference graph is missing: {REFERENCE}", file=sys.stderr)
        return 2
    video = os.path.abspath(a.video)
    print(f"vidpipe replay vs the single loop: {os.path.relpath(video, ROOT)}, {os.cpu_count()} CPUs, {a.rounds} rounds")
    results: dict[str, list[dict[str, Any]]] = {"loop": [], "vidpipe": []}
    with tempfile.TemporaryDirectory(prefix="vidpipe-vs-loop-") as tmp:
        for rnd in range(a.rounds):
            order = ["loop", "vidpipe"] if rnd % 2 == 0 else ["vidpipe", "loop"]
            for name in order:
                r = run_loop(video) if name == "loop" else run_vidpipe(video, a.config, tmp)
                results[name].append(r)
                print(f"  round {rnd + 1} {name:8s} {r['frames']} frames  {r['frames'] / r['wall']:6.1f} fps  "
                      f"CPU {r['cpu']:6.1f} s  peak RSS {r['rss'] / 2**20:6.0f} MiB", flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    fps = {n: statistics.median(r["frames"] / r["wall"] for r in results[n]) for n in results}
    print()
    print(f"{'':10s} {'fps':>8s} {'wall s':>8s} {'CPU s':>8s} {'peak RSS MiB':>13s}")
    for n in results:
        print(f"{n:10s} {fps[n]:8.1f} {med(n, 'wall'):8.2f} {med(n, 'cpu'):8.2f} {med(n, 'rss') / 2**20:13.0f}")
    ratios = [v["frames"] / v["wall"] / (lp["frames"] / lp["wall"]) for v, lp in zip(results["vidpipe"], results["loop"])]
    print(f"\nvidpipe / loop: fps {fps['vidpipe'] / fps['loop']:.2f} (per round {', '.join(f'{x:.2f}' for x in ratios)}), "
          f"CPU {med('vidpipe', 'cpu') / med('loop', 'cpu'):.2f}, peak RSS {med('vidpipe', 'rss') / med('loop', 'rss'):.2f}")
    print("\nper stage (steady state, from the stages' /metrics; median over rounds):")
    names = sorted({k for r in results["vidpipe"] for k in r["stage_ms"]})
    for name in names:
        ms = [r["stage_ms"].get(name) for r in results["vidpipe"]]
        ms_ok = [x for x in ms if x is not None]
        rss = statistics.median(r["stage_rss"].get(name, 0.0) for r in results["vidpipe"]) / 2**20
        cpu = f"{statistics.median(ms_ok):7.2f} CPU ms/frame" if ms_ok else "      - CPU ms/frame"
        print(f"  {name:16s} {cpu}   peak RSS {rss:5.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
