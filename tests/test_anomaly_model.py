"""The trajectory anomaly model (stages/track/anomaly.py) on the CI scene of tools/anomaly_scenes.py (seed outside
every split): the falling motion scores above the calibrated threshold, the normal walkers do not (lying still
afterwards drifts back under it: to motion alone a still person is ordinary; that is the pose model's part);
the scorer runs on ONNX Runtime, matches eager torch, and the track stage's option validates."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.categories import category_id
from pipeline.detections import Detections
from stages.infer import backend as bk
from stages.track.anomaly import ANOMALY_SCORE, AnomalyScorer
from tools.anomaly_scenes import ci_spec, trajectories

PERSON = category_id("person")


def _scores(scorer: AnomalyScorer) -> dict[int, dict[int, float]]:
    """track id -> frame -> score, feeding the CI scene's true boxes frame by frame as tracked rows."""
    spec = ci_spec()
    trs = trajectories(spec)
    out: dict[int, dict[int, float]] = {t.track_id: {} for t in trs}
    for f in range(spec.n_frames):
        rows = [(t.track_id, t.boxes[np.searchsorted(t.frames, f)]) for t in trs if f in set(t.frames.tolist())]
        if not rows:
            continue
        d = Detections(np.array([b for _, b in rows], np.float32), np.ones(len(rows), np.float32), np.full(len(rows), PERSON, np.int32),
                       np.array([t for t, _ in rows], np.int64))  # fmt: skip
        (got,) = scorer.score([("ci", f, f / spec.fps, d, (768, 576))])
        for (tid, _), s in zip(rows, got.extra[ANOMALY_SCORE]):
            if s == s:
                out[tid][f] = float(s)
    return out


def test_the_fall_scores_above_the_threshold_and_walkers_do_not() -> None:
    spec = ci_spec()
    trs = {t.track_id: t for t in trajectories(spec)}
    scores = _scores(AnomalyScorer())
    fallen = next(t for t in trs.values() if any(a.type == "fall" for a in t.anomalies))
    fall = next(a for a in fallen.anomalies if a.type == "fall")
    falling = [s for f, s in scores[fallen.track_id].items() if fall.first_frame <= f <= fall.first_frame + 20]
    assert falling and max(falling) >= 1.0, falling
    before = [s for f, s in scores[fallen.track_id].items() if f < fall.first_frame]
    assert before and max(before) < 1.0
    normal = [s for t in trs.values() if not t.anomalies for s in scores[t.track_id].values()]
    assert len(normal) > 100 and np.mean(np.array(normal) >= 1) <= 0.02


@pytest.mark.skipif(not bk.available("onnxruntime"), reason="onnxruntime not installed")
def test_onnxruntime_matches_eager_torch() -> None:
    ref, got = AnomalyScorer(backend="torch"), AnomalyScorer(backend="onnxruntime")
    assert got.backend == "onnxruntime"
    x = np.random.default_rng(0).normal(0, 1, (16, 20, len(ref.cal.mean))).astype(np.float32) * ref.cal.std + ref.cal.mean
    assert np.abs(ref._errors(x) - got._errors(x)).max() < 1e-4


def test_track_option_validates() -> None:
    from stages.track.stage import TrackOptions

    assert TrackOptions.model_validate({"anomaly": {}}).anomaly is not None
    with pytest.raises(ValueError, match="extra"):
        TrackOptions.model_validate({"anomaly": {"threshold": 2}})
