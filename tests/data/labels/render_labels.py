#!/usr/bin/env python3
"""Draw the hand-labelled ground-truth boxes onto their video frames for review.

Usage:
    python tests/data/labels/render_labels.py OUTDIR [--scale S] [--crops] [--grid N]
                                              [--labels PATH] [--videos DIR]

For every frame listed in detections.json this decodes the frame (0-based,
sequential cv2.VideoCapture reads, counting reads), checks its sha256 against
the label file, and writes:

  OUTDIR/<video-stem>_<frame:04d>.png        whole frame, upscaled by --scale
                                             (default 2), boxes drawn, each box
                                             tagged "<index>:<class>"
  OUTDIR/<video-stem>_<frame:04d>_crops.png  (with --crops) one zoomed tile per
                                             box, 15 px margin, with a 10 px
                                             grid in original-image coordinates

Colours: red = person, blue = car/bus/truck, green = bicycle/motorcycle,
orange = any object marked "ignore": true.  A box is drawn on the pixels
x1..x2-1 / y1..y2-1 (x2, y2 are exclusive).

Optionally --grid N overlays a labelled N-pixel grid on the whole-frame image.
No detector of any kind is involved; this only visualises the stored labels.
"""
import argparse
import hashlib
import json
import os
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def colour(obj):
    if obj.get("ignore"):
        return (0, 165, 255)
    c = obj["class"]
    if c == "person":
        return (0, 0, 255)
    if c in ("car", "bus", "truck"):
        return (255, 80, 0)
    return (0, 170, 0)


def read_frames(path, indices):
    """Return {index: BGR frame} reading sequentially and counting reads."""
    want = set(indices)
    out = {}
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise SystemExit("cannot open %s" % path)
    i = 0
    while want:
        ok, img = cap.read()
        if not ok:
            break
        if i in want:
            out[i] = img
            want.discard(i)
        i += 1
    cap.release()
    if want:
        raise SystemExit("%s: frames %s not reached" % (path, sorted(want)))
    return out


def draw_grid(canvas, scale, step, w, h):
    for gx in range(0, w + 1, step):
        X = int(gx * scale)
        canvas[:, min(X, canvas.shape[1] - 1)][::3] = (200, 200, 200)
        cv2.putText(canvas, str(gx), (X + 2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1)
    for gy in range(0, h + 1, step):
        Y = int(gy * scale)
        canvas[min(Y, canvas.shape[0] - 1), ::3] = (200, 200, 200)
        cv2.putText(canvas, str(gy), (2, Y - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1)


def render_frame(img, objects, scale, grid):
    h, w = img.shape[:2]
    canvas = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    if grid:
        draw_grid(canvas, scale, grid, w, h)
    for k, o in enumerate(objects):
        x1, y1, x2, y2 = o["box"]
        col = colour(o)
        p1 = (int(round(x1 * scale)), int(round(y1 * scale)))
        p2 = (int(round(x2 * scale)) - 1, int(round(y2 * scale)) - 1)
        cv2.rectangle(canvas, p1, p2, col, 1)
        tag = "%d:%s%s" % (k, o["class"], " (ign)" if o.get("ignore") else "")
        ty = p1[1] + 12 if p1[1] < 14 else p1[1] - 3
        cv2.putText(canvas, tag, (p1[0] + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3)
        cv2.putText(canvas, tag, (p1[0] + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.4, col, 1)
    return canvas


def render_crops(img, objects, margin=15, max_w=1400):
    H, W = img.shape[:2]
    tiles = []
    for k, o in enumerate(objects):
        x1, y1, x2, y2 = o["box"]
        cx1, cy1 = max(0, x1 - margin), max(0, y1 - margin)
        cx2, cy2 = min(W, x2 + margin), min(H, y2 + margin)
        s = max(1, min(6, 300 // max(cy2 - cy1, 1)))
        if (cx2 - cx1) * s > 700:
            s = max(1, 700 // (cx2 - cx1))
        crop = cv2.resize(img[cy1:cy2, cx1:cx2], None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
        pad = 22
        can = np.full((crop.shape[0] + 2 * pad, crop.shape[1] + 2 * pad, 3), 255, np.uint8)
        can[pad:pad + crop.shape[0], pad:pad + crop.shape[1]] = crop
        for gx in range((cx1 + 9) // 10 * 10, cx2 + 1, 10):
            X = pad + (gx - cx1) * s
            can[pad:pad + crop.shape[0]:3, min(X, can.shape[1] - 1)] = (160, 160, 160)
            if gx % 20 == 0:
                cv2.putText(can, str(gx), (X - 9, pad - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1)
        for gy in range((cy1 + 9) // 10 * 10, cy2 + 1, 10):
            Y = pad + (gy - cy1) * s
            can[min(Y, can.shape[0] - 1), pad:pad + crop.shape[1]:3] = (160, 160, 160)
            if gy % 20 == 0:
                cv2.putText(can, str(gy), (0, Y + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1)
        cv2.rectangle(can, (pad + (x1 - cx1) * s, pad + (y1 - cy1) * s),
                      (pad + (x2 - cx1) * s - 1, pad + (y2 - cy1) * s - 1), colour(o), 1)
        cv2.putText(can, "%d:%s%s" % (k, o["class"], " ign" if o.get("ignore") else ""),
                    (pad, can.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        tiles.append(can)
    if not tiles:
        return None
    rows, row, width = [], [], 0
    for t in tiles:
        if row and width + t.shape[1] > max_w:
            rows.append(row)
            row, width = [], 0
        row.append(t)
        width += t.shape[1]
    rows.append(row)
    imgs = []
    for r in rows:
        h = max(t.shape[0] for t in r)
        imgs.append(np.hstack([np.vstack([t, np.full((h - t.shape[0], t.shape[1], 3), 255, np.uint8)]) for t in r]))
    wmax = max(i.shape[1] for i in imgs)
    return np.vstack([np.hstack([i, np.full((i.shape[0], wmax - i.shape[1], 3), 255, np.uint8)]) for i in imgs])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--labels", default=os.path.join(HERE, "detections.json"))
    ap.add_argument("--videos", default=os.path.join(REPO, "sample_videos"))
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--grid", type=int, default=0, help="overlay a labelled grid every N px (0 = off)")
    ap.add_argument("--crops", action="store_true", help="also write per-box zoomed tiles")
    args = ap.parse_args(argv)

    with open(args.labels) as f:
        labels = json.load(f)
    os.makedirs(args.outdir, exist_ok=True)

    by_video = {}
    for fr in labels["frames"]:
        by_video.setdefault(fr["video"], []).append(fr)

    bad = 0
    for video, frames in by_video.items():
        imgs = read_frames(os.path.join(args.videos, video), [fr["frame_index"] for fr in frames])
        stem = os.path.splitext(video)[0]
        for fr in frames:
            img = imgs[fr["frame_index"]]
            sha = hashlib.sha256(img.tobytes()).hexdigest()
            if sha != fr["frame_sha256"] or img.shape[1] != fr["width"] or img.shape[0] != fr["height"]:
                print("WARNING: %s frame %d does not match the labelled frame (sha/size differ); "
                      "your decoder may differ" % (video, fr["frame_index"]), file=sys.stderr)
                bad += 1
            base = os.path.join(args.outdir, "%s_%04d" % (stem, fr["frame_index"]))
            cv2.imwrite(base + ".png", render_frame(img, fr["objects"], args.scale, args.grid))
            if args.crops:
                tiles = render_crops(img, fr["objects"])
                if tiles is not None:
                    cv2.imwrite(base + "_crops.png", tiles)
            n = len(fr["objects"])
            ni = sum(1 for o in fr["objects"] if o.get("ignore"))
            print("%s %4d: %2d objects (%d ignore) -> %s.png" % (video, fr["frame_index"], n, ni, base))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
