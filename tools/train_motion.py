"""Train the motion LSTM and compare it with the constant-velocity Kalman filter on held-out trajectories.

    python -m tools.train_motion [--out PATH] [--epochs N] [--seed S]

Training material:
- real tracklets (COCO-SSD detections linked by `tools.tracklets`) of vtest.avi frames 300-679 and
  bikes.mp4 frames 0-199; vtest frames 680-794 and bikes 200-249 are held out. Held out by time, because
  neighbouring tracklets are near-duplicates. vtest frames 0-299 are the tracker's hand-labelled evaluation
  segment and are never read here;
- generated trajectories from `tools.synthetic` (when present): training seeds and held-out seeds differ.
Real tracklets are augmented: camera-rate changes (every 2nd / 3rd frame), dropped runs of 1-15 frames,
detector-like jitter, horizontal flips. Parked objects contribute few examples so that they do not dominate.

The target is the next observed (detector) box. Reproducible: seeded, deterministic, CPU, one thread.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn

from stages.track.kalman import STD_WEIGHT_POSITION, STD_WEIGHT_VELOCITY, kalman_predict
from stages.track.motion_lstm import DEFAULT_WEIGHTS, MotionPredictor, encode, target_offsets
from stages.track.motion_net import MotionLSTM

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_videos"

VTEST_START, VTEST_SPLIT = 300, 680  # frames 0-299 are the tracking evaluation segment: never used
BIKES_SPLIT = 200  # of 250 frames: the last 20% are held out
MAX_GAP = 15  # frames dropped before a target in training
PARKED_SPEED = 0.01  # median centre speed (box heights per frame) below which an object counts as parked
TRAIN_SYNTH_SEED, TEST_SYNTH_SEED, TUNE_SYNTH_SEED = 1, 1001, 2001
DET_SIGMA = 0.005  # detector jitter per box coordinate, in box heights (robust estimate on the real tracklets)


class Predictor(Protocol):
    def predict(self, boxes: np.ndarray, ages: np.ndarray, valid: np.ndarray) -> np.ndarray: ...


PredictFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------------------- data


def real_trajectories() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train, held-out) real tracklets as [T, 4] xyxy arrays of consecutive frames, split by time."""
    from tools.tracklets import detect_video, link_tracklets

    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for name, start, split in (("vtest.avi", VTEST_START, VTEST_SPLIT), ("bikes.mp4", 0, BIKES_SPLIT)):
        dets = detect_video(SAMPLES / name, start=start)
        for t in link_tracklets(dets, name, first_frame=start):
            early = t.frames < split
            for part, out in ((early, train), (~early, test)):
                if part.sum() >= 3:
                    out.append(t.boxes[part].astype(np.float64))
    return train, test


def generated_trajectories(seed: int, n: int, fps: tuple[float, ...] = (10.0, 25.0)) -> list[np.ndarray]:
    """Generated trajectories ([T, 4] xyxy, NaN rows unobserved), split over camera frame rates; none while
    synthetic.py is missing. They are exact boxes: `detector_noise` makes them look detected."""
    try:
        from tools.synthetic import trajectories
    except ImportError:
        return []
    out: list[np.ndarray] = []
    for i, rate in enumerate(fps):
        count = n // len(fps) + (i < n % len(fps))
        out.extend(np.asarray(t, np.float64) for t in trajectories(seed=seed * 100 + i, n=count, fps=rate))
    return out


def detector_noise(
    traj: np.ndarray, rng: np.random.Generator, sigma: float = DET_SIGMA, outlier_p: float = 0.05,
    outlier_sigma: float = 0.04,
) -> np.ndarray:
    """Per-coordinate box noise in box heights: Gaussian plus occasional outliers (an arm in or out of the
    box), the heavy-tailed mix measured on the COCO-SSD tracklets (robust sigma ~0.005 h, std ~0.015 h)."""
    h = np.maximum(traj[:, 3:4] - traj[:, 1:2], 1.0)
    noise = rng.normal(size=traj.shape) * sigma
    out = rng.random(traj.shape) < outlier_p
    noise[out] = rng.normal(size=int(out.sum())) * outlier_sigma
    return traj + noise * h


def median_speed(traj: np.ndarray) -> float:
    """Median centre displacement per frame between consecutive observations, in box heights."""
    obs = np.flatnonzero(~np.isnan(traj[:, 0]))
    if len(obs) < 2:
        return 0.0
    b = traj[obs]
    c = (b[:, :2] + b[:, 2:]) / 2
    h = np.maximum(b[:, 3] - b[:, 1], 1e-3)
    return float(np.median(np.linalg.norm(np.diff(c, axis=0), axis=1) / np.diff(obs) / h[1:]))


@dataclass
class Examples:
    """Prediction problems: each track's observed history (front-padded), the target box and its horizon."""

    boxes: np.ndarray  # [M, L, 4] xyxy
    ages: np.ndarray  # [M, L] frames before the target
    valid: np.ndarray  # [M, L]
    target: np.ndarray  # [M, 4] the next observed box
    weight: np.ndarray  # [M]

    def __len__(self) -> int:
        return len(self.target)

    @property
    def horizon(self) -> np.ndarray:
        return self.ages[:, -1]

    def subset(self, rows: np.ndarray) -> "Examples":
        return Examples(self.boxes[rows], self.ages[rows], self.valid[rows], self.target[rows], self.weight[rows])


def _pack(items: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]], length: int | None) -> Examples:
    """(history boxes [k, 4], ages [k], target [4], weight) -> Examples, front-padded to `length` (or longest)."""
    m = len(items)
    length = length or max((len(it[1]) for it in items), default=1)
    boxes = np.zeros((m, length, 4))
    ages = np.ones((m, length))
    valid = np.zeros((m, length), bool)
    target = np.zeros((m, 4))
    weight = np.zeros(m)
    for i, (b, a, t, w) in enumerate(items):
        k = min(len(a), length)
        boxes[i, length - k :] = b[-k:]
        ages[i, length - k :] = a[-k:]
        valid[i, length - k :] = True
        target[i] = t
        weight[i] = w
    return Examples(boxes, ages, valid, target, weight)


def _augment(traj: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A camera-rate change, dropped runs, detector-like jitter and a flip of one trajectory."""
    stride = rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15])
    traj = traj[rng.integers(stride) :: stride].copy()
    if len(traj) > 4 and rng.random() < 0.3:
        for _ in range(rng.integers(1, 4)):
            a = rng.integers(1, len(traj) - 1)
            traj[a : a + rng.integers(1, MAX_GAP + 1)] = np.nan
    if rng.random() < 0.5:
        h = traj[:, 3:4] - traj[:, 1:2]
        traj = traj + rng.normal(size=traj.shape) * h * rng.uniform(0.0, 0.03)
    if rng.random() < 0.5:
        traj = np.stack([-traj[:, 2], traj[:, 1], -traj[:, 0], traj[:, 3]], 1)
    return traj * np.exp(rng.uniform(-1, 1))  # scale: the model is invariant, the check is free


def _targets(
    traj: np.ndarray, rng: np.random.Generator, count: int, gap_prob: float, min_history: int = 2
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Up to `count` random prediction problems from one trajectory; some with extra frames dropped before."""
    obs = np.flatnonzero(~np.isnan(traj[:, 0]))
    cand = obs[min_history:]
    if not len(cand):
        return []
    out = []
    for t in rng.choice(cand, size=min(count, len(cand)), replace=False):
        gap = rng.integers(1, MAX_GAP + 1) if rng.random() < gap_prob else 0
        hist = obs[obs < t - gap]
        if len(hist) < min_history:
            hist = obs[obs < t]
        out.append((traj[hist], (t - hist).astype(np.float64), traj[t], 1.0))
    return out


def training_examples(
    real: list[np.ndarray],
    synth: list[np.ndarray],
    rng: np.random.Generator,
    history: int,
    size: int,
    real_fraction: float = 0.5,
    tracked: list[np.ndarray] | None = None,
    tracked_fraction: float = 0.0,
) -> Examples:
    """One epoch of freshly augmented examples, `real_fraction` of them from real tracklets; with `tracked`,
    `tracked_fraction` of the epoch from the tracker's own histories (their gaps are the tracker's: none added)."""
    items: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
    if tracked and tracked_fraction > 0:
        want = round(size * tracked_fraction)
        size -= want
        got: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
        while len(got) < want:
            for i in rng.permutation(len(tracked)):
                traj = tracked[i]
                if rng.random() < 0.5:  # a mirrored scene moves the same way
                    traj = np.stack([-traj[:, 2], traj[:, 1], -traj[:, 0], traj[:, 3]], 1)
                got.extend(_targets(traj, rng, 12, gap_prob=0.1))
        items.extend(got[:want])
    real_fraction = real_fraction if synth else 1.0
    for trajs, is_real in ((real, True), (synth, False)):
        per_source = round(size * (real_fraction if is_real else 1.0 - real_fraction))
        if not per_source:
            continue
        # Parked objects get few targets per draw: else two parked cars would be a third of vtest.
        speed = np.array([median_speed(t) for t in trajs])
        cap = np.where(speed < PARKED_SPEED, 2, 12)
        got: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
        while len(got) < per_source:
            for i in rng.permutation(len(trajs)):
                traj = _augment(trajs[i], rng) if is_real else _synth_augment(trajs[i], rng)
                got.extend(_targets(traj, rng, int(cap[i]), gap_prob=0.35))
        items.extend(got[:per_source])
    return _pack(items, history)


def _synth_augment(traj: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Detector noise of a random strength (sometimes none), extra dropped runs and a flip."""
    traj = traj.copy()
    if len(traj) > 4 and rng.random() < 0.2:
        for _ in range(rng.integers(1, 3)):
            a = rng.integers(1, len(traj) - 1)
            traj[a : a + rng.integers(1, MAX_GAP + 1)] = np.nan
    if rng.random() < 0.85:
        traj = detector_noise(traj, rng, sigma=rng.uniform(0.0, 0.015), outlier_p=rng.uniform(0.0, 0.1))
    if rng.random() < 0.5:
        traj = np.stack([-traj[:, 2], traj[:, 1], -traj[:, 0], traj[:, 3]], 1)
    return traj


def evaluation_examples(
    trajs: list[np.ndarray],
    seed: int,
    per_traj: int = 20,
    per_parked: int = 5,
    truth: list[np.ndarray] | None = None,
) -> dict[str, Examples]:
    """Deterministic held-out problems, full history each: '1-step' (seen in the previous frame) and 'gap'
    (>= 3 frames unobserved before the target: the trajectory's own gaps, else 3-10 frames dropped).
    At most `per_traj` of each kind per trajectory (`per_parked` for parked objects), so that a few long
    tracks, often parked cars, do not dominate. Targets come from `truth` when given (e.g. the noiseless boxes
    of noisy trajectories), else from the trajectories themselves."""
    rng = np.random.default_rng(seed)
    truth = truth or trajs
    one: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
    gap: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
    for traj, true in zip(trajs, truth):
        cap = per_parked if median_speed(traj) < PARKED_SPEED else per_traj
        obs = np.flatnonzero(~np.isnan(traj[:, 0]))
        picked_one, picked_gap = [], []
        for j in range(2, len(obs)):
            t = obs[j]
            if obs[j - 1] == t - 1:
                picked_one.append((obs[:j], t))
            if obs[j - 1] <= t - 4:
                picked_gap.append((obs[:j], t))
            else:
                drop = int(rng.integers(3, 11))
                hist = obs[obs < t - drop]
                if len(hist) >= 2:
                    picked_gap.append((hist, t))
        for picked, out in ((picked_one, one), (picked_gap, gap)):
            if len(picked) > cap:
                picked = [picked[i] for i in np.sort(rng.choice(len(picked), cap, replace=False))]
            out.extend((traj[h], (t - h).astype(np.float64), true[t], 1.0) for h, t in picked)
    return {"1-step": _pack(one, None), "gap": _pack(gap, None)}


def half_rate(trajs: list[np.ndarray]) -> list[np.ndarray]:
    """The same trajectories as a camera at half the frame rate would see them (both frame phases)."""
    return [t[p::2] for t in trajs for p in (0, 1) if (~np.isnan(t[p::2, 0])).sum() >= 3]


# ----------------------------------------------------------------------------------------------- metrics


def box_metrics(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per box: centre distance in heights of the true box, and IoU."""
    pc = (pred[:, :2] + pred[:, 2:]) / 2
    tc = (true[:, :2] + true[:, 2:]) / 2
    th = np.maximum(true[:, 3] - true[:, 1], 1e-6)
    err = np.linalg.norm(pc - tc, axis=1) / th
    lt = np.maximum(pred[:, :2], true[:, :2])
    rb = np.minimum(pred[:, 2:], true[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda b: np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1)  # noqa: E731
    iou = inter / np.maximum(area(pred) + area(true) - inter, 1e-9)
    return err, iou


def _as_fn(predictor: Predictor | PredictFn) -> PredictFn:
    return predictor.predict if hasattr(predictor, "predict") else predictor  # type: ignore[union-attr,return-value]


def score(predictor: Predictor | PredictFn, ex: Examples) -> dict[str, float]:
    """mean / median centre error (in box heights) and mean IoU of one predictor on one set of examples."""
    if not len(ex):
        return {"n": 0, "mean_err": float("nan"), "median_err": float("nan"), "iou": float("nan")}
    pred = np.asarray(_as_fn(predictor)(ex.boxes, ex.ages, ex.valid), np.float64)
    err, iou = box_metrics(pred, ex.target)
    return {"n": len(ex), "mean_err": float(err.mean()), "median_err": float(np.median(err)), "iou": float(iou.mean())}


def held_out_sets(n_generated: int = 300) -> dict[str, dict[str, Examples]]:
    """The held-out problems: real tracklets (at their own and at half the frame rate) and generated ones."""
    _, real_test = real_trajectories()
    sets = {
        "real": evaluation_examples(real_test, seed=7),
        "real@half-rate": evaluation_examples(half_rate(real_test), seed=8),
    }
    synth = generated_trajectories(TEST_SYNTH_SEED, n_generated)
    if synth:
        rng = np.random.default_rng(10)
        noisy = [detector_noise(t, rng) for t in synth]
        sets["generated"] = evaluation_examples(noisy, seed=9, per_traj=5)
        sets["generated, exact boxes"] = evaluation_examples(synth, seed=9, per_traj=5)
        sets["generated, vs true box"] = evaluation_examples(noisy, seed=9, per_traj=5, truth=synth)
    return sets


def evaluate(
    predictor: Predictor | PredictFn, sets: dict[str, dict[str, Examples]] | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """{subset: {horizon: metrics}} of a predictor (MotionPredictor, a Kalman function, ...) on held-out sets."""
    sets = sets if sets is not None else held_out_sets()
    return {name: {h: score(predictor, ex) for h, ex in by_h.items()} for name, by_h in sets.items()}


def format_table(results: dict[str, dict[str, dict[str, dict[str, float]]]]) -> str:
    """results: {predictor name: evaluate(...)} -> a text table, one row per subset, horizon and predictor."""
    lines = [f"{'subset':<24}{'horizon':<8}{'predictor':<22}{'n':>6}{'mean err':>10}{'median err':>12}{'mean IoU':>10}"]
    first = next(iter(results.values()))
    for subset, by_h in first.items():
        for h in by_h:
            for name, res in results.items():
                m = res[subset][h]
                lines.append(
                    f"{subset:<24}{h:<8}{name:<22}{m['n']:>6}{m['mean_err']:>10.4f}{m['median_err']:>12.4f}{m['iou']:>10.4f}"
                )
    return "\n".join(lines)


def tune_kalman(sets: dict[str, dict[str, Examples]]) -> tuple[float, float]:
    """The (std_weight_position, std_weight_velocity) with the best mean IoU over the given (training) sets.

    Only the ratio of the two matters: scaling both scales every covariance alike and leaves the gain as is.
    """
    best = (-1.0, (STD_WEIGHT_POSITION, STD_WEIGHT_VELOCITY))
    wp = STD_WEIGHT_POSITION
    for ratio in (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0):
        wv = wp * ratio
        fn = lambda b, a, v: kalman_predict(b, a, v, wp, wv)  # noqa: E731
        ious = [score(fn, ex)["iou"] for by_h in sets.values() for ex in by_h.values() if len(ex)]
        if np.mean(ious) > best[0]:
            best = (float(np.mean(ious)), (wp, wv))
    return best[1]


# ----------------------------------------------------------------------------------------------- training


def _tensors(ex: Examples, history: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    seq, ctx, ref, _ = encode(ex.boxes, ex.ages, ex.valid, history)
    tgt = target_offsets(ex.target, ref)
    return torch.from_numpy(seq), torch.from_numpy(ctx), torch.from_numpy(tgt), torch.from_numpy(ex.weight.astype(np.float32))


def train(
    epochs: int = 12,
    epoch_size: int = 120_000,
    history: int = 16,
    hidden: int = 64,
    layers: int = 1,
    batch: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
    n_synth: int = 2000,
    real_fraction: float = 0.5,
    log: Callable[[str], None] = print,
    tracked_fraction: float = 0.0,
    uncertainty: bool = False,
) -> tuple[MotionLSTM, dict]:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    real_train, _ = real_trajectories()
    synth_train = generated_trajectories(TRAIN_SYNTH_SEED, n_synth)
    tracked: list[np.ndarray] = []
    if tracked_fraction > 0:
        from tools.tracker_histories import training_histories

        tracked = training_histories(log)
    log(f"training material: {len(real_train)} real tracklets, {len(synth_train)} generated trajectories, "
        f"{len(tracked)} tracker histories")
    model = MotionLSTM(hidden, layers, uncertainty)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (epoch_size // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = nn.SmoothL1Loss(reduction="none", beta=0.05)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        ex = training_examples(real_train, synth_train, rng, history, epoch_size, real_fraction, tracked, tracked_fraction)
        seq, ctx, tgt, w = _tensors(ex, history)
        order = torch.from_numpy(rng.permutation(len(ex)))
        total, count = 0.0, 0
        model.train()
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            out = model(seq[idx], ctx[idx])
            per = loss_fn(out[:, :4], tgt[idx]).sum(1)
            if uncertainty:  # the spread learns how far off the (separately trained) mean is: Gaussian NLL
                logvar = out[:, 4:].clamp(-20, 20)
                per = per + 0.1 * 0.5 * (logvar + (tgt[idx] - out[:, :4].detach()) ** 2 / torch.exp(logvar)).sum(1)
            loss = (per * w[idx]).sum() / w[idx].sum()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / count:.4f} ({time.perf_counter() - t0:.0f} s)")
    hparams = {
        "history": history, "hidden": hidden, "layers": layers, "seed": seed, "epochs": epochs,
        "epoch_size": epoch_size, "n_synth": n_synth, "real_fraction": real_fraction,
        "tracked_fraction": tracked_fraction, "uncertainty": uncertainty,
    }
    return model.eval(), hparams


def save(model: MotionLSTM, hparams: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    normalisation = {
        "frame": "newest observed box: centre offsets / its height, log(w / w_ref), log(h / h_ref)",
        "ages": "frames before the target; features log(age), min(age, 100) / 10",
        "clip": 10.0,
    }
    torch.save({"state_dict": model.state_dict(), "hparams": hparams, "normalisation": normalisation}, out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--epoch-size", type=int, default=120_000)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", type=int, default=2000, help="generated training trajectories")
    ap.add_argument("--no-tune", action="store_true", help="skip the tuned-Kalman baseline")
    ap.add_argument("--tracked", type=float, default=0.5, metavar="FRACTION",
                    help="share of each epoch from the tracker's own histories (tools/tracker_histories.py); 0: none")
    ap.add_argument("--no-uncertainty", action="store_true", help="no predictive spread (the model of before)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # reproducible, and the machine is shared
    t0 = time.perf_counter()
    model, hp = train(
        args.epochs, args.epoch_size, hidden=args.hidden, layers=args.layers, seed=args.seed, n_synth=args.synthetic,
        tracked_fraction=args.tracked, uncertainty=not args.no_uncertainty,
    )
    save(model, hp, args.out)
    print(f"wrote {args.out} ({sum(p.numel() for p in model.parameters())} parameters), "
          f"training {time.perf_counter() - t0:.0f} s")

    sets = held_out_sets()
    results: dict[str, dict] = {
        "LSTM": evaluate(MotionPredictor(args.out), sets),
        "Kalman ByteTrack": evaluate(kalman_predict, sets),
        "Kalman BT, lost vh=0": evaluate(lambda b, a, v: kalman_predict(b, a, v, freeze_height_when_lost=True), sets),
    }
    if not args.no_tune:
        real_train, _ = real_trajectories()
        tune_sets = {"real": evaluation_examples(real_train, seed=11)}
        synth = generated_trajectories(TUNE_SYNTH_SEED, 200)
        if synth:
            rng = np.random.default_rng(13)
            tune_sets["generated"] = evaluation_examples([detector_noise(t, rng) for t in synth], seed=12, per_traj=5)
        wp, wv = tune_kalman(tune_sets)
        results[f"Kalman tuned {1 / wp:.0f}/{1 / wv:.0f}"] = evaluate(
            lambda b, a, v: kalman_predict(b, a, v, wp, wv), sets
        )
    print("held-out: centre error in true-box heights; 1-step = seen in the previous frame; gap = >=3 frames unseen")
    print(format_table(results))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
