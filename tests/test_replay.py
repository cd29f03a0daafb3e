"""`vidpipe replay`: every frame of vtest.avi processed and recorded, the same bytes on every run."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import cv2

from tests.helpers.procs import run_vidpipe, stop, vidpipe, wait_for


def video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def test_replay_vtest_twice_is_complete_and_identical(tmp_path: Path, samples: Path) -> None:
    outs = []
    # a: stages forked from the launcher (the default); b: each a new interpreter, as after a launcher that had
    # loaded a model runtime itself (pipeline/launcher.py): the same bytes either way.
    for run, start in (("a", "fork"), ("b", "exec")):
        out = tmp_path / run
        result = run_vidpipe("replay", str(samples / "vtest.avi"), "--out", str(out), timeout=300, env={"VIDPIPE_START": start})
        assert result.returncode == 0, result.stderr[-3000:]
        assert "vtest" in result.stdout and "795" in result.stdout and "complete" in result.stdout
        outs.append(out)
    a, b = outs
    lines = (a / "vtest.jsonl").read_text().splitlines()
    assert len(lines) == 795
    assert [json.loads(x)["seq"] for x in lines] == list(range(795))
    assert video_frames(a / "vtest.mp4") == 795
    summary = json.loads((a / "summary.json").read_text())["streams"]["vtest"]
    assert summary["frames"] == 795 and summary["status"] == "complete" and summary["objects"] > 500
    assert (a / "vtest.jsonl").read_bytes() == (b / "vtest.jsonl").read_bytes()
    # The effective config is kept with the results, so a run can be repeated.
    assert "mode: replay" in (a / "config.yaml").read_text()


def test_interrupted_replay_stops_cleanly_with_usable_results(tmp_path: Path, samples: Path) -> None:
    out = tmp_path / "out"
    proc = vidpipe("replay", str(samples / "vtest.avi"), "--out", str(out), log_path=tmp_path / "log.txt")
    try:
        wait_for(lambda: (out / "vtest.jsonl").exists() and (out / "vtest.jsonl").stat().st_size > 20_000, 60, what="progress")
        rc = stop(proc, signal.SIGINT, timeout=60)
    finally:
        stop(proc, signal.SIGKILL)
    assert rc == 130, (tmp_path / "log.txt").read_text()[-3000:]
    summary = json.loads((out / "summary.json").read_text())["streams"]["vtest"]
    assert summary["status"] == "stopped"
    n = summary["frames"]
    assert 0 < n < 795
    # Replay drains: everything decoded before the stop is processed and recorded, and the video is finalised.
    assert summary["source_frames"] == n
    assert len((out / "vtest.jsonl").read_text().splitlines()) == n
    assert video_frames(out / "vtest.mp4") == n
