"""The launcher supervises stage processes: a killed stage is restarted, counted, and the pipeline goes on."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.helpers.configs import write_config
from tests.helpers.procs import find_stage, free_port_block, metric, run_vidpipe, scrape, stop, vidpipe, wait_for


def test_kill_9_of_infer_is_restarted_and_counted(tmp_path: Path, sock_dir: Path, samples: Path) -> None:
    base = free_port_block(5)
    streams = [{"id": "cam", "source": str(samples / "bikes.mp4"), "loop": True}]
    cfg = write_config(tmp_path / "run.yaml", streams, tmp_path / "out", mode="live", port_base=base,
                       run_dir=sock_dir, supervisor={"restart_initial_s": 0.2})
    launcher_port, record_port = base, base + 3
    proc = vidpipe("run", str(cfg), log_path=tmp_path / "log.txt")
    try:
        wait_for(lambda: metric(scrape(record_port), "vidpipe_frames_in_total") > 20, 60, what="frames at record")
        infer = find_stage(proc.pid, "infer")
        assert infer
        os.kill(infer, signal.SIGKILL)
        wait_for(lambda: metric(scrape(launcher_port), "vidpipe_stage_restarts_total", stage="infer") == 1, 30, what="restart")
        new_infer = wait_for(lambda: find_stage(proc.pid, "infer"), 30, what="new infer")
        assert new_infer != infer
        before = metric(scrape(record_port), "vidpipe_frames_in_total")
        # The new infer process gets frames and hands them on: the pipeline goes on.
        wait_for(lambda: metric(scrape(record_port), "vidpipe_frames_in_total") > before + 30, 60, what="frames after restart")
        launcher = scrape(launcher_port)
        assert metric(launcher, "vidpipe_stage_up", stage="infer") == 1
        assert metric(launcher, "vidpipe_stage_restarts_total", stage="decode") == 0
    finally:
        rc = stop(proc, signal.SIGINT)
    log = (tmp_path / "log.txt").read_text()
    assert rc == 130, log[-3000:]  # stopped by the SIGINT, cleanly
    assert "infer exited with signal SIGKILL; restart #1" in log
    assert proc.poll() is not None and not find_stage(proc.pid)


def test_a_frame_that_raises_is_counted_and_skipped(tmp_path: Path, sock_dir: Path, samples: Path) -> None:
    out = tmp_path / "out"
    stages = [
        {"name": "decode", "kind": "decode"},
        {"name": "flaky", "kind": "tests.helpers.slow_stage:SlowStage", "batch": {"max_size": 4},
         "options": {"seconds_per_frame": 0, "fail_on_seq": [5, 77]}},
        {"name": "record", "kind": "record", "options": {"out_dir": str(out), "video": False}},
    ]
    streams = [{"id": "car", "source": str(samples / "carphone_pristine.mp4")}]
    cfg = write_config(tmp_path / "c.yaml", streams, out, port_base=None, run_dir=sock_dir, stages=stages)
    result = run_vidpipe("run", str(cfg))
    assert result.returncode == 1, result.stderr[-3000:]  # not complete: two frames are missing
    row = next(line.split() for line in result.stdout.splitlines() if line.startswith("car "))
    assert row[2] == "2" and row[4] == "incomplete"  # stream, frames, lost, objects, status: the table says so too
    assert "frame car#5 failed and was skipped" in result.stderr
    assert "frame car#77 failed and was skipped" in result.stderr
    seqs = [json.loads(x)["seq"] for x in (out / "car.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())["streams"]["car"]
    # Not complete: two frames are missing from the results, and the summary says which.
    assert summary["status"] == "incomplete" and summary["lost_frames"] == 2 and summary["lost"] == [[5, 5], [77, 77]]
    assert seqs == [s for s in range(summary["source_frames"]) if s not in (5, 77)]


def test_a_stage_that_keeps_crashing_stops_the_pipeline_after_max_restarts(tmp_path: Path, sock_dir: Path, samples: Path) -> None:
    stages = [
        {"name": "decode", "kind": "decode"},
        {"name": "broken", "kind": "tests.helpers.slow_stage:SlowStage", "options": {"fail_on_start": True}},
    ]
    streams = [{"id": "car", "source": str(samples / "carphone_pristine.mp4")}]
    cfg = write_config(tmp_path / "c.yaml", streams, tmp_path, port_base=None, run_dir=sock_dir, stages=stages,
                       supervisor={"restart_initial_s": 0.1, "max_restarts": 2})
    t0 = time.monotonic()
    result = run_vidpipe("run", str(cfg), timeout=60)
    assert result.returncode == 1
    assert time.monotonic() - t0 < 20  # no drain into a pipeline that cannot run
    assert result.stderr.count("ERROR vidpipe.broken: stage failed") == 3
    assert "broken exited with status 1, 3 times in a row: giving up" in result.stderr


def test_sigusr1_prints_where_every_process_waits_and_the_run_goes_on(tmp_path: Path, sock_dir: Path, samples: Path) -> None:
    # What an operator does with a pipeline that seems hung: `kill -USR1 <launcher pid>`.
    out = tmp_path / "out"
    stages = [
        {"name": "decode", "kind": "decode"},
        {"name": "slow", "kind": "tests.helpers.slow_stage:SlowStage", "batch": {"max_size": 1}, "options": {"seconds_per_frame": 0.05}},
        {"name": "record", "kind": "record", "options": {"out_dir": str(out), "video": False}},
    ]
    streams = [{"id": "car", "source": str(samples / "carphone_pristine.mp4")}]
    cfg = write_config(tmp_path / "c.yaml", streams, out, port_base=None, run_dir=sock_dir, stages=stages)
    log_path = tmp_path / "log.txt"
    proc = vidpipe("run", str(cfg), log_path=log_path)
    try:
        wait_for(lambda: log_path.read_text().count("started (pid") == 3, 60, what="three stages started")
        time.sleep(1)
        proc.send_signal(signal.SIGUSR1)
        rc = proc.wait(120)
    finally:
        stop(proc)
    log = log_path.read_text()
    assert rc == 0, log[-3000:]
    # The launcher and its three stages each printed their threads, one after the other.
    assert log.count("Current thread 0x") == 4, log[-6000:]
    for who in ("the launcher", "decode[car]", "slow", "record"):
        assert f"--- stacks of {who} (pid " in log
    slow = log.split("--- stacks of slow")[1].split("--- stacks of")[0]
    assert "in _run_processor" in slow, slow  # its main loop (most likely asleep in SlowStage.process)
    summary = json.loads((out / "summary.json").read_text())["streams"]["car"]
    assert summary["status"] == "complete" and summary["frames"] == 120, summary
