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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from pipeline.detections import Detections
from stages.track.anomaly import ANOMALY_SCORE, DEFAULT_WEIGHTS, MIN_OBSERVED, SUMMARY_NAMES, WINDOW, Calibration, Memory, Tails, build_module, track_window
from tools.training import cosine_schedule, save_state_dict

Track = tuple[np.ndarray, np.ndarray]  # boxes [T, 4], times [T] (s)
Event = tuple[int, str, float, float]  # track key, anomaly type, first and last second


# COCO-SSD's person boxes against the truth of two rendered TRAIN scenes (1557 matched boxes in full view): each
# edge off by about 5% of the box's height (left/right 4.6%, top 5.8%, bottom 6.0%), the error of one frame
# carried 0.5-0.7 into the next
JITTER = (0.046, 0.058, 0.046, 0.060)
JITTER_CARRY = 0.6


def jitter(boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Detector-like noise: each edge moves by a fraction JITTER of the box's height, as an AR(1) series over the
    track's frames (a detector's error persists a few frames)."""
    from scipy.signal import lfilter

    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    x = rng.normal(0, 1, boxes.shape)
    x[1:] *= np.sqrt(1 - JITTER_CARRY**2)  # the first frame's draw is the stationary start
    noise = lfilter([1.0], [1.0, -JITTER_CARRY], x, axis=0)
    return (boxes + noise * np.array(JITTER) * h).astype(np.float32)


def in_frame(boxes: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Boxes clipped to the frame, as a detector's are."""
    w, h = frame_size
    return np.clip(boxes, 0, np.array([w, h, w, h], np.float32))


@dataclass
class Windows:
    """Windows as the stage scores them, in order along each track: features, the track's memory, the label
    (0 normal, 1 + ANOMALY_TYPES index inside an anomaly, -1 otherwise), which track and when (its last frame)."""

    x: np.ndarray
    memory: np.ndarray  # [N, 4] the track's Memory at the window's end
    y: np.ndarray
    track: np.ndarray
    seconds: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def take(self, keep: np.ndarray) -> Windows:
        return Windows(self.x[keep], self.memory[keep], self.y[keep], self.track[keep], self.seconds[keep])


def track_windows(tracks: Iterable[tuple[Track, np.ndarray | None]], stride: int, frame_size: tuple[int, int], scene: bool,
                  rng: np.random.Generator | None) -> Windows:  # fmt: skip
    """Every stride-th window of every track that the stage would score, built as it builds them (boxes jittered as
    a detector's and clipped to the frame when `rng` is given). A track comes with its per-frame labels or None."""
    xs, dw, ys, ks, ts = [], [], [], [], []
    for k, ((boxes, times), labels) in enumerate(tracks):
        b = in_frame(jitter(boxes, rng), frame_size) if rng is not None else boxes
        memory, before = Memory(), np.zeros((len(b), 4))
        ends = set(range(MIN_OBSERVED - 1, len(b), stride))
        for i in range(len(b)):
            before[i, :2] = memory.update(b[i], float(times[i]), frame_size)
            if i in ends:
                before[i, 2:] = memory.long_view()
        for end in range(MIN_OBSERVED, len(b) + 1, stride):
            start = max(0, end - WINDOW)
            win = track_window(b[start:end], times[start:end], frame_size, scene)
            if win is None:
                continue
            xs.append(win)
            dw.append(before[end - 1])
            ks.append(k)
            ts.append(times[end - 1])
            if labels is None:
                ys.append(0)
            else:
                last = int(labels[end - 1])
                ys.append(0 if not labels[start:end].any() else (last if last > 0 else -1))
    if not xs:
        return Windows(np.zeros((0, WINDOW, 0), np.float32), np.zeros((0, 4)), np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    return Windows(np.stack(xs), np.array(dw), np.array(ys), np.array(ks), np.array(ts))


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


def fit(train: Windows, tune: Windows, args: argparse.Namespace, scene: bool, frame_size: tuple[int, int] | None) -> tuple[torch.nn.Module, Calibration]:
    """The autoencoder on the normal training windows; the tails of every summary feature and of its error on the
    same windows; the threshold on the raw tail score that normal tuning windows exceed at the false-alarm rate."""
    torch.manual_seed(args.seed)
    flat = train.x.reshape(-1, train.x.shape[-1])
    mean, std = flat.mean(0), flat.std(0) + 1e-3
    cal = Calibration(mean.astype(np.float32), std.astype(np.float32), 1.0, args.false_alarm_rate, scene, frame_size)
    x = torch.from_numpy(cal.normalise(train.x))
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
    if not scene:
        # The generic autoencoder learnt the generated walkers' paths: on a real detector's and tracker's boxes it
        # errs on occlusions and id hand-overs (3 false alerts in 80 s of two rendered TRAIN scenes replayed through
        # COCO-SSD and the tracker; 0 without it). A scene model's autoencoder learns its camera's real tracks.
        cal.used = tuple(n for n in SUMMARY_NAMES if n != "rebuild error")
    cal.tails = Tails.fit(cal.features(train.x, train.memory, errors(net, train.x, cal)))
    raw = cal.raw(cal.features(tune.x, tune.memory, errors(net, tune.x, cal)))
    cal.threshold = float(np.quantile(raw, 1 - args.false_alarm_rate))
    cal.info = {"train_windows": int(len(train)), "tune_windows": int(len(tune))}
    print(f"threshold: tail score {cal.threshold:.2f} (-log10 of the rarest feature's exceedance probability), exceeded by "
          f"{args.false_alarm_rate:.2%} of {len(tune)} normal tuning windows")  # fmt: skip
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
        train = track_windows([(t, None) for t in tracks[:-cut]], 2, size, True, rng)
        tune = track_windows([(t, None) for t in tracks[-cut:]], 1, size, True, None)
        net, cal = fit(train, tune, args, True, size)
        save(net, cal, args.out)
        return
    t0 = time.perf_counter()
    train, _ = labelled_windows("train", args.sequences, 2, rng)
    tune, _ = labelled_windows("tune", args.tune_sequences, 1, np.random.default_rng(args.seed + 1))
    tune = tune.take(tune.y == 0)  # the threshold is set on normal motion only
    print(f"{len(train)} training windows, {len(tune)} normal tuning windows ({time.perf_counter() - t0:.0f} s)")
    net, cal = fit(train, tune, args, False, None)
    save(net, cal, args.out)
    evaluate(net, cal, args.eval_sequences)


def labelled_windows(split: str, n: int, stride: int, rng: np.random.Generator) -> tuple[Windows, list[list[Event]]]:
    """The windows of the split's scenes' tracks (track keys numbered across scenes) and, per scene, its anomaly
    events as (track key, type, first and last second)."""
    from tools.anomaly_scenes import split_specs, trajectories
    from tools.synthetic import CAMPUS_SIZE

    tracks: list[tuple[Track, np.ndarray | None]] = []
    events: list[list[Event]] = []
    for spec in split_specs(split, n):
        scene_events = []
        for tr in trajectories(spec):
            scene_events += [(len(tracks), a.type, a.first_frame / spec.fps, a.last_frame / spec.fps) for a in tr.anomalies]
            tracks.append(((tr.boxes.astype(np.float32), tr.frames / spec.fps), tr.labels))
        events.append(scene_events)
    return track_windows(tracks, stride, CAMPUS_SIZE, False, rng), events


def evaluate(net: torch.nn.Module, cal: Calibration, n: int, min_duration_s: float = 1.0, cooldown_s: float = 30.0) -> None:
    """Figures on the EVAL scenes (never used for a choice). Per window and anomaly type: the AUC against normal
    windows and the recall at the threshold, for the whole model and for the autoencoder's error alone. Per event,
    as the anomaly rule alerts (score at or above 1 for `min_duration_s`, then quiet for `cooldown_s`): which events
    got an alert while they lasted (or within 2 s after), and alerts on tracks then in no anomaly per hour of scene."""
    from tools.anomaly_scenes import ANOMALY_TYPES

    w, events = labelled_windows("eval", n, 1, np.random.default_rng(12345))
    feats = cal.features(w.x, w.memory, errors(net, w.x, cal))
    score = cal.score(feats)
    ae = feats[:, -1]  # the autoencoder's rebuild error alone
    normal = w.y == 0
    print(f"HELD-OUT (EVAL seeds, {n} scenes of 40 s, people not in training): {int(normal.sum())} normal windows, "
          f"{(score[normal] >= 1).mean():.4f} of them at or above the threshold (calibrated for {cal.false_alarm_rate} on TUNE)")  # fmt: skip
    print(f"  {'anomaly':16s} {'windows':>7s} {'AUC':>6s} {'recall@1':>8s} {'AE AUC':>7s}")
    for k, kind in enumerate(ANOMALY_TYPES, 1):
        pos = w.y == k
        print(f"  {kind:16s} {int(pos.sum()):7d} {auc(score[pos], score[normal]):6.3f} {(score[pos] >= 1).mean():8.3f} {auc(ae[pos], ae[normal]):7.3f}")
    alerts = rule_alerts(w, score, min_duration_s, cooldown_s)
    hit: dict[str, list[bool]] = {k: [] for k in ANOMALY_TYPES}
    explained = set()
    for scene in events:
        for key, kind, first, last in scene:
            got = [i for i, (k, t) in enumerate(alerts) if k == key and first <= t <= last + 2.0]
            hit[kind].append(bool(got))
            explained.update(got)
    false = [alerts[i] for i in range(len(alerts)) if i not in explained]
    hours = n * 40.0 / 3600
    print(f"alerts as the rule raises them (score >= 1 for {min_duration_s} s, {cooldown_s:.0f} s cooldown): {len(alerts)}; "
          f"false {len(false)} = {len(false) / hours:.1f} per hour of a scene with about 10 people in view")  # fmt: skip
    for kind, got in hit.items():
        print(f"  {kind:16s} {sum(got)}/{len(got)} events alerted")


def rule_alerts(w: Windows, score: np.ndarray, min_duration_s: float, cooldown_s: float) -> list[tuple[int, float]]:
    """(track key, second) of each alert the analyze stage's anomaly rule raises on these windows' scores, one track
    at a time; a track's frames without a window (the stage writes NaN there) end its run, as in the stage."""
    from pipeline.categories import category_id
    from stages.analyze.options import StreamAnalyticsConfig
    from stages.analyze.scene import Scene

    cfg = StreamAnalyticsConfig.model_validate(
        {"frame_size": [100, 100], "rules": [{"name": "anomaly", "type": "anomaly", "min_duration_s": min_duration_s, "cooldown_s": cooldown_s}]}
    )
    out: list[tuple[int, float]] = []
    starts = np.flatnonzero(np.r_[True, w.track[1:] != w.track[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(w)]):
        key, scene, seq = int(w.track[a]), Scene(cfg, forget_after_s=10.0, speed_window_s=1.0), 0
        for i in range(a, b):
            t = float(w.seconds[i])
            if i > a and t - w.seconds[i - 1] > 0.15:
                steps = [(t - 0.1, float("nan")), (t, float(score[i]))]  # a frame between without a score
            else:
                steps = [(t, float(score[i]))]
            for pts, s in steps:
                d = Detections(np.array([[0, 0, 10, 30]], np.float32), np.ones(1, np.float32), np.full(1, category_id("person"), np.int32),
                               np.array([key], np.int64), {ANOMALY_SCORE: np.array([s], np.float32)})  # fmt: skip
                out += [(key, pts) for _ in scene.update(seq, pts, 100, 100, d).firings]
                seq += 1
    return out


if __name__ == "__main__":
    main()
