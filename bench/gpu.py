"""What one GPU does for the pipeline: detector frames/s, appearance-CNN time, and how many 1080p30 streams the
whole chain keeps up with.

    python bench/gpu.py [--window 10] [--max-streams 256] [--budget 420]
    python bench/gpu.py --dry-run      # the same code paths, tiny, on the CPU (chosen by itself without CUDA)

1. The COCO-SSD detector's frames/s at batch 1, 8 and 32 on the `cuda` backend (fp16, CUDA graphs) and, for
   comparison, on the `torch` backend (eager, fp16 autocast) on the same GPU; frames are vtest.avi frames
   resized to 1920x1080, and vtest's own 768x576. Each configuration is warmed up first (the CUDA graph of a
   batch shape is captured on its first call) and timed end to end: stacking, upload, network, NMS, download.
   Two more rows: the first backend with `tiles: 2` and `tiles: 3` (the whole frame and 2x2 or 3x3 tiles, five
   or ten views a frame).
2. The appearance CNN's milliseconds for 10 and 50 crops of one 1080p frame (median of repeated calls).
3. Streams: N synthetic 1920x1080 streams, frames of vtest.avi resized once and held in memory (played
   forwards then backwards, each stream at its own offset), every stream's frames "arriving" at 30 fps of
   wall clock, all streams in step. One loop takes the newest frame of each stream (older ones it missed are
   dropped, as live mode drops them), runs the detector on the batch of N, the tracker (appearance CNN for all
   crops, motion LSTM, association: stages/track/stage.py's build_tracker and embed_rows) and the analyze stage
   itself (AnalyzeStage.process with deploy/config/vtest-analytics.yaml's zone, line and rules on every
   stream, JPEG snapshots of its alerts included). Frame age is the time from a frame's arrival to the end of
   its processing. N doubles (1, 2, 4, ...) while the chain keeps up over a window (default 10 s, after a
   warm-up): processed frames/s >= 0.95 * 30 * N and p95 frame age < 1 s. Decoding is not in the loop (the
   frames were decoded up front), and the stages run one after the other in one thread, where the pipeline
   overlaps them in separate processes.

With --dry-run (or without CUDA) everything runs on the CPU on the default CPU backend with batch 1 and 2,
2 and 4 crops, 640x360 streams, N = 1 and a 2 s window: a check that the code runs, not a measurement.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the packages, also without an install (imported below, in the functions)

VIDEO = ROOT / "sample_videos" / "vtest.avi"
ANALYTICS_CONFIG = ROOT / "deploy" / "config" / "vtest-analytics.yaml"
STREAM_FPS = 30.0
SCORE_THRESHOLD = 0.2


@dataclass(frozen=True)
class Plan:
    """What one run measures: the GPU plan, or the tiny CPU dry run."""

    dry: bool
    device: str
    det_backends: tuple[str, ...]  # "auto" on the CPU: the default CPU backend
    det_batches: tuple[int, ...]
    det_sizes: tuple[tuple[int, int], ...]  # (width, height)
    crops: tuple[int, ...]
    stream_size: tuple[int, int]
    stream_counts: tuple[int, ...]
    pool_frames: int  # frames decoded and held in memory for the streams
    window_s: float
    warmup_s: float  # of the stream loop, before the window
    warmup_calls: int  # per detector / appearance configuration
    min_time_s: float  # per detector / appearance configuration
    min_calls: int


def make_plan(dry: bool, window_s: float | None, max_streams: int) -> Plan:
    if dry:
        return Plan(
            dry=True, device="cpu", det_backends=("auto",), det_batches=(1, 2), det_sizes=((640, 360),), crops=(2, 4),
            stream_size=(640, 360), stream_counts=(1,), pool_frames=12, window_s=window_s or 2.0, warmup_s=0.5,
            warmup_calls=2, min_time_s=0.2, min_calls=3,
        )  # fmt: skip
    counts = tuple(1 << i for i in range(16) if 1 << i <= max_streams)
    return Plan(
        dry=False, device="cuda", det_backends=("cuda", "torch"), det_batches=(1, 8, 32),
        det_sizes=((1920, 1080), (768, 576)), crops=(10, 50), stream_size=(1920, 1080), stream_counts=counts,
        pool_frames=300, window_s=window_s or 10.0, warmup_s=2.0, warmup_calls=5, min_time_s=1.5, min_calls=10,
    )  # fmt: skip


# -- frames ---------------------------------------------------------------------------------------------


def read_video(n: int) -> list[np.ndarray]:
    """The first n frames of vtest.avi (BGR, 768x576)."""
    from tools.tracklets import read_frames

    out = [img for _, img in read_frames(VIDEO, 0, n)]
    if not out:
        raise RuntimeError(f"no frames decoded from {VIDEO}")
    return out


def resized(images: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    if images[0].shape[1::-1] == size:
        return images
    return [cv2.resize(img, size, interpolation=cv2.INTER_LINEAR) for img in images]


def person_boxes(n: int, w: int, h: int, seed: int = 0) -> np.ndarray:
    """n person-shaped xyxy boxes inside a w x h frame (sizes of vtest's people, scaled to the frame)."""
    rng = np.random.default_rng(seed)
    s = h / 576
    wh = rng.uniform([20 * s, 50 * s], [60 * s, 130 * s], (n, 2))
    xy = rng.uniform([0, 0], [w - 60 * s, h - 130 * s], (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


# -- timing ---------------------------------------------------------------------------------------------


def make_sync(device: str) -> Callable[[], None]:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def time_calls(fn: Callable[[], Any], plan: Plan, sync: Callable[[], None]) -> np.ndarray:
    """Seconds per call of fn after plan.warmup_calls untimed calls: at least min_calls and min_time_s."""
    for _ in range(plan.warmup_calls):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < plan.min_calls or time.perf_counter() - start < plan.min_time_s:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return np.array(times)


def free_device_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# -- 1. detector ----------------------------------------------------------------------------------------


def build_detector(plan: Plan, backend: str, tiles: int = 1) -> Any:
    from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions

    return CocoSsdDetector(
        CocoSsdOptions(device=plan.device, backend=backend, precision="auto", score_threshold=SCORE_THRESHOLD, tiles=tiles)
    )


def precision_name(dtype: Any, backend: str) -> str:
    import torch

    if backend == "cuda":
        return "fp16"  # the cuda backend runs fp16 whatever the detector's dtype says
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dtype, str(dtype))


def detector_row(det: Any, pool: list[np.ndarray], b: int, plan: Plan, sync: Callable[[], None], label: str = "") -> list[str]:
    """One row of the detector table: a batch of `b` frames of `pool` through `det`, timed."""
    from pipeline.protocol import Frame

    h, w = pool[0].shape[:2]
    frames = [Frame("bench", i, i / STREAM_FPS, 0.0, w, h, pool[i % len(pool)]) for i in range(b)]
    t = time_calls(partial(det.detect, frames), plan, sync)
    ms = float(np.median(t)) * 1000
    fps = b * len(t) / float(t.sum())
    return [det.backend + label, precision_name(det.dtype, det.backend), f"{w}x{h}", str(b), f"{ms:.2f}", f"{fps:.1f}"]


def bench_detector(plan: Plan, native: list[np.ndarray], sync: Callable[[], None]) -> tuple[list[list[str]], Any]:
    """Rows of the detector table; and the detector of the first backend, kept for the stream loop."""
    rows: list[list[str]] = []
    kept = None
    for backend in plan.det_backends:
        det = build_detector(plan, backend)
        for w, h in plan.det_sizes:
            pool = resized(native[: max(plan.det_batches)], (w, h))
            rows += [detector_row(det, pool, b, plan, sync) for b in plan.det_batches]
        if kept is None:
            kept = det
        else:
            del det
            free_device_memory(plan.device)
    # Tiled inference (detector.tiles: 2 and 3, five and ten views a frame in the same batches) on the first
    # backend, at the first size and the largest batch: what small-people scenes cost.
    b = max(plan.det_batches)
    for tiles in (2, 3):
        det = build_detector(plan, plan.det_backends[0], tiles=tiles)
        rows.append(detector_row(det, resized(native[:b], plan.det_sizes[0]), b, plan, sync, f"+tiles{tiles}"))
        del det
        free_device_memory(plan.device)
    return rows, kept


# -- 2. appearance CNN ----------------------------------------------------------------------------------


def appearance_backends(plan: Plan) -> list[str | None]:
    """Backends to time the appearance CNN on: None is the encoder's default (no backend argument)."""
    from stages.track.appearance import AppearanceEncoder

    if "backend" not in inspect.signature(AppearanceEncoder.__init__).parameters or plan.dry:
        return [None]
    return ["cuda", "torch"]


def build_encoder(plan: Plan, backend: str | None) -> Any:
    from stages.track.appearance import AppearanceEncoder

    # float32 weights in; the cuda backend runs them in fp16 (CUDA graphs), the others in float32.
    kwargs: dict[str, Any] = {"device": plan.device, "precision": "float32"}
    if backend is not None:
        kwargs["backend"] = backend
    return AppearanceEncoder(None, **kwargs)


def bench_appearance(plan: Plan, image: np.ndarray, sync: Callable[[], None]) -> list[list[str]]:
    rows: list[list[str]] = []
    h, w = image.shape[:2]
    for backend in appearance_backends(plan):
        enc = build_encoder(plan, backend)
        name = getattr(enc, "backend", "torch")
        for n in plan.crops:
            boxes = person_boxes(n, w, h, seed=n)
            t = time_calls(partial(enc.embed, [image], [boxes]), plan, sync) * 1000
            rows.append([name, "fp16" if name == "cuda" else "fp32", f"{w}x{h}", str(n), f"{np.median(t):.2f}", f"{np.percentile(t, 90):.2f}"])
        del enc
        free_device_memory(plan.device)
    return rows


# -- 3. streams -----------------------------------------------------------------------------------------


@dataclass
class StreamResult:
    n: int
    processed_fps: float
    age_p50_s: float
    age_p95_s: float
    loops: int
    detect_ms: float  # means per loop iteration (one batch of N frames)
    track_ms: float
    analyze_ms: float
    alerts: int

    @property
    def target_fps(self) -> float:
        return STREAM_FPS * self.n

    @property
    def kept_up(self) -> bool:
        return self.processed_fps >= 0.95 * self.target_fps and self.age_p95_s < 1.0


def analyze_stage(n: int, size: tuple[int, int]) -> Any:
    """The analyze stage itself, in-process, with the vtest analytics config's geometry and rules on each stream."""
    import yaml

    from pipeline.config import parse_config
    from pipeline.metrics import StageMetrics
    from pipeline.protocol import StreamStart
    from pipeline.stage import StageContext
    from stages.analyze.stage import AnalyzeStage

    example = yaml.safe_load(ANALYTICS_CONFIG.read_text())
    stage = next(s for s in example["stages"] if s["kind"] == "analyze")
    geometry = next(iter(stage["options"]["streams"].values()))
    ids = [f"cam{i}" for i in range(n)]
    options = {"streams": {sid: geometry for sid in ids}}
    cfg = parse_config(
        {
            "mode": "live",
            "streams": [{"id": sid, "source": str(VIDEO), "loop": True, "resize": list(size)} for sid in ids],
            "stages": [{"name": "decode", "kind": "decode"}, {"name": "analyze", "kind": "analyze", "options": options}],
        },
        only_stage="analyze",
    )
    log = logging.getLogger("bench.gpu.analyze")
    log.setLevel(logging.ERROR)  # "geometry scaled to the frame size" is expected here
    ctx = StageContext("analyze", cfg, cfg.stage("analyze"), AnalyzeStage.Options.model_validate(options), StageMetrics("analyze"), log)
    analyze = AnalyzeStage(ctx)
    for epoch, sid in enumerate(ids, 1):  # what the runtime does when each stream starts
        ctx.streams.begin(analyze, sid, StreamStart(epoch, live=True))
    return analyze


def run_streams(n: int, plan: Plan, pool: list[np.ndarray], detector: Any, tracker: Any, encoder: Any) -> StreamResult:
    """N streams at 30 fps for warmup_s + window_s of wall clock through detect -> track -> analyze."""
    from pipeline.protocol import Frame
    from stages.track.stage import embed_rows
    from stages.track.tracker import StepInput

    w, h = plan.stream_size
    ids = [f"cam{i}" for i in range(n)]
    for sid in ids:
        tracker.end_stream(sid)
    analyze = analyze_stage(n, plan.stream_size)
    period = max(2 * len(pool) - 2, 1)  # forwards then backwards: no jump where the clip starts again
    offsets = [(i * 37) % period for i in range(n)]

    def image(i: int, k: int) -> np.ndarray:
        j = (k + offsets[i]) % period
        return pool[j if j < len(pool) else period - j]

    # Shapes first seen here (detector batch n, crops of n frames) are captured before the clock starts.
    warm = [Frame(sid, 0, 0.0, 0.0, w, h, image(i, 0)) for i, sid in enumerate(ids)]
    for _ in range(2):
        dets = detector.detect(warm)
        embed_rows(tracker, encoder, [f.image for f in warm], dets)

    t0 = time.perf_counter() + 0.05
    wall0 = time.time() + 0.05
    measure_from = t0 + plan.warmup_s
    end = measure_from + plan.window_s
    last_k = -1
    ages: list[float] = []
    counted = loops = alerts = 0
    spent = np.zeros(3)
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        k = int((now - t0) * STREAM_FPS) if now >= t0 else -1
        if k <= last_k:  # nothing new yet: wait for the next frame time
            time.sleep(max(0.0, t0 + (last_k + 1) / STREAM_FPS - now))
            continue
        arrival = t0 + k / STREAM_FPS
        frames = [Frame(sid, k, k / STREAM_FPS, wall0 + k / STREAM_FPS, w, h, image(i, k)) for i, sid in enumerate(ids)]
        ta = time.perf_counter()
        dets = detector.detect(frames)
        tb = time.perf_counter()
        embeddings = embed_rows(tracker, encoder, [f.image for f in frames], dets)
        tracked = tracker.step([StepInput(f.stream, f.seq, d, e, (f.width, f.height)) for f, d, e in zip(frames, dets, embeddings)])
        for f, d in zip(frames, tracked):
            f.detections = d
        tc = time.perf_counter()
        out = analyze.process(frames)
        done = time.perf_counter()
        last_k = k
        if arrival >= measure_from:
            ages += [done - arrival] * n
            counted += n
            loops += 1
            spent += (tb - ta, tc - tb, done - tc)
            alerts += sum(len(f.analytics.alerts) for f in out if f.analytics is not None)
    ms = spent / max(loops, 1) * 1000
    a = np.array(ages) if ages else np.array([np.inf])
    return StreamResult(
        n, counted / plan.window_s, float(np.percentile(a, 50)), float(np.percentile(a, 95)), loops,
        float(ms[0]), float(ms[1]), float(ms[2]), alerts,
    )  # fmt: skip


def bench_streams(
    plan: Plan, pool: list[np.ndarray], detector: Any, deadline: float, log: Callable[[str], None]
) -> tuple[list[StreamResult], str | None, str]:
    """Results for N = 1, 2, 4, ... while the chain keeps up; why the search stopped early, if it did; and the
    appearance CNN's backend."""

    from stages.track.stage import TrackOptions, build_tracker

    # The appearance CNN on the cuda backend on a GPU where the options name a backend (auto picks it too).
    extra = {"backend": "cuda"} if not plan.dry and "backend" in TrackOptions.model_fields else {}
    tracker, encoder = build_tracker(TrackOptions(**extra), str(plan.device))
    backend = getattr(encoder, "backend", "torch")
    results: list[StreamResult] = []
    for n in plan.stream_counts:
        needed = plan.warmup_s + plan.window_s + 10.0
        if time.perf_counter() + needed > deadline:
            return results, f"stopped before N={n}: time budget (--budget) spent", backend
        r = run_streams(n, plan, pool, detector, tracker, encoder)
        results.append(r)
        log(f"  N={n}: {r.processed_fps:.1f} frames/s of {r.target_fps:.0f}, age p95 {r.age_p95_s * 1000:.0f} ms")
        if not r.kept_up:
            break
    return results, None, backend


# -- output ---------------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = [header, *rows]
    out = []
    for row in lines:
        cells = [str(c).ljust(wd) if i == 0 else str(c).rjust(wd) for i, (c, wd) in enumerate(zip(row, widths))]
        out.append(indent + "  ".join(cells).rstrip())
    return "\n".join(out)


def environment(plan: Plan) -> list[str]:
    import torch

    lines = []
    if plan.dry:
        lines.append("DRY RUN on the CPU (no GPU measured): tiny sizes, a check that the code runs; the figures say nothing about a GPU")
        lines.append(f"device: CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    else:
        name = torch.cuda.get_device_name(0)
        mem = torch.cuda.get_device_properties(0).total_memory / 2**30
        lines.append(f"device: {name} ({mem:.0f} GiB), CUDA {torch.version.cuda}, {os.cpu_count()} CPU cores")
    lines.append(f"torch {torch.__version__}, opencv {cv2.__version__}, python {platform.python_version()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny run on the CPU (the default without CUDA)")
    ap.add_argument("--window", type=float, default=None, help="seconds measured per stream count (default 10; dry run 2)")
    ap.add_argument("--max-streams", type=int, default=256, help="largest stream count tried")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds the whole run may take; the stream search stops before")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    deadline = started + args.budget

    import torch

    dry = args.dry_run
    reason = ""
    if not dry and not torch.cuda.is_available():
        dry, reason = True, " (torch.cuda.is_available() is false)"
    plan = make_plan(dry, args.window, args.max_streams)
    sync = make_sync(plan.device)

    def log(msg: str) -> None:
        sys.stdout.flush()
        print(f"[{time.perf_counter() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    print("vidpipe GPU benchmark" + (f": dry run on the CPU{reason}" if plan.dry else ""))
    for line in environment(plan):
        print(line)

    log("decoding vtest.avi")
    native = read_video(max(plan.pool_frames, max(plan.det_batches)))
    pool = resized(native[: plan.pool_frames], plan.stream_size)

    log("detector")
    det_rows, detector = bench_detector(plan, native, sync)
    log("appearance CNN")
    app_rows = bench_appearance(plan, pool[0], sync)
    log("streams")
    stream_rows, stopped, app_backend = bench_streams(plan, pool, detector, deadline, log)

    print()
    print("1. detector (COCO-SSD), end to end per batch (stack, upload, network, NMS, download)")
    print(table(["backend", "precision", "frame", "batch", "ms/batch", "frames/s"], det_rows))
    print()
    print("2. appearance CNN, one embed() call: crops cut on the device, one forward")
    print(table(["backend", "precision", "frame", "crops", "ms median", "ms p90"], app_rows))
    print()
    w, h = plan.stream_size
    print(f"3. streams of {w}x{h} at {STREAM_FPS:.0f} fps: decode (held in memory) -> detect -> track -> analyze, in one loop")
    print(f"   detector: backend {detector.backend}, batch = N; tracker: motion LSTM + appearance CNN (backend {app_backend});"
          " analyze: AnalyzeStage with the vtest analytics zone, line and rules on every stream, alert snapshots included")
    print(f"   window {plan.window_s:.0f} s per N after {plan.warmup_s:.1f} s of warm-up; kept up: frames/s >= 0.95 x target and age p95 < 1 s")
    rows = [
        [str(r.n), f"{r.target_fps:.0f}", f"{r.processed_fps:.1f}", f"{r.age_p50_s * 1000:.0f}", f"{r.age_p95_s * 1000:.0f}",
         f"{r.detect_ms:.1f}", f"{r.track_ms:.1f}", f"{r.analyze_ms:.1f}", str(r.alerts), "yes" if r.kept_up else "no"]
        for r in stream_rows
    ]  # fmt: skip
    print(table(["streams", "target fps", "frames/s", "age p50 ms", "age p95 ms", "detect ms", "track ms", "analyze ms", "alerts", "kept up"], rows))
    if stopped:
        print(f"   {stopped}")
    best = max((r for r in stream_rows if r.kept_up), key=lambda r: r.n, default=None)
    limit = "" if not stream_rows or not stream_rows[-1].kept_up or plan.dry else f" (the largest N tried; --max-streams {args.max_streams})"
    if best is None:
        print(f"streams sustained: 0 at {w}x{h}@{STREAM_FPS:.0f} (N=1 did not keep up)")
    else:
        print(f"streams sustained: {best.n} at {w}x{h}@{STREAM_FPS:.0f}, frame age p95 {best.age_p95_s * 1000:.0f} ms{limit}")
    print(f"total {time.perf_counter() - started:.0f} s" + (" (dry run on the CPU)" if plan.dry else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
