"""Train the fall classifier (stages/track/fall.py's `FallNet`): a small temporal CNN over MoveNet keypoints of the
last few sightings of a person, classifying normal / falling / fallen; calibrate it and evaluate it.

    python -m tools.train_fall                       # stages/track/weights/fall.pt (+ fall.json)

Data: rendered scenes of tools/anomaly_scenes.py with one fall each (real vtest people over the real campus), seeds
of its TRAIN range for fitting (TRAIN people), TUNE for the decision threshold, EVAL (held-out people) for the
figures. For each scene, the faller from 1.5 s before the fall to the end and two walkers for 4 s each are looked
at as the fall watcher looks: MoveNet on the square crop round the box (for the faller after the fall starts, round
its last upright box, where the watcher searches once the detector has lost the person), the pose nearest the foot
point kept (`stages.track.fall.sighting`). Labels are exact, from the generator's boxes: normal before the fall,
falling while the box still changes, fallen from the frame it is the lying box on.

Sequences: the last SEQ sightings, taken every 1 to SEARCH_EVERY frames (the watcher searches a lost track every
SEARCH_EVERY frames until found). Seeded and deterministic on CPU; prints the weights' sha256.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from stages.track.fall import DEFAULT_WEIGHTS, MIN_POSE_SCORE, SEARCH_EVERY, SEQ, FallCalibration, build_fall_net, crop_box, sighting
from tools.training import cosine_schedule, save_state_dict

CLASSES = ("normal", "falling", "fallen")
FALL_SEED = 77  # with a scene's seed: which of its walkers are looked at


def scene_sightings(split: str, n: int, estimator: object) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per looked-at track: its sightings [T, FEATURES] and labels [T] (0 normal, 1 falling, 2 fallen)."""
    from dataclasses import replace

    from tools.anomaly_scenes import make_scene, split_spec, trajectories

    feats, labels = [], []
    for i in range(n):
        base = split_spec(split, i)
        spec = replace(base, n_frames=160, n_walkers=5, anomalies=(("fall", 1),), min_gap_s=2.0, name=f"fall_{split}_{base.seed}")
        frames, _ = make_scene(spec)
        h, w = frames[0].shape[:2]
        tracks = trajectories(spec)
        rng = np.random.default_rng([spec.seed, FALL_SEED])
        jobs: list[tuple[int, int, np.ndarray, np.ndarray, int]] = []  # track no., frame, crop, reference box, label
        looked = 0
        for tr in tracks:
            fall = next((a for a in tr.anomalies if a.type == "fall"), None)
            if fall is not None:
                lying = tr.boxes[-1]
                still = np.all(np.abs(tr.boxes - lying) < 0.5, axis=1)
                down = int(tr.frames[np.flatnonzero(~still)[-1] + 1]) if (~still).any() else int(tr.frames[0])
                upright = tr.boxes[np.searchsorted(tr.frames, fall.first_frame) - 1]
                for k, f in enumerate(tr.frames.tolist()):
                    if f < fall.first_frame - 15:
                        continue
                    ref = tr.boxes[k] if f < fall.first_frame else upright
                    label = 0 if f < fall.first_frame else (1 if f < down else 2)
                    jobs.append((looked, f, crop_box(ref, w, h), ref, label))
                looked += 1
        walkers = [t for t in tracks if not t.anomalies and len(t.frames) >= 40]
        for tr in [walkers[j] for j in rng.permutation(len(walkers))[:2]]:
            start = int(rng.integers(0, len(tr.frames) - 39))
            for k in range(start, start + 40):
                jobs.append((looked, int(tr.frames[k]), crop_box(tr.boxes[k], w, h), tr.boxes[k], 0))
            looked += 1
        crops = [frames[f][int(c[1]) : int(c[3]), int(c[0]) : int(c[2])] for _, f, c, _, _ in jobs]
        poses = []
        for s in range(0, len(crops), 32):
            poses += estimator(crops[s : s + 32])  # type: ignore[operator]
        per: dict[int, tuple[list[np.ndarray], list[int]]] = {}
        for (t, _, c, ref, label), people in zip(jobs, poses):
            fs, ls = per.setdefault(t, ([], []))
            fs.append(sighting(people, c, ref)[0])
            ls.append(label)
        for fs, ls in per.values():
            feats.append(np.stack(fs))
            labels.append(np.array(ls))
    return feats, labels


def sequences(feats: list[np.ndarray], labels: list[np.ndarray], rng: np.random.Generator, per_track: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of the last SEQ sightings at a random stride of 1 to SEARCH_EVERY frames, labelled by the last."""
    xs, ys = [], []
    for f, lab in zip(feats, labels):
        for _ in range(per_track):
            stride = int(rng.integers(1, SEARCH_EVERY + 1))
            end = int(rng.integers((SEQ - 1) * stride, len(f)))
            idx = end - stride * np.arange(SEQ)[::-1]
            xs.append(f[idx])
            ys.append(lab[end])
    return np.stack(xs).astype(np.float32), np.array(ys)


def main(argv: list[str] | None = None) -> None:
    from stages.infer.pose.runner import PoseEstimator

    p = argparse.ArgumentParser(description="Train the fall classifier over MoveNet keypoint sequences.")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-scenes", type=int, default=30)
    p.add_argument("--tune-scenes", type=int, default=10)
    p.add_argument("--eval-scenes", type=int, default=16)
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    est = PoseEstimator(backend="onnxruntime", min_score=MIN_POSE_SCORE)
    t0 = time.perf_counter()
    data = {s: scene_sightings(s, n, est) for s, n in (("train", args.train_scenes), ("tune", args.tune_scenes), ("eval", args.eval_scenes))}
    print("sightings: " + ", ".join(f"{s} {sum(len(f) for f in d[0])}" for s, d in data.items()) + f" ({time.perf_counter() - t0:.0f} s)")
    rng = np.random.default_rng(args.seed)
    x, y = sequences(*data["train"], rng, 60)
    torch.manual_seed(args.seed)
    net = build_fall_net()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    weight = torch.tensor(len(y) / (3 * np.bincount(y, minlength=3) + 1), dtype=torch.float32)  # classes balanced
    steps = math.ceil(len(x) / 128)
    sched = cosine_schedule(opt, steps * args.epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for s in range(steps):
            b = order[s * 128 : (s + 1) * 128]
            loss = torch.nn.functional.cross_entropy(net(xt[b]), yt[b], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) / steps
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1:3d}  loss {total:.4f}")
    net.eval()
    # threshold on P(falling or fallen) for `pose.lying`... the watcher's decision: chosen on TUNE normal sequences
    xv, yv = sequences(*data["tune"], np.random.default_rng(args.seed + 1), 60)
    pv = _probs(net, xv)
    down = pv[:, 2]
    threshold = float(max(0.5, np.quantile(down[yv == 0], 0.99)))
    cal = FallCalibration(threshold=threshold, info={"train_sequences": int(len(x)), "tune_sequences": int(len(xv))})
    sha = save_state_dict(net.state_dict(), args.out)
    cal.save(args.out)
    print(
        f"threshold P(fallen) {threshold:.3f} (1% of normal TUNE sequences at or above it, at least 0.5; the fall rule then wants the person down for seconds); wrote {args.out} sha256 {sha}"
    )
    xe, ye = sequences(*data["eval"], np.random.default_rng(12345), 60)
    pe = _probs(net, xe)
    pred = np.where(pe[:, 2] >= threshold, 2, np.where(pe[:, 1] > pe[:, 0], 1, 0))
    print(f"HELD-OUT (EVAL seeds, {args.eval_scenes} scenes, people not in training): {len(ye)} sequences")
    for k, name in enumerate(CLASSES):
        sel = ye == k
        print(f"  {name:8s} {int(sel.sum()):6d} sequences, recall {(pred[sel] == k).mean():.3f}, called fallen {(pred[sel] == 2).mean():.3f}")
    geo = xe[:, -1, -1]  # the body-angle rule on the last sighting
    print(f"  the body-angle rule alone (last sighting lying): fallen recall {geo[ye == 2].mean():.3f}, normal called fallen {geo[ye == 0].mean():.3f}")


def _probs(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(net(torch.from_numpy(x)), 1).numpy()


if __name__ == "__main__":
    main()
