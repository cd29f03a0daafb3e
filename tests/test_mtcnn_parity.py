"""The MTCNN port (stages.infer.faces.mtcnn) against facenet-pytorch 2.6.0's detections stored in
tests/data/mtcnn_reference.npz (made by tests/data/make_mtcnn_reference.py in a throwaway environment;
facenet-pytorch is not needed here).

The port repeats facenet-pytorch's arithmetic (same crops bit for bit, same NMS), so boxes, landmarks and
probabilities agree to float rounding in the networks: measured at most 6.1e-5 px and 4.2e-7. The
tolerances leave 100x room for other CPUs and torch versions while catching any systematic slip (the
box convention shift is exactly 1 px, a wrong crop moves things by far more than 0.01 px).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pipeline.boxes import batched_nms_torch as batched_nms
from stages.infer.faces.mtcnn import (
    DEFAULT_WEIGHTS,
    Mtcnn,
    MtcnnNets,
    MtcnnOptions,
    _IntegralImages,
    grouped_nms,
    min_overlap,
    pyramid_scales,
)
from tests.data.make_mtcnn_reference import (
    CASES,
    FACTOR,
    THRESHOLDS,
    frame_sha256,
    load_frames,
)
from tools.convert_mtcnn import _FC_INPUT, _RENAMES, check, convert_state

REFERENCE = Path(__file__).resolve().parent / "data" / "mtcnn_reference.npz"
BOX_TOLERANCE = 0.01  # pixels, boxes and landmarks
PROB_TOLERANCE = 1e-4
# facenet-pytorch's boxes are 1-based inclusive; the port reports pixel edges (x1 - 1, y1 - 1, x2, y2).
TO_PIXEL_EDGES = np.array([1, 1, 0, 0], np.float32)

Faces = tuple[np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        ref = {k: data[k] for k in data.files}
    assert [(str(v), int(i), int(m)) for v, i, m in zip(ref["video"], ref["frame_index"], ref["min_face_size"])] == list(CASES)
    assert tuple(ref["thresholds"]) == THRESHOLDS and float(ref["factor"]) == FACTOR
    return ref


@pytest.fixture(scope="module")
def frames(reference: dict[str, np.ndarray]) -> list[np.ndarray | None]:
    """Each case's frame as BGR (what the pipeline carries); None where the video is not in sample_videos/."""
    images = load_frames()
    for (video, index, _), image, digest in zip(CASES, images, reference["frame_sha256"]):
        if image is not None:
            assert frame_sha256(image) == digest, f"{video} frame {index} decodes differently from the reference's"
    return [None if im is None else np.ascontiguousarray(im[..., ::-1]) for im in images]


def _expected(reference: dict[str, np.ndarray], case: int) -> Faces:
    start = np.concatenate([[0], np.cumsum(reference["count"])])
    s = slice(start[case], start[case + 1])
    return reference["boxes"][s] - TO_PIXEL_EDGES, reference["probs"][s], reference["landmarks"][s]


def _detector(min_face_size: int, **options: object) -> Mtcnn:
    o = MtcnnOptions(min_face_size=min_face_size, thresholds=THRESHOLDS, scale_factor=FACTOR, score_threshold=0, **options)
    return Mtcnn(o, torch.device("cpu"))


@pytest.fixture(scope="module")
def detectors() -> dict[int, Mtcnn]:
    return {m: _detector(m) for m in sorted({m for _, _, m in CASES})}


def _assert_same_faces(
    got: Faces, want: Faces, label: str, tolerance: float = BOX_TOLERANCE, prob_tolerance: float = PROB_TOLERANCE
) -> None:
    boxes, scores, marks = got
    rb, rs, rl = want
    assert len(scores) == len(rs), f"{label}: {len(scores)} faces {scores}, reference {len(rs)} {rs}"
    unmatched = list(range(len(scores)))
    for j in range(len(rs)):  # nearest box; the reference is in decreasing probability like the port
        k = min(unmatched, key=lambda k: np.abs(boxes[k] - rb[j]).max())
        unmatched.remove(k)
        assert np.abs(boxes[k] - rb[j]).max() <= tolerance, (label, boxes[k], rb[j])
        assert abs(scores[k] - rs[j]) <= prob_tolerance, (label, scores[k], rs[j])
        assert np.abs(marks[k] - rl[j]).max() <= tolerance, (label, marks[k], rl[j])


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{v}:{i}@{m}" for v, i, m in CASES])
def test_matches_facenet_pytorch(
    case: int, reference: dict[str, np.ndarray], frames: list[np.ndarray | None], detectors: dict[int, Mtcnn]
) -> None:
    video, _, min_face = CASES[case]
    if frames[case] is None:
        pytest.skip(f"sample_videos/{video} is not present")
    got = detectors[min_face].detect_numpy([frames[case]])[0]
    _assert_same_faces(got, _expected(reference, case), f"{CASES[case]}")
    assert [a.dtype for a in got] == [np.float32] * 3
    assert got[0].shape == (len(got[1]), 4) and got[2].shape == (len(got[1]), 5, 2)
    assert (np.diff(got[1]) <= 0).all()


def test_reference_covers_faces_and_empty_frames(reference: dict[str, np.ndarray]) -> None:
    counts = dict(zip(CASES, reference["count"].tolist()))
    assert all(counts[c] == 1 for c in CASES if c[0] == "carphone_pristine.mp4")
    assert counts[("vtest.avi", 0, 20)] == counts[("vtest.avi", 500, 20)] == 0
    assert sum(reference["count"]) >= 10


def test_one_mixed_batch_matches_single_frames(
    reference: dict[str, np.ndarray], frames: list[np.ndarray | None], detectors: dict[int, Mtcnn]
) -> None:
    """Frames of three sizes in one call (P-Net batched per size, one crop gather per stage) give each frame's faces."""
    cases = [k for k, (_, _, m) in enumerate(CASES) if m == 20 and frames[k] is not None]
    got = detectors[20].detect([torch.from_numpy(frames[k]) for k in cases])  # type: ignore[arg-type]
    assert len(got) == len(cases)
    for k, (b, s, p) in zip(cases, got):
        _assert_same_faces((b.numpy(), s.numpy(), p.numpy()), _expected(reference, k), f"batched {CASES[k]}", 1e-3, 1e-5)


def test_score_threshold_and_max_faces(frames: list[np.ndarray | None]) -> None:
    k = CASES.index(("Megamind.avi", 165, 20))
    if frames[k] is None:
        pytest.skip("sample_videos/Megamind.avi is not present")
    frame = frames[k]
    assert len(_detector(20).detect_numpy([frame])[0][1]) == 2  # 0.9945 and 0.7765
    b, s, p = Mtcnn(MtcnnOptions(), torch.device("cpu")).detect_numpy([frame])[0]  # default score_threshold 0.9
    assert s.tolist() == pytest.approx([0.9945], abs=1e-3)
    b1, s1, p1 = _detector(20, max_faces=1).detect_numpy([frame])[0]
    assert len(s1) == 1 and s1[0] == pytest.approx(0.9945, abs=1e-3)
    assert np.array_equal(b1[0], b[0]) and np.array_equal(p1[0], p[0])


def test_landmarks_lie_in_their_boxes(frames: list[np.ndarray | None], detectors: dict[int, Mtcnn]) -> None:
    for (video, _, m), frame in zip(CASES, frames):
        if frame is None or m != 20:
            continue
        for boxes, _, marks in detectors[m].detect_numpy([frame]):
            for b, lm in zip(boxes, marks):
                assert (lm >= b[:2] - 1).all() and (lm <= b[2:] + 1).all(), (video, b, lm)
                assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left eye / mouth corner left of the right ones
                assert lm[:2, 1].max() < lm[3:, 1].min()  # eyes above the mouth


def test_empty_and_tiny_frames() -> None:
    det = Mtcnn(MtcnnOptions(), torch.device("cpu"))
    frames = [np.zeros((10, 10, 3), np.uint8), np.full((120, 160, 3), 128, np.uint8), np.zeros((19, 400, 3), np.uint8)]
    out = det.detect_numpy(frames)
    assert len(out) == 3
    for b, s, p in out:
        assert b.shape == (0, 4) and s.shape == (0,) and p.shape == (0, 5, 2)
        assert b.dtype == s.dtype == p.dtype == np.float32
    assert det.detect([]) == []


def test_rejects_bad_input() -> None:
    det = Mtcnn(MtcnnOptions(), torch.device("cpu"))
    with pytest.raises(ValueError, match="uint8"):
        det.detect([torch.zeros((20, 20, 3), dtype=torch.float32)])
    with pytest.raises(ValueError, match="uint8"):
        det.detect([torch.zeros((20, 20), dtype=torch.uint8)])


def test_options_validate() -> None:
    o = MtcnnOptions()
    assert (o.min_face_size, o.thresholds, o.scale_factor, o.nms_thresholds) == (20, (0.6, 0.7, 0.7), 0.709, (0.5, 0.7, 0.7, 0.7))
    assert MtcnnOptions.model_validate({"thresholds": [0.5, 0.6, 0.8]}).thresholds == (0.5, 0.6, 0.8)
    bad_options = [
        {"extra": 1},
        {"thresholds": [0.6, 0.7]},
        {"thresholds": [0.6, 0.7, 1.0]},
        {"min_face_size": 2},
        {"scale_factor": 1.0},
        {"max_faces": 0},
    ]
    for bad in bad_options:
        with pytest.raises(ValidationError):
            MtcnnOptions.model_validate(bad)
    with pytest.raises(ValidationError):
        o.min_face_size = 40  # type: ignore[misc]
    assert {k: f.description for k, f in MtcnnOptions.model_fields.items() if not f.description} == {}


def test_pyramid_like_facenet_pytorch() -> None:
    scales = pyramid_scales(144, 176, 20, 0.709)
    assert len(scales) == 6 and scales[0] == 0.6  # down to 144 * 0.1075 = 15.5 >= 12
    assert [(int(144 * s + 1), int(176 * s + 1)) for s in scales] == [(87, 106), (62, 75), (44, 54), (31, 38), (22, 27), (16, 19)]
    assert pyramid_scales(19, 400, 20, 0.709) == []


def test_integral_crops_equal_area_interpolation() -> None:
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g) for h, w in [(144, 176), (61, 90)]]
    integral = _IntegralImages(images)
    k = 40
    image = torch.randint(0, 2, (k,), generator=g)
    hw = torch.tensor([im.shape[:2] for im in images])[image]
    y0 = (torch.rand(k, generator=g) * hw[:, 0]).long()
    x0 = (torch.rand(k, generator=g) * hw[:, 1]).long()
    y1 = torch.minimum(y0 + 1 + (torch.rand(k, generator=g) * 150).long(), hw[:, 0])
    x1 = torch.minimum(x0 + 1 + (torch.rand(k, generator=g) * 150).long(), hw[:, 1])
    for size in (24, 48):
        crops = integral.crops(image, x0, y0, x1, y1, size, channels=(2, 1, 0))
        for j in range(k):
            rgb = images[int(image[j])].flip(-1).permute(2, 0, 1)[None].float()
            want = torch.nn.functional.interpolate(rgb[:, :, y0[j] : y1[j], x0[j] : x1[j]], size=(size, size), mode="area")
            assert torch.equal(crops[j], want[0])


def test_weights_file_and_conversion_layout() -> None:
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    assert sorted(state) == ["onet", "pnet", "rnet"]
    nets = MtcnnNets()
    for name in ("pnet", "rnet", "onet"):
        getattr(nets, name).load_state_dict(state[name], strict=True)
    assert sum(t.numel() for sd in state.values() for t in sd.values()) == 495_850
    # The converter's rearrangements, on random tensors in facenet-pytorch's layout: the converted
    # module must compute what the upstream layout computes (check() raises otherwise).
    g = torch.Generator().manual_seed(1)
    for net, renames in _RENAMES.items():
        module = getattr(MtcnnNets(), net)
        upstream = {}
        for ours, theirs in renames:
            for suffix in ("weight", "bias"):
                key = f"{ours}.{suffix}"
                if key in module.state_dict():
                    shape = module.state_dict()[key].shape
                    upstream[f"{theirs}.{suffix}"] = torch.randn(shape, generator=g) * 0.1
        if net in _FC_INPUT:  # checked: the permutation is not the identity
            dense = upstream["dense4.weight" if net == "rnet" else "dense5.weight"]
            assert not torch.equal(convert_state(net, upstream)["fc.weight"], dense)
        assert check(net, upstream, convert_state(net, upstream)) < 1e-4


def _random_boxes(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g) * 200
    sizes = torch.rand(n, 2, generator=g) * 60 + 1
    boxes = torch.cat((centres - sizes / 2, centres + sizes / 2), dim=1).floor()  # integer corners, as P-Net's
    scores = (torch.rand(n, generator=g) * 100).round() / 100  # ties occur
    return boxes, scores, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("block", [1, 7, 64, 1024])
@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_grouped_nms_is_batched_nms_in_blocks(block: int, threshold: float) -> None:
    for seed in range(4):
        boxes, scores, groups = _random_boxes(seed, 400)
        want = batched_nms(boxes, scores, groups, threshold)
        assert torch.equal(grouped_nms(boxes, scores, groups, threshold, block=block), want)


def _inclusive_area(x: np.ndarray) -> np.ndarray:
    return (x[..., 2] - x[..., 0] + 1) * (x[..., 3] - x[..., 1] + 1)


def _numpy_min_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float) -> set[int]:
    """Greedy NMS with overlap = intersection / smaller area, sizes x2 - x1 + 1 (MTCNN's 'Min' method)."""
    kept: set[int] = set()
    for grp in np.unique(groups):
        idx = np.flatnonzero(groups == grp)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        while len(idx):
            best, idx = idx[0], idx[1:]
            kept.add(int(best))
            b, o = boxes[best], boxes[idx]
            inter = np.prod(np.clip(np.minimum(b[2:], o[:, 2:]) - np.maximum(b[:2], o[:, :2]) + 1, 0, None), axis=1)
            idx = idx[inter / np.minimum(_inclusive_area(b), _inclusive_area(o)) <= threshold]
    return kept


@pytest.mark.parametrize("block", [5, 1024])
def test_min_overlap_nms_matches_brute_force(block: int) -> None:
    for seed in range(4):
        boxes, scores, groups = _random_boxes(seed, 300)
        keep = grouped_nms(boxes, scores, groups, 0.7, overlap=min_overlap, block=block)
        assert set(keep.tolist()) == _numpy_min_nms(boxes.double().numpy(), scores.numpy(), groups.numpy(), 0.7)
        assert (torch.diff(scores[keep]) <= 0).all()  # highest score first


def test_frame_views_work_like_copies(frames: list[np.ndarray | None], detectors: dict[int, Mtcnn]) -> None:
    """Crops of a frame (strided views, as the faces runner passes) give the faces of contiguous copies."""
    k = CASES.index(("Megamind.avi", 60, 20))
    if frames[k] is None:
        pytest.skip("sample_videos/Megamind.avi is not present")
    full = torch.from_numpy(frames[k])  # type: ignore[arg-type]
    views = [full[100:460, 150:600], full[:, 400:]]
    got = detectors[20].detect(views)
    want = detectors[20].detect([v.contiguous() for v in views])
    for (b, s, p), (wb, ws, wp) in zip(got, want):
        assert len(s) >= 1 and torch.equal(b, wb) and torch.equal(s, ws) and torch.equal(p, wp)
