"""Train the trajectory anomaly model (stages/track/anomaly.py) on normal motion, calibrate it, and evaluate it.

    python -m tools.train_anomaly                                  # the generic model: stages/track/weights/anomaly.pt
    python -m tools.train_anomaly --scene out/cam1.jsonl --out cam1-anomaly.pt   # one camera's own model

Generic: normal walkers of tools/anomaly_scenes.py's TRAIN seeds (trajectories only, no rendering), their boxes
jittered as a detector's are. Per scene: the tracks of a replay of that camera's normal footage (the record
stage's JSONL); the model then also learns where people walk and which way (position features).

Calibration: the threshold is the rebuild error that normal windows exceed at `--false-alarm-rate` (per scored
window), measured on the TUNE seeds (generic) or on the last fifth of the scene's tracks, never trained on; the
score the stage writes is error / threshold.

Evaluation (generic model, after training, never used for a choice): per anomaly type of the EVAL seeds, the AUC of
windows inside the anomaly against normal windows of the same sequences, and the recall at the threshold.
Seeded and deterministic on CPU (bit-identical weights at the same --threads); prints the weights' sha256.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from stages.track.anomaly import DEFAULT_WEIGHTS, MIN_OBSERVED, WINDOW, Calibration, build_module, features, windows
from tools.training import cosine_schedule, save_state_dict

Track = tuple[np.ndarray, np.ndarray]  # boxes [T, 4], times [T] (s)


def jitter(boxes: np.ndarray, rng: np.random.Generator, amount: float = 0.03) -> np.ndarray:
    """Detector-like noise: each edge moves by about `amount` of the box's height, independently per frame."""
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return (boxes + rng.normal(0, amount, boxes.shape) * h).astype(np.float32)


def track_windows(tracks: Iterable[Track], stride: int, frame_size: tuple[int, int] | None, rng: np.random.Generator | None) -> np.ndarray:
    """Every stride-th window of every track, as the stage builds them (MIN_OBSERVED to WINDOW observations)."""
    out = []
    for boxes, times in tracks:
        b = jitter(boxes, rng) if rng is not None else boxes
        for end in range(MIN_OBSERVED, len(b) + 1, stride):
            start = max(0, end - WINDOW)
            out.append(windows(features(b[start:end], times[start:end], frame_size)))
    return np.stack(out) if out else np.zeros((0, WINDOW, 0), np.float32)


def tracks_from_jsonl(path: Path) -> tuple[list[Track], tuple[int, int]]:
    """The person tracks of a record JSONL (boxes and times per track id) and the frame size."""
    by_id: dict[int, tuple[list[list[float]], list[float]]] = {}
    size = (0, 0)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        size = (r["width"], r["height"])
        o = r["objects"]
        for box, cls, tid in zip(o["boxes"], o["classes"], o["track_ids"]):
            if tid >= 0 and cls == "person":
                b, t = by_id.setdefault(tid, ([], []))
                b.append(box)
                t.append(r["pts"])
    return [(np.array(b, np.float32), np.array(t)) for b, t in by_id.values() if len(b) >= MIN_OBSERVED], size


def errors(net: torch.nn.Module, x: np.ndarray, cal: Calibration) -> np.ndarray:
    with torch.inference_mode():
        xn = torch.from_numpy(cal.normalise(x))
        return torch.cat([net(xn[s : s + 4096]) for s in range(0, len(xn), 4096)]).numpy() if len(xn) else np.zeros(0, np.float32)


def fit(train: np.ndarray, tune: np.ndarray, args: argparse.Namespace, scene: bool, frame_size: tuple[int, int] | None) -> tuple[torch.nn.Module, Calibration]:
    torch.manual_seed(args.seed)
    flat = train.reshape(-1, train.shape[-1])
    mean, std = flat.mean(0), flat.std(0) + 1e-3
    cal = Calibration(mean.astype(np.float32), std.astype(np.float32), 1.0, args.false_alarm_rate, scene, frame_size)
    x = torch.from_numpy(cal.normalise(train))
    net = build_module(x.shape[-1])
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.seed)
    steps = math.ceil(len(x) / args.batch)
    total = steps * args.epochs
    sched = cosine_schedule(opt, total)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(x), generator=g)
        running = 0.0
        for s in range(steps):
            loss = net(x[order[s * args.batch : (s + 1) * args.batch]]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach()) / steps
        print(f"epoch {epoch + 1:3d}  rebuild error {running:.4f}  {time.perf_counter() - t0:.0f} s")
    net.eval()
    tune_err = errors(net, tune, cal)
    cal.threshold = float(np.quantile(tune_err, 1 - args.false_alarm_rate))
    cal.info = {"train_windows": int(len(train)), "tune_windows": int(len(tune)), "tune_error_median": float(np.median(tune_err))}
    print(
        f"threshold {cal.threshold:.4f}: exceeded by {args.false_alarm_rate:.2%} of {len(tune)} normal tuning windows (median error {np.median(tune_err):.4f})"
    )
    return net, cal


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    ranks = np.argsort(np.argsort(allv, kind="stable"), kind="stable").astype(np.float64) + 1
    # average ranks of ties
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def save(net: torch.nn.Module, cal: Calibration, out: Path) -> None:
    sha = save_state_dict(net.state_dict(), out)
    cal.save(out)
    print(f"wrote {out} ({out.stat().st_size:,} bytes, sha256 {sha}) and {out.with_suffix('.json').name}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the trajectory anomaly model on normal motion and calibrate it.")
    p.add_argument("--scene", type=Path, help="a record JSONL of one camera's normal footage: train that camera's own model")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sequences", type=int, default=200, help="generic: normal TRAIN scenes (40 s each)")
    p.add_argument("--tune-sequences", type=int, default=40, help="generic: TUNE scenes (their normal windows set the threshold)")
    p.add_argument("--eval-sequences", type=int, default=40, help="generic: EVAL scenes for the figures")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--false-alarm-rate", type=float, default=0.001, help="per scored window, on normal tuning data")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)
    if args.scene is not None:
        tracks, size = tracks_from_jsonl(args.scene)
        if len(tracks) < 5:
            raise SystemExit(f"{args.scene}: {len(tracks)} person tracks of {MIN_OBSERVED}+ frames; a scene model needs more normal footage")
        cut = max(1, len(tracks) // 5)
        net, cal = fit(track_windows(tracks[:-cut], 2, size, rng), track_windows(tracks[-cut:], 1, size, None), args, True, size)
        save(net, cal, args.out)
        return
    t0 = time.perf_counter()
    train, _ = labelled_windows("train", args.sequences, 2, rng)
    tune, tune_labels = labelled_windows("tune", args.tune_sequences, 1, np.random.default_rng(args.seed + 1))
    tune = tune[tune_labels == 0]  # the threshold is set on normal motion only
    print(f"{len(train)} training windows, {len(tune)} normal tuning windows ({time.perf_counter() - t0:.0f} s)")
    net, cal = fit(train, tune, args, False, None)
    save(net, cal, args.out)
    evaluate(net, cal, args.eval_sequences)


def labelled_windows(split: str, n: int, stride: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Windows of the split's scenes' tracks (boxes jittered) and their labels: 0 where every frame of the window is
    normal, 1 + ANOMALY_TYPES index where the window's last frame is in an anomaly, -1 otherwise (not used)."""
    from tools.anomaly_scenes import split_specs, trajectories

    xs, ys = [], []
    for spec in split_specs(split, n):
        for tr in trajectories(spec):
            b = jitter(tr.boxes.astype(np.float32), rng)
            times = tr.frames / spec.fps
            for end in range(MIN_OBSERVED, len(b) + 1, stride):
                start = max(0, end - WINDOW)
                xs.append(windows(features(b[start:end], times[start:end])))
                last = int(tr.labels[end - 1])
                ys.append(0 if not tr.labels[start:end].any() else (last if last > 0 else -1))
    return np.stack(xs), np.array(ys)


def evaluate(net: torch.nn.Module, cal: Calibration, n: int) -> None:
    """Per anomaly type on the EVAL scenes: AUC of its windows against the normal ones, recall at the threshold."""
    from tools.anomaly_scenes import ANOMALY_TYPES

    x, y = labelled_windows("eval", n, 1, np.random.default_rng(12345))
    score = errors(net, x, cal) / cal.threshold
    normal = score[y == 0]
    print(f"HELD-OUT (EVAL seeds, {n} scenes, people not in training): {int((y == 0).sum())} normal windows, "
          f"{(normal >= 1).mean():.4f} of them at or above the threshold (calibrated for {cal.false_alarm_rate})")  # fmt: skip
    print(f"  {'anomaly':16s} {'windows':>7s} {'AUC':>6s} {'recall@1':>8s}")
    for k, name in enumerate(ANOMALY_TYPES, 1):
        pos = score[y == k]
        print(f"  {name:16s} {len(pos):7d} {auc(pos, normal):6.3f} {(pos >= 1).mean() if len(pos) else float('nan'):8.3f}")


if __name__ == "__main__":
    main()
