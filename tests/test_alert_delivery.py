"""Alerts from a real pipeline (decode -> infer -> track -> analyze -> alert on a vtest clip) to real receivers:
a webhook that is down and comes back, a kill -9 of the alert stage with alerts in flight, MQTT through a
real mosquitto, and the same alerts from a replay and a live run of the same file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from tests.conftest import SAMPLES
from tests.helpers.analytics import make_clip, record_alerts, vtest_analytics_config
from tests.helpers.procs import find_stage, free_ports, metric, run_logged, scrape, stop, vidpipe, wait_for
from tests.helpers.receivers import MOSQUITTO, Broker, Receiver, Subscriber

CLIP_FRAMES = 300  # 30 s of vtest: 11 line crossings and 2 parked cars


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(SAMPLES / "vtest.avi", tmp_path_factory.mktemp("clip") / "vtest300.avi", CLIP_FRAMES)


def outbox_ids(db: Path) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT id FROM alerts ORDER BY rowid")]
    finally:
        con.close()


def alert_port(cfg: Path) -> int:
    port = load_config(cfg).metrics_port("alert", None)
    assert port is not None
    return port


def test_webhook_down_then_back_delivers_every_alert_once(tmp_path: Path, clip: Path, sock_dir: Path) -> None:
    (hook_port,) = free_ports(1)
    sinks = {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{hook_port}/alerts", "timeout_s": 2}}
    cfg = vtest_analytics_config(tmp_path, clip, sock_dir, sinks=sinks, record=False, retry_initial_s=0.2, retry_max_s=1.0, drain_s=60)
    port = alert_port(cfg)
    proc = vidpipe("run", str(cfg), log_path=tmp_path / "run.log")
    receiver = None
    try:
        # Alerts are raised while nothing listens on the webhook's port: they wait in the outbox.
        wait_for(lambda: metric(scrape(port), "vidpipe_outbox_depth", sink="hook") >= 3, 180, 0.5, "3 alerts waiting for the webhook")
        samples = scrape(port)
        assert metric(samples, "vidpipe_alert_delivery_failures_total", sink="hook", reason="connect") >= 1
        assert metric(samples, "vidpipe_alert_deliveries_total", sink="hook") == 0
        raised_now = metric(samples, "vidpipe_alerts_total", stream="vtest")
        assert raised_now >= 3 and metric(samples, "vidpipe_alerts_total", stream="vtest", severity="info") >= 1
        assert metric(samples, "vidpipe_alert_latency_seconds_count") == raised_now
        assert 0 < metric(samples, "vidpipe_alert_latency_seconds_sum") / raised_now < 30
        analyze = scrape(load_config(cfg).metrics_port("analyze", None) or 0)
        assert metric(analyze, "vidpipe_line_crossings_total", stream="vtest", line="crossing") >= 3
        assert "vidpipe_zone_occupancy" in analyze and metric(analyze, "vidpipe_rule_firings_total", outcome="raised") >= raised_now
        receiver = Receiver(hook_port)  # the receiver comes back
        assert proc.wait(240) == 0, (tmp_path / "run.log").read_text()[-4000:]
        raised = outbox_ids(tmp_path / "outbox.db")
        keys = receiver.keys()
        assert len(raised) >= 8
        assert sorted(keys) == sorted(raised) and len(set(keys)) == len(keys)  # each id once at the receiver
        for key, body, headers in receiver.received:
            assert body["id"] == key and headers["Content-Type"] == "application/json" and body["snapshot_jpeg"]
    finally:
        stop(proc)
        if receiver is not None:
            receiver.close()


def test_kill_9_of_the_alert_stage_loses_no_raised_alert(tmp_path: Path, clip: Path, sock_dir: Path) -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian package mosquitto)")
    hook_port, mqtt_port = free_ports(2)
    broker = Broker(tmp_path, mqtt_port)
    broker.start()
    sub = Subscriber(mqtt_port)
    receiver = None  # the webhook's receiver is down until after the kill: its alerts stay in flight
    sinks = {
        "hook": {"type": "webhook", "url": f"http://127.0.0.1:{hook_port}/alerts", "timeout_s": 2},
        "broker": {"type": "mqtt", "host": "127.0.0.1", "port": mqtt_port, "qos": 1},
    }
    cfg = vtest_analytics_config(tmp_path, clip, sock_dir, sinks=sinks, record=False, retry_initial_s=0.2, retry_max_s=1.0, drain_s=60)
    port = alert_port(cfg)
    proc = vidpipe("run", str(cfg), log_path=tmp_path / "run.log")
    try:
        wait_for(lambda: metric(scrape(port), "vidpipe_outbox_depth", sink="hook") >= 4, 180, 0.2, "4 alerts raised, not delivered")
        pid = find_stage(proc.pid, "alert")
        assert pid is not None
        before = outbox_ids(tmp_path / "outbox.db")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: (p := find_stage(proc.pid, "alert")) is not None and p != pid, 60, 0.2, "the alert stage restarted")
        receiver = Receiver(hook_port)
        assert proc.wait(240) == 0, (tmp_path / "run.log").read_text()[-4000:]
        raised = outbox_ids(tmp_path / "outbox.db")
        assert set(before) <= set(raised) and len(raised) >= len(before) >= 4
        # Every raised alert reached both receivers (at least once: one in hand at the kill may come twice).
        assert set(receiver.keys()) == set(raised)
        wait_for(lambda: {m["id"] for _, m in sub.messages} >= set(raised), 10, 0.1, "MQTT messages")
        assert {m["id"] for _, m in sub.messages} == set(raised)
        assert all(topic.startswith("vidpipe/alerts/vtest/") for topic, _ in sub.messages)
        assert "restart #1" in (tmp_path / "run.log").read_text()
    finally:
        stop(proc)
        sub.close()
        if receiver is not None:
            receiver.close()
        broker.stop()


def test_replay_and_live_runs_of_a_file_raise_the_same_alerts(tmp_path: Path, clip: Path, sock_dir: Path) -> None:
    runs = {}
    for mode in ("replay", "live"):
        d = tmp_path / mode
        d.mkdir()
        run_dir = sock_dir / mode
        run_dir.mkdir(mode=0o700)
        cfg = vtest_analytics_config(d, clip, run_dir, mode=mode)
        t0 = time.monotonic()
        rc, log = run_logged("run", str(cfg), log_path=d / "run.log", timeout=240)
        assert rc == 0, log[-4000:]
        (summary_path,) = (d / "out").glob("summary*.json")  # live: summary-TIME.json, one per run
        summary = json.loads(summary_path.read_text())
        assert summary["streams"]["vtest"]["frames"] == CLIP_FRAMES, summary  # nothing shed
        jsonls = sorted((d / "out").glob("vtest*.jsonl"))  # live: one per segment, in time order
        runs[mode] = [(a["id"], a["rule"], a["seq"], a["track_ids"]) for path in jsonls for a in record_alerts(path)]
        print(f"{mode}: {len(runs[mode])} alerts in {time.monotonic() - t0:.1f}s")
    assert len(runs["replay"]) >= 8
    assert runs["live"] == runs["replay"]
