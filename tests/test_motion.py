"""The tracker's motion models: the constant-velocity Kalman filter and the bundled motion LSTM."""

import numpy as np
import pytest

from stages.track.kalman import KalmanBoxFilter, kalman_predict, xyah_to_xyxy, xyxy_to_xyah
from stages.track.motion_lstm import DEFAULT_WEIGHTS, MotionPredictor


def constant_velocity(n: int, v=(3.0, 1.0), start=(100.0, 50.0), size=(40.0, 80.0)) -> np.ndarray:
    """[n, 4] xyxy boxes moving v pixels per frame."""
    t = np.arange(n, dtype=np.float64)[:, None]
    tl = np.asarray(start) + t * np.asarray(v)
    return np.concatenate([tl, tl + np.asarray(size)], 1)


def window(track: np.ndarray, target: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictor inputs ([1, k, ...]) from the last k boxes of `track`, for the frame index `target`."""
    frames = np.arange(len(track))[-k:]
    return track[frames][None].astype(np.float32), (target - frames)[None].astype(np.float32), np.ones((1, k), bool)


def centre_error(pred: np.ndarray, true: np.ndarray) -> float:
    c = lambda b: (b[..., :2] + b[..., 2:]) / 2  # noqa: E731
    return float(np.linalg.norm(c(pred) - c(true)) / (true[..., 3] - true[..., 1]))


def bytetrack_reference(track: np.ndarray) -> np.ndarray:
    """One track through ByteTrack's per-track filter equations, written out plainly (frame by frame)."""
    wp, wv = 1 / 20, 1 / 160
    motion = np.eye(8)
    motion[:4, 4:] = np.eye(4)
    z = xyxy_to_xyah(track)
    h = z[0, 3]
    mean = np.r_[z[0], np.zeros(4)]
    cov = np.diag(np.square([2 * wp * h, 2 * wp * h, 1e-2, 2 * wp * h, 10 * wv * h, 10 * wv * h, 1e-5, 10 * wv * h]))
    for m in list(z[1:]) + [None]:
        h = mean[3]
        q = np.diag(np.square([wp * h, wp * h, 1e-2, wp * h, wv * h, wv * h, 1e-5, wv * h]))
        mean, cov = motion @ mean, motion @ cov @ motion.T + q
        if m is None:
            break
        h = mean[3]
        s = cov[:4, :4] + np.diag(np.square([wp * h, wp * h, 1e-1, wp * h]))
        gain = cov[:, :4] @ np.linalg.inv(s)
        mean = mean + gain @ (m - mean[:4])
        cov = cov - gain @ s @ gain.T
    return xyah_to_xyxy(mean[:4])


def test_kalman_converges_on_constant_velocity() -> None:
    track = constant_velocity(41)
    pred = kalman_predict(*window(track[:40], 40, 40))
    assert pred.shape == (1, 4) and pred.dtype == np.float32
    assert centre_error(pred[0], track[40]) < 0.01
    # Across a gap it keeps extrapolating the velocity.
    pred = kalman_predict(track[None, :30], (40 - np.arange(30))[None], np.ones((1, 30), bool))
    assert centre_error(pred[0], track[40]) < 0.02


def test_kalman_matches_bytetrack_equations() -> None:
    rng = np.random.default_rng(0)
    tracks = [constant_velocity(12, v=rng.normal(size=2) * 3) + rng.normal(size=(12, 4)) for _ in range(3)]
    boxes = np.stack(tracks)
    got = kalman_predict(boxes, np.tile(np.arange(12, 0, -1), (3, 1)), np.ones((3, 12), bool))
    want = np.stack([bytetrack_reference(t) for t in tracks])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_kalman_bank_updates_a_subset() -> None:
    kf = KalmanBoxFilter()
    kf.initiate(xyxy_to_xyah(np.array([[0, 0, 10, 20], [100, 100, 120, 140]], float)))
    kf.predict()
    before = kf.mean.copy()
    kf.update(np.array([1]), xyxy_to_xyah(np.array([[104, 100, 124, 140]], float)))
    np.testing.assert_array_equal(kf.mean[0], before[0])
    assert kf.mean[1, 0] > before[1, 0] and kf.mean[1, 4] > 0  # moved towards the measurement, gained velocity
    assert kf.gating_distance(None, xyxy_to_xyah(np.array([[0, 0, 10, 20]], float))).shape == (2, 1)


def test_kalman_padding_and_empty() -> None:
    track = constant_velocity(10)
    boxes = np.concatenate([np.zeros((4, 4)), track[:6]])[None]
    valid = np.r_[np.zeros(4, bool), np.ones(6, bool)][None]
    ages = np.r_[np.ones(4), 7 - np.arange(1, 7)][None]
    padded = kalman_predict(boxes, ages, valid)
    plain = kalman_predict(track[None, :6], ages[:, 4:], valid[:, 4:])
    np.testing.assert_allclose(padded, plain, atol=1e-4)
    assert kalman_predict(np.zeros((0, 5, 4)), np.zeros((0, 5)), np.zeros((0, 5), bool)).shape == (0, 4)


@pytest.fixture(scope="module")
def lstm() -> MotionPredictor:
    if not DEFAULT_WEIGHTS.exists():
        pytest.skip("no bundled motion weights: run python -m tools.train_motion")
    return MotionPredictor()


def test_lstm_constant_velocity(lstm: MotionPredictor) -> None:
    k = lstm.history
    # Walking speed (~0.05 heights per frame) and faster, several directions.
    for v in [(3.0, 1.0), (-4.0, 0.0), (0.0, 6.0), (8.0, -2.0)]:
        track = constant_velocity(k + 1, v=v)
        pred = lstm.predict(*window(track[:k], k, k))
        assert pred.shape == (1, 4) and pred.dtype == np.float32
        # 0.04: trained on the tracker's own histories, where fast vertical box motion is often a merge or a
        # cut box, the model extrapolates clean vertical motion a little short (0.037 heights at 6 px a frame).
        assert centre_error(pred[0], track[k]) < 0.04, v
        sizes = pred[0, 2:] - pred[0, :2]
        np.testing.assert_allclose(sizes, [40, 80], rtol=0.05)


def test_lstm_keeps_a_still_box_still(lstm: MotionPredictor) -> None:
    # Parked cars and standing people: no drift, also from a short history and across a gap.
    for box in ([640, 42, 718, 102], [100, 100, 130, 180], [100, 100, 300, 200]):
        for n in (2, 4, lstm.history):
            for horizon in (1, 8):
                boxes = np.tile(np.array(box, np.float32), (1, n, 1))
                ages = (np.arange(n, 0, -1) + horizon - 1)[None].astype(np.float32)
                pred = lstm.predict(boxes, ages, np.ones((1, n), bool))
                assert centre_error(pred[0], boxes[0, -1]) < 0.03, (box, n, horizon)
                np.testing.assert_allclose(pred[0, 2:] - pred[0, :2], boxes[0, -1, 2:] - boxes[0, -1, :2], rtol=0.05)


def test_lstm_extrapolates_across_a_gap(lstm: MotionPredictor) -> None:
    k = lstm.history
    track = constant_velocity(k + 6, v=(3.0, 1.0))
    one = lstm.predict(*window(track[:k], k, k))[0]
    gap = lstm.predict(*window(track[:k], k + 5, k))[0]  # 5 frames unobserved before the target
    assert gap[0] - one[0] > 3 * 3.0  # further along x, by several frames' motion
    assert centre_error(gap, track[k + 5]) < 0.1


def test_lstm_translation_and_scale_consistent(lstm: MotionPredictor) -> None:
    rng = np.random.default_rng(1)
    k = lstm.history
    boxes = np.stack([constant_velocity(k, v=rng.normal(size=2) * 4) + rng.normal(size=(k, 4)) for _ in range(5)])
    ages = np.tile(np.arange(k, 0, -1), (5, 1)).astype(np.float32) + rng.integers(0, 3, size=(5, 1))
    valid = np.ones((5, k), bool)
    base = lstm.predict(boxes.astype(np.float32), ages, valid)
    shift = np.array([250.0, -40.0, 250.0, -40.0])
    moved = lstm.predict((boxes * 2.5 + shift).astype(np.float32), ages, valid)
    np.testing.assert_allclose(moved, base * 2.5 + shift, rtol=1e-4, atol=1e-2)


def test_lstm_edge_cases(lstm: MotionPredictor) -> None:
    k = lstm.history
    empty = lstm.predict(np.zeros((0, k, 4), np.float32), np.zeros((0, k), np.float32), np.zeros((0, k), bool))
    assert empty.shape == (0, 4) and empty.dtype == np.float32
    # A single observation: its box; front padding is ignored.
    boxes = np.zeros((2, k, 4), np.float32)
    boxes[:, -1] = [[10, 20, 30, 60], [300, 200, 340, 290]]
    boxes[1, :-1] = 1e4  # padding content must not matter
    valid = np.zeros((2, k), bool)
    valid[:, -1] = True
    ages = np.ones((2, k), np.float32)
    ages[1, -1] = 4
    np.testing.assert_allclose(lstm.predict(boxes, ages, valid), boxes[:, -1])
    # Shorter and longer windows than the model's history.
    track = constant_velocity(2 * k + 1)
    for n in (2, 5, 2 * k):
        pred = lstm.predict(*window(track[:n], n, n))
        assert pred.shape == (1, 4)
        assert centre_error(pred[0], track[n]) < 0.08
    padded = np.zeros((3, k, 4), np.float32)
    padded[:, -5:] = track[:5]
    valid = np.zeros((3, k), bool)
    valid[:, -5:] = True
    ages = np.ones((3, k), np.float32)
    ages[:, -5:] = np.arange(5, 0, -1)
    out = lstm.predict(padded, ages, valid)
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, lstm.predict(*window(track[:5], 5, 5)).repeat(3, 0), atol=1e-3)


def test_the_tracker_s_kalman_keeps_state_and_predicts_what_a_fresh_filter_over_the_window_does() -> None:
    """KalmanTracks takes in only each frame's new observations; within the window it must give exactly what
    replaying the window (kalman_predict) gives, gaps of several lengths included."""
    from stages.track.kalman import KalmanTracks
    from stages.track.track import Track

    rng = np.random.default_rng(0)
    model = KalmanTracks()
    tracks = [Track(i, 0, 0, 0, 16) for i in range(5)]
    for f in range(15):
        for i, t in enumerate(tracks):
            if f < 2 or f % (i + 2) != 1:  # track i misses every (i + 2)th frame
                box = np.array([100 + 3 * f + 50 * i, 100 + f, 140 + 3 * f + 50 * i, 200 + 1.5 * f]) + rng.normal(0, 1, 4)
                t.observe(f, box.astype(np.float32), 0.9, 0, 0)
        now = np.full(len(tracks), f + 1 + f % 3)  # the target frame may also lie beyond the next one
        frames = np.stack([t.frames for t in tracks])
        valid = frames >= 0
        fresh = kalman_predict(np.stack([t.boxes for t in tracks]), np.where(valid, now[:, None] - frames, 1), valid)
        np.testing.assert_allclose(model.predict_tracks(tracks, now), fresh, atol=1e-4)


def test_the_lstm_s_spread_grows_with_the_frames_it_extrapolates(lstm: MotionPredictor) -> None:
    """The bundled model has a predictive uncertainty (the tracker bounds association and re-identification
    with it): a track seen in the last frame is predicted more surely than one unseen for 10 frames."""
    rng = np.random.default_rng(3)
    k = lstm.history
    track = np.array([[100 + 4 * t, 200, 140 + 4 * t, 300] for t in range(k)], np.float64) + rng.normal(0, 1.5, (k, 4))
    boxes = np.stack([track, track]).astype(np.float32)
    ages = np.stack([np.arange(k, 0, -1), np.arange(k, 0, -1) + 9]).astype(np.float32)  # target 1 / 10 frames ahead
    lstm.predict(boxes, ages, np.ones((2, k), bool))
    assert lstm.spread is not None
    near, far = lstm.spread
    assert 0 < near < far, lstm.spread
    assert near < 0.2 * 100  # under a fifth of the box height a frame ahead
