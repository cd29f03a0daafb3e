"""The backend layer: every model (COCO-SSD, the appearance CNN, MTCNN) on every backend against eager torch, on real frames; the export cache.

CUDA cases need a GPU and are skipped without one (nothing here mocks a GPU); bench/gpu.py runs them on a
lent device.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.device import cpu_has_bf16
from pipeline.protocol import Frame
from stages.infer import backend as bk
from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions
from stages.infer.faces.mtcnn import Mtcnn
from stages.infer.options import MtcnnOptions
from stages.track.appearance import AppearanceEncoder
from stages.track.motion_lstm import MotionPredictor
from tools.tracklets import read_frames

SAMPLES = Path(__file__).resolve().parent.parent / "sample_videos"
CPU_BACKENDS = [b for b in ("onnxruntime", "openvino") if bk.available(b)]
ALL = CPU_BACKENDS + (["cuda"] if torch.cuda.is_available() else [])


def _frames(name: str, picks: list[int]) -> list[np.ndarray]:
    return [img for i, img in read_frames(SAMPLES / name, 0, max(picks) + 1) if i in picks]


@pytest.fixture(scope="module")
def real_frames() -> list[np.ndarray]:
    return _frames("vtest.avi", [0, 150, 400, 700]) + _frames("bikes.mp4", [10, 120, 200])


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A detector's output as a CPU float tensor: numpy from a CPU runtime, a tensor from torch or CUDA."""
    return torch.as_tensor(x).float().cpu()


def _as_frames(images: list[np.ndarray]) -> list[Frame]:
    return [Frame("s", i, i / 10, 0.0, im.shape[1], im.shape[0], im) for i, im in enumerate(images)]


@pytest.fixture(scope="module")
def ssd_reference(real_frames: list[np.ndarray]) -> tuple[CocoSsdDetector, list]:
    det = CocoSsdDetector(CocoSsdOptions(backend="torch", device="cpu", score_threshold=0.2))
    return det, [det.detect([f])[0] for f in _as_frames(real_frames)]


@pytest.mark.parametrize("backend", ALL)
def test_coco_ssd_matches_eager_torch(backend: str, real_frames: list[np.ndarray], ssd_reference: tuple) -> None:
    ref_det, ref = ssd_reference
    device = "cuda" if backend == "cuda" else "cpu"
    # fp32 on the CPU: the backends' parity (auto is bf16 on a CPU with bf16 instructions, tested below).
    det = CocoSsdDetector(CocoSsdOptions(backend=backend, device=device, precision="fp32" if device == "cpu" else "auto", score_threshold=0.2))
    assert det.backend == backend
    frames = _as_frames(real_frames)
    # Raw network outputs: every score within 1e-3 (fp16 on CUDA: 1e-2), batched as the stage batches.
    with torch.inference_mode():
        got_scores, got_boxes = det.forward_images([f.image for f in frames[:4]])
        ref_scores, ref_boxes = ref_det.forward_images([f.image for f in frames[:4]])
    tol = 1e-2 if backend == "cuda" else 1e-3
    assert float((_tensor(got_scores) - _tensor(ref_scores)).abs().max()) < tol
    assert float((_tensor(got_boxes) - _tensor(ref_boxes)).abs().max()) < tol
    # After thresholds and NMS: the same detections, frame by frame and in a batch of several frames.
    batched = det.detect(frames)
    total = 0
    for f, r, b in zip(frames, ref, batched):
        (one,) = det.detect([f])
        for got in (one, b):
            assert len(got) == len(r), f"frame {f.seq}: {len(got)} detections, eager torch {len(r)}"
            assert np.array_equal(got.class_ids, r.class_ids)
            np.testing.assert_allclose(got.scores, r.scores, atol=tol)
            np.testing.assert_allclose(got.boxes, r.boxes, atol=0.05 if backend != "cuda" else 1.0)
        total += len(r)
    assert total > 20  # real content: the frames hold people and vehicles


def test_coco_ssd_default_backend_is_the_measured_fastest() -> None:
    det = CocoSsdDetector(CocoSsdOptions(device="cpu"))
    from stages.infer.detectors.coco_ssd import CPU_RUNTIME

    assert det.backend == (CPU_RUNTIME if bk.available(CPU_RUNTIME) else "torch")
    # precision auto on the CPU: bf16 where the CPU computes it natively and OpenVINO runs the network, else fp32.
    assert det.precision == ("bf16" if cpu_has_bf16() and det.backend == "openvino" else "fp32")
    assert CocoSsdDetector(CocoSsdOptions(device="cpu", backend="onnxruntime" if bk.available("onnxruntime") else "torch")).precision == "fp32"
    assert CocoSsdDetector(CocoSsdOptions(device="cpu", precision="fp32")).precision == "fp32"
    # bf16 on the CPU: OpenVINO's bf16 where it is installed (about 1.5x its fp32 here), else torch's autocast;
    # ONNX Runtime has no bf16 on the CPU.
    assert CocoSsdDetector(CocoSsdOptions(device="cpu", precision="bf16")).backend == ("openvino" if bk.available("openvino") else "torch")
    if bk.available("onnxruntime"):
        with pytest.raises(ValueError, match="does not run on onnxruntime"):
            CocoSsdDetector(CocoSsdOptions(device="cpu", precision="bf16", backend="onnxruntime"))


@pytest.mark.skipif(not bk.available("openvino"), reason="openvino is not installed")
def test_coco_ssd_in_bf16_finds_what_fp32_finds(real_frames: list[np.ndarray], ssd_reference: tuple) -> None:
    """bf16 is its own precision, not held to fp32's 1e-3: every fp32 detection at the pipeline's 0.5 is
    found again (same class, IoU >= 0.9) with its score within 0.05 (measured: median 0.003, p99 0.02 on 100
    vtest frames; AP50 on the hand labels within 0.003, bench/detect_ap.py). On a CPU without bf16
    instructions OpenVINO runs fp32 and this holds trivially."""
    from stages.track.association import iou_matrix

    _, ref = ssd_reference
    det = CocoSsdDetector(CocoSsdOptions(device="cpu", precision="bf16", score_threshold=0.2))
    assert (det.backend, det.precision) == ("openvino", "bf16")
    found = total = 0
    for r, got in zip(ref, det.detect(_as_frames(real_frames))):
        keep = r.scores >= 0.5
        if not keep.any():
            continue
        iou = iou_matrix(r.boxes[keep], got.boxes) if len(got) else np.zeros((int(keep.sum()), 0))
        for i in range(int(keep.sum())):
            j = int(iou[i].argmax()) if iou.shape[1] else -1
            ok = j >= 0 and iou[i, j] >= 0.9 and got.class_ids[j] == r.class_ids[keep][i]
            assert not ok or abs(float(got.scores[j]) - float(r.scores[keep][i])) < 0.05
            found += int(ok)
        total += int(keep.sum())
    assert total > 20 and found == total, (found, total)


@pytest.mark.parametrize("backend", ALL)
def test_appearance_matches_eager_torch(backend: str, real_frames: list[np.ndarray], ssd_reference: tuple) -> None:
    _, ref_dets = ssd_reference
    images = real_frames[:3]
    boxes = [d.boxes[:40] for d in ref_dets[:3]]
    assert sum(len(b) for b in boxes) > 10
    device = "cuda" if backend == "cuda" else "cpu"
    ref = AppearanceEncoder(None, device="cpu", precision="float32", backend="torch").embed(images, boxes)
    enc = AppearanceEncoder(None, device=device, precision="float32", backend=backend)
    assert enc.backend == backend
    got = enc.embed(images, boxes)
    tol = 1e-2 if backend == "cuda" else 1e-3
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert float(np.abs(g - r).max()) < tol


@pytest.mark.parametrize("backend", ALL)
def test_motion_lstm_matches_eager_torch(backend: str) -> None:
    """Windows of real-looking tracks (steady walks, gaps, single observations, a glitch box): the predicted
    boxes of every backend within 1e-3 pixels of eager torch's."""
    rng = np.random.default_rng(0)
    n, k = 40, 16
    start = rng.uniform([0, 0], [700, 500], (n, 1, 2))
    step = rng.normal(0, 3, (n, 1, 2)) * np.arange(k)[None, :, None]
    size = rng.uniform([20, 50], [60, 140], (n, 1, 2)) * (1 + rng.normal(0, 0.03, (n, k, 1)))
    boxes = np.concatenate([start + step, start + step + size], 2).astype(np.float32)
    boxes[3, 7] += 300  # a glitch
    ages = np.tile(np.arange(k, 0, -1, dtype=np.float32), (n, 1)) + rng.integers(0, 5, (n, 1))
    valid = rng.random((n, k)) > 0.2
    valid[5, :-1] = False  # one observation only
    valid[:, -1] = True
    ref = MotionPredictor(backend="torch").predict(boxes, ages, valid)
    device = "cuda" if backend == "cuda" else "cpu"
    pred = MotionPredictor(device=device, backend=backend)
    assert pred.backend == ("torch" if backend == "cuda" else backend)
    np.testing.assert_allclose(pred.predict(boxes, ages, valid), ref, atol=1e-3, rtol=0)
    assert MotionPredictor().backend == "onnxruntime"  # the default on a CPU


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


@pytest.mark.skipif(not CPU_BACKENDS, reason="no ONNX runtime installed")
@pytest.mark.parametrize("backend", ALL)
def test_mtcnn_matches_eager_torch(backend: str) -> None:
    # Faces near and far: carphone's driver, vtest's pedestrians (small faces), and a frame with none.
    images = _frames("carphone_pristine.mp4", [0, 60]) + _frames("vtest.avi", [500]) + _frames("bikes.mp4", [10])
    device = torch.device("cuda" if backend == "cuda" else "cpu")
    options = {"score_threshold": 0.7, "min_face_size": 10.0}
    ref = Mtcnn(MtcnnOptions(backend="torch", **options), torch.device("cpu"))
    got = Mtcnn(MtcnnOptions(backend=backend, **options), device)
    tol = 1e-2 if backend == "cuda" else 1e-3
    # Each network on the shapes the cascade gives it: P-Net on two pyramid levels, R-Net and O-Net on crops.
    g = torch.Generator().manual_seed(0)
    for name, shape in (("pnet", (2, 3, 67, 89)), ("pnet", (1, 3, 145, 193)), ("rnet", (37, 3, 24, 24)), ("onet", (5, 3, 48, 48))):
        x = torch.rand(shape, generator=g) * 2 - 1
        with torch.inference_mode():
            want = getattr(ref, name)(x.contiguous(memory_format=torch.channels_last))
            have = getattr(got, name)(x.contiguous(memory_format=torch.channels_last))
        for w, h in zip(want, have):
            assert w.shape == h.shape, name
            assert float((w - h.float().cpu()).abs().max()) < tol, name
    # The whole cascade: the same faces, in one batch of frames of different sizes.
    want_faces = ref.detect_numpy(images)
    have_faces = got.detect_numpy(images)
    assert sum(len(s) for _, s, _ in want_faces) >= 3
    for (wb, ws, wp), (hb, hs, hp) in zip(want_faces, have_faces):
        assert len(hs) == len(ws)
        np.testing.assert_allclose(hs, ws, atol=tol)
        np.testing.assert_allclose(hb, wb, atol=50 * tol)  # pixels: offsets times the box side
        np.testing.assert_allclose(hp, wp, atol=50 * tol)


def test_mtcnn_default_backend_is_the_measured_fastest() -> None:
    from stages.infer.faces.mtcnn import CPU_RUNTIME

    got = Mtcnn(MtcnnOptions(), torch.device("cpu"))
    assert {r.backend for r in (got.pnet, got.rnet, got.onet)} == {CPU_RUNTIME if bk.available(CPU_RUNTIME) else "torch"}


def test_exports_are_cached_by_weights_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDPIPE_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.rand(3, 3, 8, 8)
    r1 = bk.compile_module(model, (x[:1],), name="tiny", backend=CPU_BACKENDS[0])
    files = sorted(tmp_path.glob("tiny-*.onnx"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    np.testing.assert_allclose(r1(x)[0].numpy(), model(x).detach().numpy(), atol=1e-5)
    bk.compile_module(model, (x[:2],), name="tiny", backend=CPU_BACKENDS[0])  # another batch: same export
    assert sorted(tmp_path.glob("tiny-*.onnx")) == files and files[0].stat().st_mtime_ns == mtime
    with torch.no_grad():
        model.conv.bias.add_(1.0)  # new weights: a new export, never the old one
    r3 = bk.compile_module(model, (x[:1],), name="tiny", backend=CPU_BACKENDS[0])
    assert len(list(tmp_path.glob("tiny-*.onnx"))) == 2
    np.testing.assert_allclose(r3(x)[0].numpy(), model(x).detach().numpy(), atol=1e-5)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary files left behind


@pytest.mark.skipif(not bk.available("openvino"), reason="openvino is not installed")
def test_openvino_fixed_batch_runs_any_batch_as_padded_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model compiled at a fixed batch (one shape for OpenVINO, not one per batch size) gives every sample
    what the dynamic model gives it, for batches under, at, between and over the chunk size."""
    monkeypatch.setenv("VIDPIPE_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.rand(37, 3, 8, 8)
    dynamic = bk.compile_module(model, (x[:2],), name="tiny", backend="openvino", threads=1)
    fixed = bk.compile_module(model, (x[:2],), name="tiny", backend="openvino", threads=1, fixed_batch=16)
    assert isinstance(fixed, bk.OpenVinoRunner) and fixed.input_specs[0].shape[0] == 16
    for n in (1, 15, 16, 17, 37):
        got, want = fixed(x[:n].numpy())[0], dynamic(x[:n].numpy())[0]
        assert got.shape == want.shape == (n, *want.shape[1:])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_backend_names_are_checked() -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        bk.resolve_backend("tensorrt-ish", cpu, "onnxruntime")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA device"):
            bk.resolve_backend("cuda", cpu, "onnxruntime")
    assert bk.resolve_backend("auto", cpu, "onnxruntime") in ("onnxruntime", "torch")
    assert bk.resolve_backend("torch", cpu, "openvino") == "torch"


class _NotExportable(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, (4, 1)).flatten(1)  # 6 rows into 4: no ONNX export


@pytest.mark.skipif(not CPU_BACKENDS, reason="no ONNX runtime installed")
def test_a_model_that_cannot_be_exported_runs_in_torch_under_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDPIPE_CACHE_DIR", str(tmp_path))
    x = torch.rand(2, 3, 6, 3)
    runner = bk.compile_module(_NotExportable(), (x,), name="odd", backend="auto", cpu_default=CPU_BACKENDS[0])
    assert runner.backend == "torch"
    np.testing.assert_allclose(runner(x)[0].numpy(), _NotExportable()(x).numpy())
    with pytest.raises(ValueError, match="cannot be exported"):
        bk.compile_module(_NotExportable(), (x,), name="odd", backend=CPU_BACKENDS[0])


def test_coco_ssd_forward_on_rgb_tensors_matches_bgr_frames(real_frames: list[np.ndarray]) -> None:
    det = CocoSsdDetector(CocoSsdOptions(device="cpu", score_threshold=0.2))
    bgr = real_frames[:2]
    rgb = torch.from_numpy(np.stack([im[:, :, ::-1] for im in bgr]).copy())
    with torch.inference_mode():
        s_rgb, b_rgb = det.forward(rgb)
        s_bgr, b_bgr = det.forward_images(bgr)
    assert torch.equal(_tensor(s_rgb), _tensor(s_bgr)) and torch.equal(_tensor(b_rgb), _tensor(b_bgr))
