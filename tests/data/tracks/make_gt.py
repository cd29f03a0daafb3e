"""Interpolate the hand-labelled keyframes into MOT-challenge ground truth.

    python tests/data/tracks/make_gt.py                      # writes vtest_0-299_gt.txt
    python tests/data/tracks/make_gt.py --render OUTDIR      # also draw boxes on review frames
    python tests/data/tracks/make_gt.py --render OUTDIR --frames 5,45,95 --scale 2

Keyframe file: {"video", "frames": [first, last], "tracks": {id: [keyframe, ...]}}.
A keyframe is {"frame": n, "box": [x1, y1, x2, y2], "visibility": v} (x2, y2
exclusive) or {"frame": n, "outside": true}, which means the person has no box
from frame n until their next keyframe (hidden completely or out of view).
Between two consecutive box keyframes the box is interpolated linearly,
coordinate by coordinate, and rounded to the nearest pixel. The visibility of
an interpolated box is the lower of the two keyframes' values (so a stretch
that starts or ends as "ignore" (0.0) stays ignored). A track has no box
before its first or after its last keyframe.

Output: one line per box, `frame,id,x,y,w,h,conf,class,visibility` with
frame = frame index + 1 (MOT convention), conf 1, class 1 (pedestrian),
sorted by frame then id.
"""
import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
KEYFRAMES = os.path.join(HERE, "vtest_0-299_keyframes.json")
VIDEO = os.path.join(HERE, "..", "..", "..", "sample_videos", "vtest.avi")
DEFAULT_REVIEW = [5, 15, 25, 35, 45, 57, 65, 75, 85, 95, 103, 113, 125, 128, 139, 145,
                  152, 155, 157, 162, 167, 172, 177, 185, 195, 205, 212, 215, 225, 235, 245]


def interpolate(data):
    """Return {frame_index: [(id, [x1,y1,x2,y2], vis, is_keyframe), ...]}."""
    first, last = data["frames"]
    out = {n: [] for n in range(first, last + 1)}
    for tid, kfs in data["tracks"].items():
        tid = int(tid)
        kfs = sorted(kfs, key=lambda k: k["frame"])
        frames = [k["frame"] for k in kfs]
        if len(set(frames)) != len(frames):
            raise ValueError(f"track {tid}: duplicate keyframe")
        for a, b in zip(kfs, kfs[1:] + [None]):
            if a.get("outside"):
                continue
            ba = np.array(a["box"], float)
            out[a["frame"]].append((tid, [int(v) for v in ba], float(a["visibility"]), True))
            if b is None or b.get("outside"):
                continue
            bb = np.array(b["box"], float)
            vis = min(float(a["visibility"]), float(b["visibility"]))
            for n in range(a["frame"] + 1, b["frame"]):
                t = (n - a["frame"]) / (b["frame"] - a["frame"])
                box = np.floor(ba + t * (bb - ba) + 0.5).astype(int)
                out[n].append((tid, box.tolist(), vis, False))
    for n in out:
        out[n].sort()
    return out


def write_mot(boxes, path):
    lines = []
    for n in sorted(boxes):
        for tid, (x1, y1, x2, y2), vis, _ in boxes[n]:
            lines.append(f"{n + 1},{tid},{x1},{y1},{x2 - x1},{y2 - y1},1,1,{vis:g}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines)


def read_frames(wanted):
    """Sequential read() from frame 0, no seeking (as the labels were made)."""
    import cv2
    cap = cv2.VideoCapture(VIDEO)
    got, n, last = {}, 0, max(wanted)
    while n <= last:
        ok, img = cap.read()
        if not ok:
            break
        if n in wanted:
            got[n] = img
        n += 1
    return got


def render(boxes, outdir, frames, scale):
    import cv2
    os.makedirs(outdir, exist_ok=True)
    colours = [(0, 0, 255), (0, 200, 0), (255, 0, 0), (0, 200, 255), (255, 0, 255),
               (255, 255, 0), (0, 128, 255), (128, 0, 255), (255, 128, 0), (0, 255, 128)]
    imgs = read_frames(set(frames))
    for n in frames:
        img = cv2.resize(imgs[n], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        for tid, (x1, y1, x2, y2), vis, kf in boxes.get(n, []):
            c = (0, 165, 255) if vis == 0 else colours[tid % len(colours)]
            p1 = (int(x1 * scale), int(y1 * scale))
            p2 = (int(x2 * scale) - 1, int(y2 * scale) - 1)
            cv2.rectangle(img, p1, p2, c, 1)
            label = f"{tid}{'' if kf else '*'}{' ign' if vis == 0 else ''}"
            cv2.putText(img, label, (p1[0], max(p1[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * scale, c, 1)
        cv2.putText(img, f"frame {n}", (10, img.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6 * scale, (0, 0, 255), 2)
        cv2.imwrite(os.path.join(outdir, f"frame_{n:03d}.png"), img)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keyframes", default=KEYFRAMES)
    ap.add_argument("--out", default=None, help="gt path (default: next to the keyframes)")
    ap.add_argument("--render", metavar="OUTDIR", help="draw boxes and ids on review frames")
    ap.add_argument("--frames", default=None, help="comma list of 0-based frames to render")
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    with open(args.keyframes) as f:
        data = json.load(f)
    boxes = interpolate(data)
    out = args.out or args.keyframes.replace("_keyframes.json", "_gt.txt")
    n = write_mot(boxes, out)
    nkf = sum(1 for k in data["tracks"].values() for e in k if not e.get("outside"))
    print(f"{out}: {n} boxes, {len(data['tracks'])} ids, {nkf} keyframe boxes")
    if args.render:
        frames = [int(s) for s in args.frames.split(",")] if args.frames else DEFAULT_REVIEW
        render(boxes, args.render, frames, args.scale)
        print(f"rendered {len(frames)} frames to {args.render}")


if __name__ == "__main__":
    main()
