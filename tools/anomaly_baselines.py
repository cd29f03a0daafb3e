"""The hand-set rules a user would configure instead of the learned anomaly model, on the same held-out scenes.

    python -m tools.anomaly_baselines [--eval-sequences 40]

On the EVAL scenes of tools/anomaly_scenes.py (the tracks' boxes jittered as tools/train_anomaly.py's evaluation
jitters them, same seed), each scene's analyze config is what a user who knows the camera would write: the ground
plane of the camera the scenes are drawn through (speeds in m/s), and

- speed: over 2.5 m/s (where the scenes' running starts) for 0.5 s;
- wrong_way: the whole frame, the scene's flow direction (as seen at the frame's centre), more than 90 degrees off
  it at over 0.5 m/s for 1 s;
- loitering: the whole frame, 15 s inside it (the shortest lingering).

Per rule and anomaly type it prints how many events got an alert on their track while they lasted (or within 2 s
after), as tools/train_anomaly.py counts the learned model's, and alerts on tracks in no anomaly per hour of scene.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from pipeline.categories import category_id
from pipeline.detections import Detections
from stages.analyze.options import StreamAnalyticsConfig
from stages.analyze.scene import Scene
from tools.train_anomaly import in_frame, jitter

PERSON = category_id("person")
RULES: dict[str, dict[str, Any]] = {
    "speed": {"type": "speed", "limit": 2.5, "unit": "m/s", "for_s": 0.5},
    "wrong_way": {"type": "wrong_way", "zone": "all", "max_angle_deg": 90.0, "min_speed": 0.5, "for_s": 1.0},
    "loitering": {"type": "loitering", "zone": "all", "limit_s": 15.0},
}


def scene_config(flow_deg: float, rule: str) -> StreamAnalyticsConfig:
    """The config a user would write for one rule on this camera and this scene's flow."""
    from tools.synthetic import CAMERA, CAMPUS_SIZE

    w, h = CAMPUS_SIZE
    image = [(100.0, 300.0), (668.0, 300.0), (668.0, 560.0), (100.0, 560.0)]
    ground = [tuple(float(c) for c in CAMERA.ground(u, v)) for u, v in image]
    # the flow as seen at the frame's centre: where a step along it on the ground goes in the image
    x, d = CAMERA.ground(w / 2, h * 0.6)
    a = math.radians(flow_deg)
    u0, v0 = CAMERA.project(x, d)
    u1, v1 = CAMERA.project(x + math.cos(a), d + math.sin(a))
    r = dict(RULES[rule], name=rule)
    if rule == "wrong_way":
        r["direction"] = [float(u1 - u0), float(v1 - v0)]
    return StreamAnalyticsConfig.model_validate({
        "frame_size": [w, h], "zones": {"all": {"points": [[0, 0], [w, 0], [w, h], [0, h]]}},
        "ground_plane": {"image": image, "ground": ground}, "rules": [r],
    })  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from tools.anomaly_scenes import ANOMALY_TYPES, plan_scene, split_specs
    from tools.synthetic import CAMPUS_SIZE

    p = argparse.ArgumentParser(description="Hand-set rule baselines on the held-out anomaly scenes.")
    p.add_argument("--eval-sequences", type=int, default=40)
    args = p.parse_args(argv)
    plans = [plan_scene(spec) for spec in split_specs("eval", args.eval_sequences)]
    hours = sum(pl.spec.n_frames / pl.spec.fps for pl in plans) / 3600
    print(f"HELD-OUT (EVAL seeds, {len(plans)} scenes, {hours * 60:.0f} min): events alerted per rule, false alerts per hour")
    for rule in RULES:
        hit: dict[str, list[bool]] = {k: [] for k in ANOMALY_TYPES}
        false = 0
        rng = np.random.default_rng(12345)
        for pl in plans:
            sc = Scene(scene_config(pl.flow_deg, rule), forget_after_s=10.0, speed_window_s=1.0)
            boxes = {t.track_id: in_frame(jitter(t.boxes.astype(np.float32), rng), CAMPUS_SIZE) for t in pl.tracks}
            rows: dict[int, list[tuple[int, np.ndarray]]] = {}
            for t in pl.tracks:
                for f, b in zip(t.frames.tolist(), boxes[t.track_id]):
                    rows.setdefault(f, []).append((t.track_id, b))
            fired: list[tuple[int, float]] = []
            for f in range(pl.spec.n_frames):
                r = rows.get(f, [])
                d = Detections(np.array([b for _, b in r], np.float32).reshape(-1, 4), np.ones(len(r), np.float32),
                               np.full(len(r), PERSON, np.int32), np.array([t for t, _ in r], np.int64))  # fmt: skip
                for firing in sc.update(f, f / pl.spec.fps, *CAMPUS_SIZE, d).firings:
                    fired += [(tid, f / pl.spec.fps) for tid in firing.track_ids]
            explained = set()
            for t in pl.tracks:
                for a in t.anomalies:
                    got = [i for i, (tid, s) in enumerate(fired) if tid == t.track_id and a.first_frame / pl.spec.fps <= s <= a.last_frame / pl.spec.fps + 2]
                    hit[a.type].append(bool(got))
                    explained.update(got)
            false += len(fired) - len(explained)
        print(f"{rule}: false {false} = {false / hours:.1f} per hour; " + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in hit.items()))


if __name__ == "__main__":
    main()
