"""Replay is exactly-once across the loss of any stage: `kill -9` of each stage kind, SIGTERM of one stage and
a SIGSTOP (a hang the supervisor must see), mid-replay of a vtest clip with the analytics example, give the
JSONL and the alerts of an uninterrupted run.

How (pipeline/launcher.py): the supervisor restarts the lost stage and every source starts its stream again
under a new epoch; the stages begin the stream afresh and record rewrites its outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.helpers.analytics import make_clip, vtest_analytics_config
from tests.helpers.procs import find_stage, metric, scrape, stop, vidpipe, wait_for

SAMPLES = Path(__file__).resolve().parent.parent / "sample_videos"
FRAMES = 200
RECORD = 6  # record's place among the processes: decode[vtest], infer, track, analyze, alert, record


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(SAMPLES / "vtest.avi", tmp_path_factory.mktemp("clip") / f"vtest{FRAMES}.avi", FRAMES)


def _replay(tmp: Path, clip: Path, fault: tuple[str, signal.Signals] | None) -> tuple[bytes, list[str], dict, str]:
    run_dir = Path(tempfile.mkdtemp(prefix="vp-"))  # short: unix socket paths are limited
    cfg = vtest_analytics_config(tmp, clip, run_dir)
    data = yaml.safe_load(cfg.read_text())
    # A stage told to stop drains what reaches it for at most this long: SIGTERM stops it mid-stream.
    data["transport"]["drain_timeout_s"] = 0.5
    data["supervisor"]["hang_after_s"] = 3  # a SIGSTOPped stage is a hung one after this long
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    port = data["metrics"]["port_base"] + RECORD
    log = tmp / "log.txt"
    proc = vidpipe("run", str(cfg), log_path=log)
    try:
        if fault is not None:
            stage, sig = fault
            wait_for(lambda: metric(scrape(port), "vidpipe_frames_in_total") >= 15, 120, what="record under way")
            pid = find_stage(proc.pid, stage)
            assert pid, f"{stage} is not running any more: the fault would come too late"
            os.kill(pid, sig)
        rc = proc.wait(300)
    finally:
        stop(proc)
        shutil.rmtree(run_dir, ignore_errors=True)
    text = log.read_text()
    assert rc == 0, text[-4000:]
    alerts = [json.loads(x)["id"] for x in (tmp / "alerts.jsonl").read_text().splitlines()]
    summary = json.loads((tmp / "out" / "summary.json").read_text())["streams"]["vtest"]
    return (tmp / "out" / "vtest.jsonl").read_bytes(), alerts, summary, text


@pytest.fixture(scope="module")
def uninterrupted(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[str], dict, str]:
    return _replay(tmp_path_factory.mktemp("uninterrupted"), clip, None)


@pytest.mark.parametrize(
    ("stage", "sig"),
    [("decode", signal.SIGKILL), ("infer", signal.SIGKILL), ("track", signal.SIGKILL), ("analyze", signal.SIGKILL),
     ("alert", signal.SIGKILL), ("record", signal.SIGKILL), ("track", signal.SIGTERM), ("infer", signal.SIGSTOP)],
)
def test_losing_a_stage_mid_replay_changes_nothing(stage: str, sig: signal.Signals, clip: Path, tmp_path: Path,
                                                   uninterrupted: tuple[bytes, list[str], dict, str]) -> None:
    jsonl, alerts, summary, log = _replay(tmp_path, clip, (stage, sig))
    assert f"{stage}[vtest] exited" in log or f"{stage} exited" in log  # the fault happened, and was seen
    if sig == signal.SIGSTOP:
        assert f"{stage}: its loop has not run for" in log  # the supervisor saw the hang, and killed it
    want_jsonl, want_alerts, want_summary, _ = uninterrupted
    assert want_summary["status"] == "complete" and want_summary["frames"] == FRAMES and want_alerts
    assert summary["status"] == "complete" and summary["lost_frames"] == 0
    assert jsonl == want_jsonl  # byte for byte
    # Every alert raised once in the outbox, and delivered (a sink may see one again after a kill of the alert
    # stage between its delivery and its acknowledgement: at least once, by id).
    assert sorted(set(alerts)) == sorted(want_alerts)
