"""Live mode against a deliberately slow stage: bounded memory, shedding counted by reason, bounded frame age."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil

from tests.helpers.configs import write_config
from tests.helpers.procs import find_stage, free_port_block, histogram_quantile, metric, scrape, stop, vidpipe, wait_for


def test_live_sheds_at_the_source_and_stays_bounded(tmp_path: Path, sock_dir: Path, samples: Path) -> None:
    base = free_port_block(5)
    stages = [
        {"name": "decode", "kind": "decode"},
        {"name": "slow", "kind": "tests.helpers.slow_stage:SlowStage", "batch": {"max_size": 1},
         "options": {"seconds_per_frame": 0.1}},
        {"name": "record", "kind": "record", "options": {"out_dir": str(tmp_path / "out"), "video": False}},
    ]
    # bikes.mp4 at its native 25 fps, looped like a camera; the slow stage manages 10 fps.
    streams = [{"id": "cam", "source": str(samples / "bikes.mp4"), "loop": True}]
    cfg = write_config(tmp_path / "live.yaml", streams, tmp_path / "out", mode="live", port_base=base,
                       run_dir=sock_dir, stages=stages)
    decode_port, slow_port, record_port = base + 1, base + 2, base + 3
    proc = vidpipe("run", str(cfg), log_path=tmp_path / "log.txt")
    try:
        wait_for(lambda: metric(scrape(record_port), "vidpipe_frames_in_total") > 10, 60, what="frames at record")
        pids = [find_stage(proc.pid, name) for name in ("decode", "slow", "record")]
        assert all(pids), pids
        time.sleep(3)  # past start-up allocations
        rss_start = {p: psutil.Process(p).memory_info().rss for p in pids}
        time.sleep(12)
        rss_end = {p: psutil.Process(p).memory_info().rss for p in pids}
        dec, slow, rec = scrape(decode_port), scrape(slow_port), scrape(record_port)
    finally:
        rc = stop(proc, signal.SIGINT)
    log = (tmp_path / "log.txt").read_text()
    assert rc == 130, log[-3000:]  # stopped by the SIGINT, cleanly
    # Memory: no queue grows without bound (12 s at 25 fps in, 10 fps out would queue 180 frames = 90 MB).
    for p in pids:
        assert rss_end[p] - rss_start[p] < 25 * 2**20, (p, rss_start[p], rss_end[p])
    read = metric(dec, "vidpipe_frames_in_total", stream="cam")
    shed = metric(dec, "vidpipe_frames_shed_total", stream="cam", reason="downstream_full")
    processed = metric(slow, "vidpipe_frames_out_total", stream="cam")
    age99 = histogram_quantile(slow, "vidpipe_frame_age_seconds", 0.99, stage="slow")
    print(f"read {read:.0f} shed {shed:.0f} processed {processed:.0f} age p99<={age99}s "
          f"rss growth MB {[round((rss_end[p] - rss_start[p]) / 2**20, 1) for p in pids]}")
    assert read > 200 and shed > 0.3 * read, (read, shed)
    assert 60 < processed < 0.7 * read, (processed, read)
    # Every frame read is accounted for: handed on, shed with a reason, or still in a bounded queue.
    sent = metric(dec, "vidpipe_frames_out_total", stream="cam")
    assert read - sent - shed <= 2
    # Frame age at the slow stage stays bounded (the queues in between hold a handful of frames).
    assert age99 <= 2.0
    assert histogram_quantile(rec, "vidpipe_frame_age_seconds", 0.5, stage="record") <= 1.0
