"""Semi-synthetic tracking sequences (tools/synthetic.py): deterministic, and the ground truth
matches what is drawn."""

import dataclasses

import cv2
import numpy as np
import pytest

from pipeline.categories import category_id
from tools import synthetic as syn


@pytest.fixture(scope="module")
def crossing() -> syn.SyntheticSequence:
    return syn.make_sequence(syn.crossing_spec())


@pytest.fixture(scope="module")
def busy() -> syn.SyntheticSequence:
    # Everything at once, kept short: vehicles, placed occluders, crossings, camera-rate changes.
    spec = syn.SequenceSpec("busy", seed=3, n_frames=90, n_people=8, n_vehicles=3, crossings=2, occluders=3,
                            rate_changes=True, occluder_passes=1)
    return syn.make_sequence(spec)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_same_spec_gives_the_same_bytes(crossing):
    again = syn.make_sequence(syn.crossing_spec())
    assert len(again.frames) == len(crossing.frames) == syn.crossing_spec().n_frames
    assert all(np.array_equal(a, b) for a, b in zip(crossing.frames, again.frames))
    assert np.array_equal(again.gt, crossing.gt)
    other = syn.make_sequence(dataclasses.replace(syn.crossing_spec(), seed=syn.crossing_spec().seed + 1))
    assert not np.array_equal(other.gt, crossing.gt)


def test_crossing_pair_one_hides_the_other_briefly(crossing):
    gt = crossing.gt
    ids = np.unique(gt[:, 1])
    assert len(ids) == 2
    by_frame = {}
    for row in gt:
        by_frame.setdefault(int(row[0]), {})[int(row[1])] = row
    both = sorted(f for f, r in by_frame.items() if len(r) == 2)
    overlapping = [f for f in both
                   if _iou(by_frame[f][ids[0]][2:6], by_frame[f][ids[1]][2:6]) > 0.2
                   and min(by_frame[f][ids[0]][6], by_frame[f][ids[1]][6]) < 1.0]
    assert overlapping, "the two walkers never overlap with one partly hidden"
    first, last = overlapping[0], overlapping[-1]
    assert last - first < 20, "the occlusion should be brief"
    clear = [f for f in both if min(by_frame[f][ids[0]][6], by_frame[f][ids[1]][6]) > 0.95]
    assert any(f < first for f in clear) and any(f > last for f in clear)
    # The nearer one (lower feet) is drawn in front: it is the one that stays fully visible.
    f = min(overlapping, key=lambda f: min(by_frame[f][ids[0]][6], by_frame[f][ids[1]][6]))
    near, far = sorted(by_frame[f].values(), key=lambda r: -r[5])
    assert near[6] > far[6]


@pytest.mark.parametrize("name", ["crossing", "busy"])
def test_gt_boxes_are_inside_the_frame_and_well_formed(name, request):
    seq = request.getfixturevalue(name)
    W, H = seq.spec.size
    gt = seq.gt
    assert gt.dtype == np.float64 and gt.shape[1] == 8 and len(gt) > 0
    f, tid, x1, y1, x2, y2, vis, cls = gt.T
    assert f.min() >= 0 and f.max() < len(seq.frames)
    assert tid.min() >= 1
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= W).all() and (y2 <= H).all()
    assert (x2 > x1).all() and (y2 > y1).all()
    assert ((vis >= 0) & (vis <= 1)).all()
    assert set(np.unique(cls).astype(int)) <= {category_id("person"), category_id("car")}
    assert len({(int(a), int(b)) for a, b in zip(f, tid)}) == len(gt), "one row per object per frame"
    for frame in seq.frames:
        assert frame.shape == (H, W, 3) and frame.dtype == np.uint8


def test_boxes_sit_on_the_drawn_objects(crossing):
    # Against the empty background: the frame changes inside visible boxes and hardly anywhere else.
    spec = crossing.spec
    x, y, w, h = spec.view
    bg = syn.sprite_bank().background[y:y + h, x:x + w].astype(np.int16)
    for i in range(0, len(crossing.frames), 6):
        diff = np.abs(crossing.frames[i].astype(np.int16) - bg).max(axis=2)
        outside = np.ones(diff.shape, bool)
        for _, _, x1, y1, x2, y2, vis, _ in crossing.gt[crossing.gt[:, 0] == i]:
            x1, y1, x2, y2 = int(x1), int(y1), int(x2), int(y2)
            outside[max(0, y1 - 3):y2 + 6, max(0, x1 - 3):x2 + 3] = False  # plus the contact shadow
            if vis > 0.8:
                assert diff[y1:y2, x1:x2].mean() > 15
        assert diff[outside].mean() < 8


def test_rate_changes_drop_frames(busy):
    dt = np.round(np.diff(busy.times) * busy.spec.fps).astype(int)
    assert set(dt) <= {1, 2, 4} and {2, 4} & set(dt)
    assert busy.info["occluders"], "placed and scene occluders are listed"


def test_trajectories_have_short_gaps_and_finite_boxes_elsewhere():
    trs = syn.trajectories(seed=5, n=60)
    assert len(trs) == 60
    again = syn.trajectories(seed=5, n=60)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(trs, again))
    gaps = 0
    for t in trs:
        assert t.ndim == 2 and t.shape[1] == 4 and len(t) >= 20
        nan = np.isnan(t)
        assert (nan.any(axis=1) == nan.all(axis=1)).all(), "a row is either all NaN or all finite"
        assert not nan[0].any() and not nan[-1].any()
        fin = t[~nan[:, 0]]
        assert (fin[:, 2] > fin[:, 0]).all() and (fin[:, 3] > fin[:, 1]).all()
        assert (fin[:, 0] >= 0).all() and (fin[:, 2] <= 768).all() and (fin[:, 3] <= 576).all()
        for start, length in syn._runs(nan[:, 0]):
            assert 3 <= length <= 15
            gaps += 1
    assert gaps >= 10


def test_write_mot(tmp_path, crossing):
    syn.write_mot(crossing, tmp_path)
    root = tmp_path / crossing.spec.name
    lines = (root / "gt" / "gt.txt").read_text().splitlines()
    assert len(lines) == len(crossing.gt)
    first = lines[0].split(",")
    assert len(first) == 9 and int(first[0]) == int(crossing.gt[0, 0]) + 1 and first[6] == "1"
    cap = cv2.VideoCapture(str(root / "img.avi"))
    n = 0
    while cap.grab():
        n += 1
    assert n == len(crossing.frames)
