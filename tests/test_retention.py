"""Retention: results and delivered alerts are kept by age and size, oldest first; nothing in use or pending goes."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import parse_config
from pipeline.metrics import StageMetrics
from pipeline.protocol import Frame, StreamStart
from pipeline.retention import RetentionOptions, prune_files
from pipeline.stage import StageContext
from stages.alert.outbox import DELIVERED, Outbox
from stages.record import RecordOptions, RecordStage, _stream_of
from tests.helpers.alerts import make_alert


def _file(path: Path, size: int, age_days: float, now: float) -> Path:
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age_days * 86_400, now - age_days * 86_400))
    return path


def test_files_go_by_age_then_oldest_first_by_size_never_one_in_use(tmp_path: Path) -> None:
    now = time.time()
    a = _file(tmp_path / "a", 400_000, 10, now)  # too old
    b = _file(tmp_path / "b", 400_000, 5, now)  # in use: kept whatever its age or size
    c = _file(tmp_path / "c", 400_000, 3, now)
    d = _file(tmp_path / "d", 400_000, 1, now)
    e = _file(tmp_path / "e", 400_000, 0, now)
    opts = RetentionOptions(max_age_days=7, max_total_mb=1.0)
    pruned = prune_files([a, b, c, d, e], {b}, opts, now)
    assert pruned.by_age == [a] and pruned.by_size == [c, d]  # 4 x 400 kB > 1 MiB: the oldest go, b stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "e"] and pruned.kept_bytes == 800_000
    assert prune_files([b, e], set(), RetentionOptions(), now).by_age == []  # no limits: everything is kept


def test_the_outbox_forgets_delivered_alerts_by_age_and_size_never_pending_ones(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", ["hook"])
    try:
        snapshot = os.urandom(50_000)
        alerts = [make_alert(i, snapshot=snapshot) for i in range(40)]
        box.add(alerts[:10], 1_000.0)  # old
        box.add(alerts[10:], 2_000_000.0)
        for a in alerts[:35]:
            box.mark_delivered("hook", a.id, 2_000_001.0)
        box.close()  # checkpointed: the file holds every alert
        file_before = (tmp_path / "outbox.db").stat().st_size
        box = Outbox(tmp_path / "outbox.db", ["hook"])
        assert box.prune(before=10_000.0) == 10  # the old ones, all delivered
        before = box.size()
        removed = box.prune_to(500_000)
        assert removed >= 20 and box.size() < before
        assert box.depth("hook") == 5 and all(box.get(a.id) is not None for a in alerts[35:])  # pending: kept
        assert box.prune_to(1) == 35 - 10 - removed  # even at a tiny limit, only delivered ones go
        assert box.counts("hook")[DELIVERED] == 0 and box.depth("hook") == 5
        box.close()
        box = Outbox(tmp_path / "outbox.db", ["hook"])  # the freed pages went back to the disk
        assert (tmp_path / "outbox.db").stat().st_size < file_before / 2
    finally:
        box.close()


def _live_record(tmp_path: Path, **options: Any) -> RecordStage:
    cfg = parse_config({"mode": "live", "streams": [{"id": "cam", "source": "rtsp://h/x"}],
                        "stages": [{"name": "decode", "kind": "decode"}, {"name": "record", "kind": "record"}]})  # fmt: skip
    opts = RecordOptions(out_dir=str(tmp_path), **options)
    ctx = StageContext("record", cfg, cfg.stages[1], opts, StageMetrics("record"), logging.getLogger("test"))
    rec = RecordStage(ctx)
    ctx.streams.begin(rec, "cam", StreamStart(1, live=True, fps=10.0))
    return rec


def _feed(rec: RecordStage, t0: float, n: int, batch: int = 3) -> None:
    """n frames at 10 fps captured from t0, in batches that straddle the segments' ends."""
    image = np.zeros((48, 64, 3), np.uint8)
    frames = [Frame("cam", seq, seq / 10, t0 + seq / 10, 64, 48, image) for seq in range(n)]
    for i in range(0, n, batch):
        rec.process(frames[i : i + batch])


def _seqs(path: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in path.read_text().splitlines()]


def _age(paths: list[Path], seconds: float) -> None:
    for p in paths:
        os.utime(p, (time.time() - seconds, time.time() - seconds))


def test_live_record_writes_each_segment_as_video_jsonl_and_facts_and_a_summary_per_run(tmp_path: Path) -> None:
    """Live: a segment is the unit of every output of a stream: its video and its JSONL begin and end at the same
    frame, under one name, with its facts beside them; no file spans two runs, each run has its own summary, and
    retention removes old segments (and their facts) but never the one being written nor a summary."""
    t0 = float(int(time.time()) - 3600)
    rec = _live_record(tmp_path, segment_s=1.0, retention=RetentionOptions(max_age_days=0.01))
    _feed(rec, t0, 50)  # five segments of 1 s, the last still open
    stems = sorted(p.stem for p in tmp_path.glob("cam-*.mp4"))
    assert len(stems) == 5 and sorted(p.stem for p in tmp_path.glob("cam-*.jsonl")) == stems
    assert sorted(p.stem for p in tmp_path.glob("cam-*.json")) == stems[:4]  # the open one's facts come when it closes
    assert stems[0] == "cam-" + time.strftime("%Y%m%d-%H%M%S", time.localtime(t0))
    assert _seqs(tmp_path / f"{stems[4]}.jsonl") == list(range(40, 50)), "flushed with each batch: readable while written"
    rec.close()
    for i, stem in enumerate(stems):
        facts = json.loads((tmp_path / f"{stem}.json").read_text())
        assert facts["video"] == f"{stem}.mp4" and facts["jsonl"] == f"{stem}.jsonl" and facts["frames"] == 10
        assert facts["start_ts"] == pytest.approx(t0 + i) and facts["end_ts"] == pytest.approx(t0 + i + 0.9)
        assert _seqs(tmp_path / f"{stem}.jsonl") == list(range(10 * i, 10 * i + 10))  # that segment's frames, in order
    (first,) = tmp_path.glob("summary-*.json")
    assert first.name == "summary-" + time.strftime("%Y%m%d-%H%M%S", time.localtime(rec.started)) + ".json"
    cam = json.loads(first.read_text())["streams"]["cam"]
    assert cam["segments"] == 5 and cam["frames"] == 50 and cam["status"] == "stopped"
    assert cam["video"] == str(tmp_path / f"{stems[4]}.mp4") and cam["jsonl"] == str(tmp_path / f"{stems[4]}.jsonl")
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "cam.jsonl").exists()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    # A second run in the same folder (within the same second: its summary takes the next free name), its first
    # segment begun in the same second as the first run's last: it takes the next free name too.
    rec = _live_record(tmp_path, segment_s=1.0, retention=RetentionOptions(max_age_days=0.01))
    _feed(rec, t0 + 4.5, 15)
    assert all((tmp_path / name).read_bytes() == data for name, data in before.items()), "the first run's files are left as they were"
    again = sorted(p.stem for p in tmp_path.glob("cam-*.jsonl") if p.stem not in stems)
    assert again == [f"{stems[4]}-2", "cam-" + time.strftime("%Y%m%d-%H%M%S", time.localtime(t0 + 5.5))]
    assert _seqs(tmp_path / f"{again[0]}.jsonl") == list(range(10)) and _seqs(tmp_path / f"{again[1]}.jsonl") == list(range(10, 15))
    assert (tmp_path / f"{again[0]}.mp4").is_file() and (tmp_path / f"{again[0]}.json").is_file()
    assert rec.summary_path != first and rec.summary_path.name.startswith("summary-")
    assert _stream_of(f"{again[0]}.jsonl", {"cam", "cam-1"}) == "cam"

    # Retention: everything is an hour old, the open segment and the summaries too; the open segment stays, and so do
    # the summaries, and what is not a result of this config's streams.
    old_jsonl_only = [tmp_path / "cam-20250101-000000.jsonl", tmp_path / "cam-20250101-000000.json"]  # a segment of a run without video
    for p in old_jsonl_only:
        p.write_text("{}\n")
    other = tmp_path / "notes.jsonl"
    other.write_text("{}\n")
    _age(list(tmp_path.iterdir()), 3600)
    rec.apply_retention(time.time())
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([first.name, rec.summary_path.name, other.name, f"{again[1]}.mp4", f"{again[1]}.jsonl"]), left
    rec.close()
    assert json.loads(rec.summary_path.read_text())["streams"]["cam"]["segments"] == 2
    assert json.loads((tmp_path / f"{again[1]}.json").read_text())["frames"] == 5


def test_live_record_without_video_still_writes_segments_with_their_facts(tmp_path: Path) -> None:
    t0 = float(int(time.time()) - 60)
    rec = _live_record(tmp_path, video=False, segment_s=2.0)
    _feed(rec, t0, 50, batch=7)
    rec.close()
    stems = sorted(p.stem for p in tmp_path.glob("cam-*.jsonl"))
    assert len(stems) == 3 and not list(tmp_path.glob("*.mp4"))
    assert [_seqs(tmp_path / f"{s}.jsonl") for s in stems] == [list(range(20)), list(range(20, 40)), list(range(40, 50))]
    facts = [json.loads((tmp_path / f"{s}.json").read_text()) for s in stems]
    assert [(f["video"], f["jsonl"], f["frames"]) for f in facts] == [(None, f"{s}.jsonl", n) for s, n in zip(stems, (20, 20, 10))]


def test_live_video_is_cut_into_playable_segments_and_retention_keeps_the_alerted_one(tmp_path: Path) -> None:
    """Segments of segment_s seconds, each finalised (playable) when the next begins, with its facts beside it;
    retention removes the oldest while the stage runs, never the one being written, and keeps a segment in which an
    alert was raised for alert_max_age_days."""
    import av

    from pipeline.analytics import Analytics
    from stages.web.recordings import finished

    cfg = parse_config({"mode": "live", "streams": [{"id": "cam", "source": "rtsp://h/x"}],
                        "stages": [{"name": "decode", "kind": "decode"}, {"name": "record", "kind": "record"}]})  # fmt: skip
    opts = RecordOptions(out_dir=str(tmp_path), jsonl=False, segment_s=2.0, alert_max_age_days=1.0,
                         retention=RetentionOptions(max_total_mb=0.001, check_every_s=0.5))  # fmt: skip
    ctx = StageContext("record", cfg, cfg.stages[1], opts, StageMetrics("record"), logging.getLogger("test"))
    rec = RecordStage(ctx)
    ctx.streams.begin(rec, "cam", StreamStart(1, live=True, fps=10.0))
    t0 = time.time() - 60
    rng = np.random.default_rng(0)
    alert = make_alert(25, stream="cam")
    for seq in range(100):  # 10 s at 10 fps: segments of 20 frames
        frame = Frame("cam", seq, seq / 10, t0 + seq / 10, 64, 48, rng.integers(0, 255, (48, 64, 3), np.uint8))
        if seq == 25:
            frame.analytics = Analytics(alerts=[alert])
        rec.process([frame])
    videos = sorted(tmp_path.glob("cam-*.mp4"))
    assert len(videos) == 5
    closed, current = videos[:-1], videos[-1]
    assert all(finished(v) for v in closed) and not finished(current)  # the one being written has no index yet
    for v in closed:
        facts = json.loads(v.with_suffix(".json").read_text())
        assert facts["frames"] == 20 and facts["video"] == v.name and facts["end_ts"] - facts["start_ts"] == pytest.approx(1.9)
        with av.open(str(v)) as c:
            assert c.streams.video[0].frames == 20
    assert json.loads(videos[1].with_suffix(".json").read_text())["alerts"] == [alert.id]
    rec.tick()  # retention, as the runtime calls it while the pipeline runs
    left = sorted(tmp_path.glob("cam-*.mp4"))
    assert left == [videos[1], current], "the oldest go; the alerted segment and the one being written stay"
    assert sorted(p.name for p in tmp_path.glob("cam-*.json")) == [videos[1].with_suffix(".json").name]
    rec.close()
    assert finished(current) and current.with_suffix(".json").is_file()


def test_keeping_only_alerts_keeps_each_alerted_segment_with_one_either_side(tmp_path: Path) -> None:
    from pipeline.analytics import Analytics

    cfg = parse_config({"mode": "live", "streams": [{"id": "cam", "source": "rtsp://h/x"}],
                        "stages": [{"name": "decode", "kind": "decode"}, {"name": "record", "kind": "record"}]})  # fmt: skip
    opts = RecordOptions(out_dir=str(tmp_path), segment_s=1.0, keep="alerts")
    ctx = StageContext("record", cfg, cfg.stages[1], opts, StageMetrics("record"), logging.getLogger("test"))
    rec = RecordStage(ctx)
    ctx.streams.begin(rec, "cam", StreamStart(1, live=True, fps=10.0))
    t0 = time.time() - 60
    image = np.zeros((48, 64, 3), np.uint8)
    for seq in range(100):  # ten segments of 1 s; alerts in segments 4 and 8
        frame = Frame("cam", seq, seq / 10, t0 + seq / 10, 64, 48, image)
        if seq in (45, 83):
            frame.analytics = Analytics(alerts=[make_alert(seq, stream="cam")])
        rec.process([frame])
    rec.close()
    kept = sorted(tmp_path.glob("cam-*.mp4"))
    starts = [round(json.loads(p.with_suffix(".json").read_text())["start_ts"] - t0) for p in kept]
    assert starts == [3, 4, 5, 7, 8, 9], starts  # 4 and 8 with their neighbours; the rest went as they closed
    assert len(list(tmp_path.glob("cam-*.json"))) == 6
    assert len(list(tmp_path.glob("cam-*.jsonl"))) == 10  # the metadata of every frame stays: it is small
