"""Frames of a replay's annotated video side by side, as one JPEG for the README (docs/analytics-frames.jpg).

    vidpipe replay --config deploy/config/vtest-analytics.yaml sample_videos/vtest.avi --out out
    python -m tools.readme_frames out --stream vtest --out docs/analytics-frames.jpg

Picks the busiest frames (most objects) once the line has counted someone, at least `--gap` frames apart, and
says for each how many labels it has and whether any two overlap, the zones' and lines' included (placed as the
record stage placed them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from pipeline.analytics import Analytics
from pipeline.config import load_config
from pipeline.draw import label_scale, label_size, place_labels
from stages.analyze.options import StreamAnalyticsConfig
from stages.analyze.overlay import analytics_configs, analytics_labels, label_rects
from stages.record import label_text
from tools.tracklets import read_frames


def overlaps(record: dict, analytics: StreamAnalyticsConfig | None) -> int:  # type: ignore[type-arg]
    """How many pairs of the frame's labels (its objects', its zones' and lines') overlap, placed as the recorded
    video places them."""
    objects, width, height = record["objects"], record["width"], record["height"]
    taken: list[tuple[int, int, int, int]] = []
    if analytics is not None:
        facts = record.get("analytics") or {}
        state = Analytics(counts=facts.get("counts"), occupancy=facts.get("occupancy"))
        taken = label_rects(analytics_labels(analytics, state, width, height), width, height)
    scale = label_scale(width, height)
    texts = [label_text(c, t, s) for c, t, s in zip(objects["classes"], objects["track_ids"], objects["scores"])]
    sizes = [label_size(t, scale) for t in texts]
    spots = place_labels(np.asarray(objects["boxes"], dtype=np.float64).reshape(-1, 4), sizes, width, height, taken)
    rects = taken + [(x, y, x + w, y + h) for (x, y), (w, h) in zip(spots, sizes)]
    return sum(1 for i, a in enumerate(rects) for b in rects[i + 1 :] if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def pick(records: list[dict], count: int, gap: int) -> list[int]:  # type: ignore[type-arg]
    """The seqs of the busiest frames once a line has counted someone, `gap` frames apart."""
    def counted(r: dict) -> bool:  # type: ignore[type-arg]
        counts = (r.get("analytics") or {}).get("counts") or {}
        return any(sum(c.values()) for c in counts.values())

    ranked = sorted((r for r in records if counted(r)), key=lambda r: (-len(r["objects"]["boxes"]), r["seq"]))
    chosen: list[int] = []
    for r in ranked:
        if all(abs(r["seq"] - s) >= gap for s in chosen):
            chosen.append(r["seq"])
        if len(chosen) == count:
            break
    return sorted(chosen)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="a replay's --out folder")
    p.add_argument("--stream", default="vtest")
    p.add_argument("--count", type=int, default=2)
    p.add_argument("--gap", type=int, default=150, help="frames between two picked frames, at least")
    p.add_argument("--out", type=Path, default=Path("docs/analytics-frames.jpg"))
    p.add_argument("--config", type=Path, help="the config the replay ran (default: its config.yaml): the zones and lines drawn")
    args = p.parse_args(argv)
    analytics = analytics_configs(load_config(args.config or args.results / "config.yaml")).get(args.stream)
    records = [json.loads(line) for line in (args.results / f"{args.stream}.jsonl").read_text().splitlines()]
    seqs = pick(records, args.count, args.gap)
    if not seqs:
        print("no frame with a line count in these results (an analytics replay?)", file=sys.stderr)
        return 1
    frames = {i: image for i, image in read_frames(args.results / f"{args.stream}.mp4", seqs[0], seqs[-1] + 1) if i in seqs}
    for s in seqs:
        r = records[s]
        print(f"frame {s}: {len(r['objects']['boxes'])} labels, {overlaps(r, analytics)} overlapping pairs")
    montage = np.hstack([frames[s] for s in seqs])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), montage, [cv2.IMWRITE_JPEG_QUALITY, 82])
    print(f"wrote {args.out} ({montage.shape[1]}x{montage.shape[0]}, {args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
