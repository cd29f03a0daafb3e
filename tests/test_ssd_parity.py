"""The PyTorch COCO-SSD port against the ONNX reference outputs stored in tests/data/ssd_reference.npz.

Only committed files are needed: the converted weights, the stored reference outputs, and the
frames of sample_videos/ (decoded again, and checked by sha256 against the ones the reference saw).
Regenerate the reference with tests/data/make_ssd_reference.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.boxes import batched_nms_torch as batched_nms
from pipeline.boxes import nms_torch as nms
from pipeline.boxes import select_detections_torch as select_detections
from stages.infer.ssd.anchors import generate_anchors
from stages.infer.ssd.model import DEFAULT_WEIGHTS, load_model
from tests.data.make_ssd_reference import FRAMES, frame_sha256, load_frames

REFERENCE = Path(__file__).resolve().parent / "data" / "ssd_reference.npz"
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def frames(reference: dict[str, np.ndarray]) -> list[np.ndarray]:
    images = load_frames()
    assert [(str(v), int(i)) for v, i in zip(reference["video"], reference["frame_index"])] == list(FRAMES)
    for (video, index), image, digest in zip(FRAMES, images, reference["frame_sha256"]):
        assert frame_sha256(image) == digest, f"{video} frame {index} decodes differently from the reference's"
    return images


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model(DEFAULT_WEIGHTS)


@pytest.fixture(scope="module")
def outputs(model: torch.nn.Module, frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    scores, boxes = [], []
    with torch.inference_mode():
        for image in frames:  # the two videos differ in size, so one frame at a time
            s, b = model(torch.from_numpy(image)[None])
            scores.append(s[0].numpy())
            boxes.append(b[0].numpy())
    return np.stack(scores), np.stack(boxes)


def test_output_layout(outputs: tuple[np.ndarray, np.ndarray]) -> None:
    scores, boxes = outputs
    assert scores.shape == (len(FRAMES), 1917, 90) and scores.dtype == np.float32
    assert boxes.shape == (len(FRAMES), 1917, 4) and boxes.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize("i", range(len(FRAMES)), ids=[f"{v}:{n}" for v, n in FRAMES])
def test_raw_outputs_match_reference(
    i: int, outputs: tuple[np.ndarray, np.ndarray], reference: dict[str, np.ndarray]
) -> None:
    scores, boxes = outputs
    score_diff = np.abs(scores[i] - reference["scores"][i]).max()
    box_diff = np.abs(boxes[i] - reference["boxes"][i]).max()
    assert score_diff <= TOLERANCE and box_diff <= TOLERANCE, (score_diff, box_diff)


def _detections(scores: np.ndarray, boxes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    found = select_detections(torch.from_numpy(scores), torch.from_numpy(boxes), 0.5, 0.5)
    return [(b.numpy(), s.numpy(), c.numpy()) for b, s, c in found]


def test_detections_match_reference(
    outputs: tuple[np.ndarray, np.ndarray], reference: dict[str, np.ndarray]
) -> None:
    ours = _detections(*outputs)
    theirs = _detections(reference["scores"], reference["boxes"])
    for (video, index), (b, s, c), (rb, rs, rc) in zip(FRAMES, ours, theirs):
        assert len(rc), f"{video}:{index}: the reference has no detection to compare"
        assert len(c) == len(rc), f"{video}:{index}: {sorted(c + 1)} vs reference {sorted(rc + 1)}"
        unmatched = list(range(len(c)))
        for j in range(len(rc)):
            match = [
                k
                for k in unmatched
                if c[k] == rc[j] and np.abs(b[k] - rb[j]).max() <= TOLERANCE and abs(s[k] - rs[j]) <= TOLERANCE
            ]
            assert match, f"{video}:{index}: reference detection {rc[j] + 1} {rs[j]:.4f} {rb[j]} not found"
            unmatched.remove(match[0])


def test_first_vtest_frame_finds_people_and_parked_cars(outputs: tuple[np.ndarray, np.ndarray]) -> None:
    (_, scores, columns) = _detections(outputs[0][:1], outputs[1][:1])[0]
    coco_ids = columns + 1
    assert sorted(coco_ids.tolist()) == [1, 1, 1, 3, 3]  # 3 people, 2 cars
    assert np.allclose(sorted(scores[coco_ids == 1]), [0.9254677, 0.9274312, 0.9452378], atol=TOLERANCE)
    assert np.allclose(sorted(scores[coco_ids == 3]), [0.7603482, 0.8291792], atol=TOLERANCE)


def test_batch_and_channels_last_agree(model: torch.nn.Module, frames: list[np.ndarray]) -> None:
    batch = torch.from_numpy(np.stack(frames[:3]))  # the three vtest frames share a size
    fast = load_model(DEFAULT_WEIGHTS, channels_last=True)
    with torch.inference_mode():
        single = [model(batch[i : i + 1]) for i in range(3)]
        batched = model(batch)
        cl = fast(batch)
    for i in range(3):
        for out in (batched, cl):
            assert torch.allclose(out[0][i], single[i][0][0], atol=1e-5)
            assert torch.allclose(out[1][i], single[i][1][0], atol=1e-5)


def test_anchor_generator_reproduces_the_graph_constant(model: torch.nn.Module) -> None:
    assert torch.allclose(generate_anchors(), model.anchors, rtol=0, atol=1e-6)


def _area(x: np.ndarray) -> np.ndarray:
    return np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)


def _numpy_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float) -> set[int]:
    """Textbook greedy NMS, one group at a time, in float64."""
    kept: set[int] = set()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        while len(idx):
            best, idx = idx[0], idx[1:]
            kept.add(int(best))
            b = boxes[best]
            o = boxes[idx]
            inter = np.clip(np.minimum(b[2:], o[:, 2:]) - np.maximum(b[:2], o[:, :2]), 0, None).prod(axis=1)
            union = _area(b) + _area(o) - inter
            iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
            idx = idx[iou <= threshold]
    return kept


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_brute_force(seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    # Boxes crowded into a small area so that long suppression chains occur; some degenerate.
    centres = rng.uniform(0, 1, (n, 2))
    sizes = rng.uniform(0.0, 0.5, (n, 2)) * (rng.uniform(0, 1, (n, 1)) > 0.05)
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    scores = np.round(rng.uniform(0, 1, n), 2).astype(np.float32)  # rounded: ties occur
    groups = rng.integers(0, 4, n)
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups), threshold)
    assert set(keep.tolist()) == _numpy_nms(boxes.astype(np.float64), scores, groups, threshold)
    assert (np.diff(scores[keep.numpy()]) <= 0).all()
    single = nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)
    assert set(single.tolist()) == _numpy_nms(boxes.astype(np.float64), scores, np.zeros(n, np.int64), threshold)


def test_nms_empty() -> None:
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert [len(c) for _, _, c in select_detections(torch.zeros(2, 1917, 90), torch.zeros(2, 1917, 4))] == [0, 0]
