"""Abnormal-behaviour scenes (tools/anomaly_scenes.py): deterministic, labels that match the motion, disjoint
splits, and the CI clip."""

import json
import math

import cv2
import numpy as np
import pytest

from tools import anomaly_scenes as an
from tools import synthetic as syn

FPS = 10


@pytest.fixture(scope="module")
def bank() -> syn.SpriteBank:
    return syn.sprite_bank()


@pytest.fixture(scope="module")
def ci(bank) -> tuple[list[np.ndarray], dict]:
    return an.ci_clip(bank)


@pytest.fixture(scope="module")
def plans(bank) -> list[an.ScenePlan]:
    # Motion only (no pixels): eight TUNE scenes hold every type three times; one long scene holds all eight at once.
    out = [an.plan_scene(s, bank) for s in an.split_specs("tune", 8)]
    out.append(an.plan_scene(an.SceneSpec(seed=5, n_frames=600, n_walkers=6, anomalies=tuple((k, 1) for k in an.ANOMALY_TYPES)), bank))
    return out


def _anomalies(plans: list[an.ScenePlan], kind: str) -> list[tuple[an.ScenePlan, an.Trajectory, an.Anomaly]]:
    found = [(p, t, a) for p in plans for t in p.tracks for a in t.anomalies if a.type == kind]
    assert found, f"no {kind} in the test scenes"
    return found


def _part(t: an.Trajectory, a: an.Anomaly) -> np.ndarray:
    return (t.frames >= a.first_frame) & (t.frames <= a.last_frame)


def _speeds(t: an.Trajectory) -> tuple[np.ndarray, np.ndarray]:
    # Ground speed (m/s) into each frame that follows the previous one on screen, and those frames' indices.
    i = np.flatnonzero(np.diff(t.frames) == 1) + 1
    return np.linalg.norm(t.ground[i] - t.ground[i - 1], axis=1) * FPS, i


def _box_ground(boxes: np.ndarray) -> np.ndarray:
    # Where the fitted camera puts the bottom centre of a box on the ground.
    X, D = syn.CAMERA.ground((boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3])
    return np.stack([X, D], 1)


def test_same_seed_same_bytes(ci, bank):
    frames, truth = ci
    again, truth2 = an.ci_clip(bank)
    assert len(frames) == len(again) == an.ci_spec().n_frames
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))
    assert json.dumps(truth) == json.dumps(truth2)
    other = an.trajectories(an.SceneSpec(**{**an.ci_spec().__dict__, "seed": an.CI_SEED + 1}), bank)
    assert [t.ground.round(3).tolist() for t in other] != [[g[1:] for g in t["ground_m"]] for t in truth["tracks"]]


def test_trajectories_are_the_rendered_truth(ci, bank):
    _, truth = ci
    tracks = an.trajectories(an.ci_spec(), bank)
    rows = {(f, r[0]): r[1:5] for f, rs in enumerate(truth["per_frame"]) for r in rs}
    assert len(rows) == sum(len(t.frames) for t in tracks)
    for t in tracks:
        for f, b in zip(t.frames.tolist(), t.boxes.tolist()):
            assert rows[(f, t.track_id)] == [int(v) for v in b]
    assert [[a.__dict__ for a in t.anomalies] for t in tracks] == [tr["anomalies"] for tr in truth["tracks"]]


def test_ci_clip_has_one_fall_and_one_runner_well_apart(ci, bank):
    frames, truth = ci
    assert 100 <= len(frames) <= 150 and truth["fps"] == FPS
    assert sorted(e["type"] for e in truth["events"]) == ["fall", "running"]
    labelled = [(tr["id"], a["type"]) for tr in truth["tracks"] for a in tr["anomalies"]]
    assert sorted(k for _, k in labelled) == ["fall", "running"] and len({t for t, _ in labelled}) == 2
    assert len(truth["tracks"]) >= 5, "normal walkers too"
    run = next(e for e in truth["events"] if e["type"] == "running")
    fall = next(e for e in truth["events"] if e["type"] == "fall")
    assert fall["first_frame"] - run["last_frame"] >= 2 * FPS, "well apart in time"
    assert fall["last_frame"] == len(frames) - 1
    # The runner, measured on its boxes through the fitted camera over 1 s.
    tid = run["tracks"][0]
    rows = np.array([[f, *r[1:5]] for f, rs in enumerate(truth["per_frame"]) for r in rs if r[0] == tid], float)
    rows = rows[(rows[:, 0] >= run["first_frame"]) & (rows[:, 0] <= run["last_frame"]) & (rows[:, 1] > 0) & (rows[:, 3] < 768)]
    g = _box_ground(rows[:, 1:5])
    assert len(g) > FPS and (np.linalg.norm(g[FPS:] - g[:-FPS], axis=1) > 2.5).all()
    # The fallen person lies there, drawn: a wide box that differs from the empty campus.
    tid = fall["tracks"][0]
    last = next(r for r in truth["per_frame"][-1] if r[0] == tid)
    x1, y1, x2, y2 = last[1:5]
    assert x2 - x1 > 1.5 * (y2 - y1)
    diff = np.abs(frames[-1][y1:y2, x1:x2].astype(int) - bank.background[y1:y2, x1:x2]).max(axis=2)
    assert diff.mean() > 15


def test_running_is_fast_and_nothing_else_is(plans):
    for _, t, a in _anomalies(plans, "running"):
        sp, i = _speeds(t)
        inside = _part(t, a)[i]
        assert (sp[inside] >= an.RUN_MPS).all()
        box = _box_ground(t.boxes[_part(t, a)])
        full = t.boxes[_part(t, a)]
        ok = (full[:, 0] > 0) & (full[:, 2] < 768)
        win = [np.linalg.norm(box[j + FPS] - box[j]) for j in range(len(box) - FPS) if ok[j:j + FPS + 1].all()]
        assert win and min(win) > an.RUN_MPS, "the boxes show it too, through the fitted camera"
    for p in plans:
        for t in p.tracks:
            sp, i = _speeds(t)
            assert (sp[t.labels[i] == 0] < an.RUN_MPS).all(), "nobody unlabelled runs"
            if not any(a.type == "running" for a in t.anomalies):
                assert (sp < 2.1).all()


def test_normal_walkers_walk_at_ordinary_speeds(plans):
    means = []
    for p in plans:
        for t in p.tracks:
            if t.anomalies:
                continue
            sp, _ = _speeds(t)
            moving = sp[sp > 0.5]
            if len(moving) > 2 * FPS:
                means.append(moving.mean())
    assert len(means) > 50
    assert 0.9 < min(means) and max(means) < 1.75


def test_fall_ends_lying(plans):
    for _, t, a in _anomalies(plans, "fall"):
        part = _part(t, a)
        assert a.last_frame == t.frames[-1]
        down = t.frames >= a.first_frame + 10  # a fall takes 1 s at most
        b = t.boxes[down & part]
        assert len(b) and ((b[:, 2] - b[:, 0]) > (b[:, 3] - b[:, 1])).all()
        before = t.boxes[t.frames == a.first_frame - 1][0]
        assert before[2] - before[0] < before[3] - before[1], "upright before"
        assert np.ptp(t.ground[down], axis=0).max() < 1e-9, "stays down, in place"


def test_lingering_stays_within_its_radius(plans):
    for p, t, a in _anomalies(plans, "lingering"):
        ev = next(e for e in p.events if e["event"] == a.event)
        g = t.ground[_part(t, a)]
        assert (a.last_frame - a.first_frame) / FPS >= an.LINGER_S[0] - 0.1
        assert (np.linalg.norm(g - ev["centre_m"], axis=1) <= ev["radius_m"] + 1e-3).all()
    # Normal pauses are much shorter.
    for p in plans:
        for t in p.tracks:
            if not t.anomalies:
                sp, _ = _speeds(t)
                for _, n in syn._runs(sp < 0.05):
                    assert n <= an.PAUSE_S[1] * FPS


def test_circling_turns_round_and_zigzag_swings(plans):
    for p, t, a in _anomalies(plans, "circling"):
        ev = next(e for e in p.events if e["event"] == a.event)
        g = t.ground[_part(t, a)]
        assert np.allclose(np.linalg.norm(g - ev["centre_m"], axis=1), ev["radius_m"], atol=0.01)
        h = np.unwrap(np.arctan2(*np.diff(g, axis=0).T[::-1]))
        assert abs(h[-1] - h[0]) > 2 * math.pi * ev["turns"] - 0.8
    for _, t, a in _anomalies(plans, "zigzag"):
        g = t.ground[_part(t, a)]
        h = np.unwrap(np.arctan2(*np.diff(g, axis=0).T[::-1]))
        turn = np.diff(h)
        swings = np.diff(np.sign(turn[np.abs(turn) > 0.05]))
        assert (swings != 0).sum() >= 3


def test_reversal_walks_back(plans):
    for _, t, a in _anomalies(plans, "sudden_reversal"):
        i0 = int(np.flatnonzero(t.frames == a.first_frame)[0])
        i1 = int(np.flatnonzero(t.frames == a.last_frame)[0])
        before = t.ground[i0] - t.ground[max(0, i0 - 10)]
        after = t.ground[i1] - t.ground[i1 - 10]
        cos = before @ after / (np.linalg.norm(before) * np.linalg.norm(after))
        assert cos < math.cos(math.radians(150))
        sp, i = _speeds(t)
        assert (sp[_part(t, a)[i]] < 0.05).sum() >= 5, "stops first"


def test_against_flow_and_nobody_else(plans):
    for p, t, a in _anomalies(plans, "against_flow"):
        flow = np.array([math.cos(math.radians(p.flow_deg)), math.sin(math.radians(p.flow_deg))])
        assert (a.first_frame, a.last_frame) == (t.frames[0], t.frames[-1]), "the whole track"
        d = t.ground[-1] - t.ground[0]
        assert d @ flow / np.linalg.norm(d) < -0.8
    for p in plans:
        flow = np.array([math.cos(math.radians(p.flow_deg)), math.sin(math.radians(p.flow_deg))])
        for t in p.tracks:
            for j in range(0, len(t.frames) - 2 * FPS, 5):
                k = j + 2 * FPS
                if t.labels[j:k + 1].any() or t.frames[k] - t.frames[j] != 2 * FPS:
                    continue
                d = t.ground[k] - t.ground[j]
                if np.linalg.norm(d) > 1.0:
                    assert d @ flow / np.linalg.norm(d) > -0.7, f"track {t.track_id} of {p.spec.label} walks against the flow unlabelled"


def test_struggle_is_two_people_close_together(plans):
    for p, t, a in _anomalies(plans, "struggle"):
        ev = next(e for e in p.events if e["event"] == a.event)
        assert len(ev["tracks"]) == 2 and (a.first_frame, a.last_frame) == (ev["first_frame"], ev["last_frame"])
        other = next(o for o in p.tracks if o.track_id in ev["tracks"] and o.track_id != t.track_id)
        frames = np.intersect1d(t.frames[_part(t, a)], other.frames)
        assert len(frames) >= 3 * FPS - 1
        ga = t.ground[np.isin(t.frames, frames)]
        gb = other.ground[np.isin(other.frames, frames)]
        assert (np.linalg.norm(ga - gb, axis=1) <= 0.75).all()


def test_splits_are_disjoint_and_eval_people_differ(bank):
    ranges = sorted((r.first, r.stop) for r in an.SPLITS.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    seeds = {name: set(an.split_seeds(name, 50)) for name in an.SPLITS}
    assert not (seeds["train"] & seeds["tune"] or seeds["train"] & seeds["eval"] or seeds["tune"] & seeds["eval"])
    assert all(an.split_of(s) == name for name, ss in seeds.items() for s in ss)
    assert an.split_of(an.CI_SEED) is None
    assert all(not s.anomalies for s in an.split_specs("train", 5))
    assert all(s.anomalies and s.sprites == "eval" for s in an.split_specs("eval", 5))
    assert {k for s in an.split_specs("eval", 3) for k, _ in s.anomalies} == set(an.ANOMALY_TYPES)
    # By person: no look of vtest's cast is on both sides.
    for group in syn.SAME_PERSON:
        assert len({src in an.EVAL_SPRITES for src in group}) == 1
    train = {s.source for s in an.sprite_pool(bank, "train")}
    evals = {s.source for s in an.sprite_pool(bank, "eval")}
    assert train and evals and not train & evals and evals == set(an.EVAL_SPRITES)
    plan = an.plan_scene(an.split_spec("train", 0), bank)
    assert all(t.sprite.split()[0] in train for t in plan.tracks) and not any(t.anomalies for t in plan.tracks)


def test_spec_checks():
    with pytest.raises(ValueError, match="unknown anomaly"):
        an.SceneSpec(seed=1, anomalies=(("teleport", 1),))
    with pytest.raises(ValueError):
        an.SceneSpec(seed=1, sprites="test")


def test_write_scene(tmp_path, ci):
    frames, truth = ci
    paths = an.write_scene(frames, truth, tmp_path)
    back = json.loads(paths["truth"].read_text())
    assert back["events"] == truth["events"] and back["video"] == paths["video"].name
    cap = cv2.VideoCapture(str(paths["video"]))
    n = 0
    while cap.grab():
        n += 1
    assert n == len(frames)
    s = an.summarize([truth])
    assert s["events"] == {"running": 1, "fall": 1} and s["frames"] == len(frames)
