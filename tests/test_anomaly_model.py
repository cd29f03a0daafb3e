"""The trajectory anomaly model (stages/track/anomaly.py) on the CI scene of tools/anomaly_scenes.py (seed outside
every split): the falling motion scores above the calibrated threshold, the normal walkers do not (lying still
afterwards drifts back under it: to motion alone a still person is ordinary; that is the pose model's part);
the scorer runs on ONNX Runtime, matches eager torch, and the track stage's option validates."""

from __future__ import annotations

from pathlib import Path

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


def test_a_window_starts_after_the_frame_edge_and_after_a_jump() -> None:
    """Boxes at the frame's edge (a person half in view) and a box that jumps (the id handed to someone else) break a
    track: only what follows is scored, and nothing until MIN_OBSERVED observations have followed."""
    from stages.track.anomaly import MIN_OBSERVED, track_window

    t = np.arange(30) / 10
    walk = np.array([[200 + 7 * i, 100, 240 + 7 * i, 200] for i in range(30)], np.float32)
    assert track_window(walk, t, (768, 576), False) is not None
    entering = walk.copy()
    entering[:25, 0] = 0  # at the left edge until observation 25
    assert track_window(entering, t, (768, 576), False) is None
    assert track_window(entering[: 25 + MIN_OBSERVED], t[: 25 + MIN_OBSERVED], (768, 576), False) is None
    switched = walk.copy()
    switched[22:, 1] = 150  # height 100 -> 50 in one step: someone else's box
    assert track_window(switched, t, (768, 576), False) is None
    assert track_window(switched[:21], t[:21], (768, 576), False) is not None


def test_memory_dwell_and_usual_aspect() -> None:
    """Dwell counts the seconds a track stays put; the usual aspect follows the track's own full-view boxes, not
    the narrow box of it entering at the edge."""
    from stages.track.anomaly import Memory

    m = Memory()
    for i in range(10):  # entering: a sliver at the edge
        m.update(np.array([0, 100, 5 + i, 200.0]), i / 10, (768, 576))
    for i in range(10, 40):  # walking, 40 wide
        dwell, usual = m.update(np.array([10 * i, 100, 10 * i + 40, 200.0]), i / 10, (768, 576))
    assert dwell < 1.0 and abs(usual - np.log(0.4)) < 0.05  # walking: it leaves DWELL_RADIUS within a second
    for i in range(40, 100):  # standing for 6 s
        dwell, usual = m.update(np.array([400, 100, 440, 200.0]), i / 10, (768, 576))
    assert 5.9 <= dwell < 6.7  # the 6 s standing, and the last steps of arriving within DWELL_RADIUS


def test_rule_baselines_run_on_a_held_out_scene(capsys: pytest.CaptureFixture[str]) -> None:
    """tools/anomaly_baselines.py: each rule's config validates (ground plane, the scene's flow as an image direction)
    and one EVAL scene goes through the analyze scene with every rule."""
    from tools.anomaly_baselines import main, scene_config

    cfg = scene_config(90.0, "wrong_way")  # flow away from the camera: up the image
    (rule,) = cfg.rules
    assert rule.direction[1] < 0 and abs(rule.direction[0]) < 1e-6 and cfg.ground_plane is not None
    main(["--eval-sequences", "1"])
    out = capsys.readouterr().out
    assert all(f"{r}: false" in out for r in ("speed", "wrong_way", "loitering")), out


def test_a_camera_model_trains_from_a_replay_record_and_scores(tmp_path: Path) -> None:
    """`python -m tools.train_anomaly --scene REPLAY.jsonl`: a camera's own model from the record stage's JSONL of its
    normal footage (here the tracks of two TRAIN scenes, written as the record stage writes them), with position
    features and the autoencoder in the score; the track stage's scorer loads and runs it."""
    import json

    from tools.anomaly_scenes import split_specs
    from tools.train_anomaly import main

    lines = []
    for k, spec in enumerate(split_specs("train", 2)):
        trs = trajectories(spec)
        for f in range(spec.n_frames):
            rows = [(1000 * k + t.track_id, t.boxes[np.searchsorted(t.frames, f)]) for t in trs if f in set(t.frames.tolist())]
            objects = {"boxes": [b.tolist() for _, b in rows], "classes": ["person"] * len(rows), "track_ids": [t for t, _ in rows]}
            lines.append(json.dumps({"seq": f, "pts": k * 100 + f / spec.fps, "width": 768, "height": 576, "objects": objects}))
    record = tmp_path / "cam.jsonl"
    record.write_text("\n".join(lines) + "\n")
    main(["--scene", str(record), "--out", str(tmp_path / "cam.pt"), "--epochs", "1"])
    scorer = AnomalyScorer(tmp_path / "cam.pt")
    assert scorer.cal.scene and scorer.cal.frame_size == (768, 576) and "rebuild error" in scorer.cal.used
    got = []
    for f in range(15):
        box = np.array([[300 + 5 * f, 200, 330 + 5 * f, 280]], np.float32)
        d = Detections(box, np.ones(1, np.float32), np.full(1, PERSON, np.int32), np.array([1], np.int64))
        (out,) = scorer.score([("cam", f, f / 10, d, (768, 576))])
        got.append(float(out.extra[ANOMALY_SCORE][0]))
    assert np.isnan(got[0]) and np.isfinite(got[-1])
