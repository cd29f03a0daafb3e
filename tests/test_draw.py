"""What the recorded video and the live view draw: labels that neither cover each other nor leave the frame, text
scaled to the frame, and the analytics (zones, lines, counts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.analytics import Analytics
from pipeline.draw import draw_boxes, label_scale, label_size, place_labels
from stages.analyze.options import StreamAnalyticsConfig
from stages.analyze.overlay import LINE_COLOR, ZONE_COLOR, analytics_labels, draw_analytics, label_rects


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_labels_of_a_crowd_do_not_cover_each_other_and_stay_inside() -> None:
    rng = np.random.default_rng(1)
    w, h = 768, 576
    # A group of eight people side by side (their labels would all sit on one row) and one at the right edge.
    boxes = [[300 + 14 * i, 200 + rng.integers(-4, 4), 330 + 14 * i, 290] for i in range(8)] + [[740, 100, 767, 180]]
    texts = [f"person #{10 + i} 0.{70 + i}" for i in range(9)]
    scale = label_scale(w, h)
    sizes = [label_size(t, scale) for t in texts]
    spots = place_labels(np.array(boxes, np.float32), sizes, w, h)
    rects = [(x, y, x + sw, y + sh) for (x, y), (sw, sh) in zip(spots, sizes)]
    assert all(0 <= r[0] and r[2] <= w and 0 <= r[1] and r[3] <= h for r in rects), rects
    assert not any(_overlaps(rects[i], rects[j]) for i in range(len(rects)) for j in range(i)), rects
    image = np.zeros((h, w, 3), np.uint8)
    draw_boxes(image, np.array(boxes, np.float32), [(0, 255, 0)] * len(boxes), texts)
    assert image[:, -1].any()  # the right-edge label is drawn up to the edge, not cut off beyond it


def test_labels_go_around_the_counts_of_a_line() -> None:
    """A person right below a line's count label: their label finds another place, and nothing covers the count."""
    cfg = StreamAnalyticsConfig.model_validate({"frame_size": [768, 576], "lines": {"crossing": {"points": [[460, 195], [460, 360]]}}})
    counts = Analytics(counts={"crossing": {"in": 1, "out": 2}})
    taken = label_rects(analytics_labels(cfg, counts, 768, 576), 768, 576)
    (count_rect,) = taken
    box = [count_rect[0], count_rect[3] + 2, count_rect[0] + 30, count_rect[3] + 90]  # its label would go where the count is
    size = label_size("person #3 0.80", label_scale(768, 576))
    (free,) = place_labels(np.array([box], np.float32), [size], 768, 576, taken)
    assert not _overlaps(count_rect, (free[0], free[1], free[0] + size[0], free[1] + size[1]))
    (blind,) = place_labels(np.array([box], np.float32), [size], 768, 576)
    assert _overlaps(count_rect, (blind[0], blind[1], blind[0] + size[0], blind[1] + size[1]))  # what it did before


def test_text_scales_with_the_frame() -> None:
    assert label_scale(768, 576) == 0.45
    assert label_scale(176, 144) == 0.3  # QCIF: legible, and a label takes far less than the 70% of the width it did
    assert label_size("person #12 0.78", label_scale(176, 144))[0] < 0.6 * 176
    assert label_scale(3840, 2160) == 1.2


def test_zones_lines_and_counts_are_drawn_where_the_config_puts_them() -> None:
    cfg = StreamAnalyticsConfig.model_validate({
        "frame_size": [384, 288], "zones": {"lawn": {"points": [[0, 150], [383, 150], [383, 287], [0, 287]]}},
        "lines": {"gate": {"points": [[200, 20], [200, 120]]}},
    })  # fmt: skip
    image = np.zeros((576, 768, 3), np.uint8)  # twice the config's size: the geometry is scaled
    draw_analytics(image, cfg, Analytics(counts={"gate": {"in": 3, "out": 1}}, occupancy={"lawn": 2}))
    assert (np.abs(image[297:304, 100].astype(int) - ZONE_COLOR).sum(axis=1) < 60).any()  # the zone's top edge at y = 300
    column = image[60:220, 398:403].reshape(-1, 3).astype(int)
    assert (np.abs(column - LINE_COLOR).sum(axis=1) < 60).mean() > 0.5  # the line at x = 400
    plain = np.zeros_like(image)
    draw_analytics(plain, cfg, None)  # without figures: names only
    assert not np.array_equal(plain, image)


def test_the_recorded_video_shows_the_analytics_of_an_analysed_stream(tmp_path: Path) -> None:
    import logging

    import cv2

    from pipeline.config import parse_config
    from pipeline.metrics import StageMetrics
    from pipeline.protocol import Frame, StreamStart
    from pipeline.stage import StageContext
    from stages.record import RecordOptions, RecordStage

    analyze = {"streams": {"cam": {"frame_size": [320, 240], "lines": {"gate": {"points": [[160, 20], [160, 220]]}}}}}
    cfg = parse_config({"mode": "replay", "streams": [{"id": "cam", "source": "x.mp4"}, {"id": "other", "source": "y.mp4"}], "stages": [
        {"name": "decode", "kind": "decode"}, {"name": "analyze", "kind": "analyze", "options": analyze}, {"name": "record", "kind": "record"}]})  # fmt: skip
    rec = RecordStage(StageContext("record", cfg, cfg.stages[2], RecordOptions(out_dir=str(tmp_path), jsonl=False), StageMetrics("record"),
                                   logging.getLogger("t")))  # fmt: skip
    for sid in ("cam", "other"):
        rec.ctx.streams.begin(rec, sid, StreamStart(0, fps=10.0))
        for seq in range(5):
            rec.process([Frame(sid, seq, seq / 10, 0.0, 320, 240, np.full((240, 320, 3), 40, np.uint8), analytics=Analytics(counts={"gate": {"in": seq, "out": 0}}))])
    rec.close()
    firsts = {}
    for sid in ("cam", "other"):
        ok, firsts[sid] = cv2.VideoCapture(str(tmp_path / f"{sid}.mp4")).read()
        assert ok
    near = np.abs(firsts["cam"][40:200, 157:164].astype(int) - LINE_COLOR).sum(axis=2) < 90
    assert near.any(axis=1).mean() > 0.9  # the line, in its colour, along its length
    assert np.abs(firsts["other"].astype(int) - 40).max() < 12  # a stream without analytics: nothing drawn
