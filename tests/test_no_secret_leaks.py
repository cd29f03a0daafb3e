"""End to end, no secret anywhere: `vidpipe replay` of an RTSP camera URL with a password, served by the real
GStreamer RTSP server, with alerts to a real webhook receiver (a Bearer token from the environment) and a real
mosquitto (a literal password in the config). The secrets are used (the receiver gets the token, the broker lets
the sink in), and none of them shows in the run's output, the results folder (names and bytes) or /metrics.
Every server and process started here is stopped by this test."""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SAMPLES
from tests.helpers.analytics import EXAMPLE, make_clip
from tests.helpers.procs import free_ports, metric, scrape, stop, vidpipe, wait_for
from tests.helpers.receivers import MOSQUITTO, MOSQUITTO_PASSWD, Broker, Receiver, Subscriber
from tests.helpers.rtsp import have_rtsp_server, start_server

pytestmark = [
    pytest.mark.skipif(not have_rtsp_server(), reason="Debian's GStreamer RTSP server is not installed (tests/run.sh installs it)"),
    pytest.mark.skipif(MOSQUITTO is None or MOSQUITTO_PASSWD is None, reason="mosquitto is not installed (Debian package mosquitto)"),
]

STREAM = "127.0.0.1_cam"  # the stream id of rtsp://viewer:...@127.0.0.1:PORT/cam: host and path, no credentials


def replay_config(path: Path, out: Path, hook_port: int, mqtt_port: int, mqtt_password: str, down_url: str) -> Path:
    """decode -> infer -> track -> analyze (anyone in the picture is an alert) -> alert -> record. The alerts go to a
    webhook, an MQTT broker, and a webhook that is down (`down_url`: its errors are logged and kept in the outbox)."""
    example = {s["name"]: s for s in yaml.safe_load(EXAMPLE.read_text())["stages"]}
    whole_frame = {"points": [[0, 0], [1, 0], [1, 1], [0, 1]]}
    data: dict[str, Any] = {
        "stages": [
            {"name": "decode", "kind": "decode"},
            example["infer"],
            {"name": "track", "kind": "track"},
            {"name": "analyze", "kind": "analyze", "options": {"streams": {STREAM: {
                "frame_size": [768, 576], "relative": True, "zones": {"frame": whole_frame},
                "rules": [{"name": "someone", "type": "zone_intrusion", "zone": "frame", "classes": ["person"], "min_dwell_s": 0}],
            }}}},
            {"name": "alert", "kind": "alert", "options": {
                "outbox": str(out / "alerts" / "outbox.db"),  # in the results folder: its bytes are searched too
                "retry_initial_s": 0.2, "retry_max_s": 1.0, "drain_s": 1,
                "sinks": {
                    "hook": {"type": "webhook", "url": f"http://127.0.0.1:{hook_port}/alerts", "timeout_s": 2,
                             "headers": {"Authorization": "Bearer ${WEBHOOK_TOKEN}"}},
                    "broker": {"type": "mqtt", "host": "127.0.0.1", "port": mqtt_port, "qos": 1, "username": "vidpipe",
                               "password": mqtt_password, "connect_timeout_s": 2},
                    "down": {"type": "webhook", "url": down_url, "timeout_s": 2},
                },
            }},
            {"name": "record", "kind": "record", "options": {"video": False}},
        ],
        "supervisor": {"restart_initial_s": 0.2},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def metrics_texts(port_base: int, count: int) -> dict[int, str]:
    """The raw /metrics text of every process of the run that serves one (launcher and stages)."""
    out = {}
    for port in range(port_base, port_base + count):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                out[port] = resp.read().decode("utf-8", "replace")
        except OSError:
            continue
    return out


def leaks(secret_texts: dict[str, str], folder: Path) -> list[str]:
    """Where under `folder` a secret shows: in a file or folder name, or in a file's bytes."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found += [f"{what} in the name {path}" for what, s in secret_texts.items() if s in name]
            if name in filenames and path.is_file():
                data = path.read_bytes()
                found += [f"{what} in {path}" for what, s in secret_texts.items() if s.encode() in data]
    return found


def test_replay_of_a_camera_with_credentials_leaks_no_secret(tmp_path: Path, sock_dir: Path) -> None:
    tag = secrets.token_hex(6)
    secret_texts = {"camera password": f"CamPass-{tag}", "webhook token": f"tok-{tag}x", "MQTT password": f"MqttPass-{tag}",
                    "webhook URL password": f"HookPass-{tag}", "webhook URL token": f"qtok-{tag}"}
    rtsp_port, hook_port, mqtt_port, closed_port = free_ports(4)
    out = tmp_path / "out"
    clip = make_clip(SAMPLES / "vtest.avi", tmp_path / "clip.avi", 100)  # 10 s of people walking by, looped
    down_url = f"http://hook:{secret_texts['webhook URL password']}@127.0.0.1:{closed_port}/alerts?token={secret_texts['webhook URL token']}"
    cfg = replay_config(tmp_path / "replay.yaml", out, hook_port, mqtt_port, secret_texts["MQTT password"], down_url)
    url = f"rtsp://viewer:{secret_texts['camera password']}@127.0.0.1:{rtsp_port}/cam"
    # The replay's private run dir (the config with its secrets) goes into a folder of this test, to look at.
    private_tmp = sock_dir / "tmp"
    private_tmp.mkdir()

    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    with ExitStack() as started:  # each server stops, last started first, however the test ends
        broker = Broker(broker_dir, mqtt_port, users={"vidpipe": secret_texts["MQTT password"], "watcher": "watcher-pass"})
        broker.start()
        started.callback(broker.stop)
        receiver = Receiver(hook_port)
        started.callback(receiver.close)
        server = start_server(rtsp_port, tmp_path / "rtsp.log", video=clip)
        started.callback(stop, server, signal.SIGTERM)  # type: ignore[arg-type]
        sub = Subscriber(mqtt_port, auth=("watcher", "watcher-pass"))
        started.callback(sub.close)
        proc = vidpipe("replay", url, "--config", str(cfg), "--out", str(out), "--quiet", log_path=tmp_path / "run.log",
                       env={"WEBHOOK_TOKEN": secret_texts["webhook token"], "TMPDIR": str(private_tmp)})
        started.callback(stop, proc, signal.SIGKILL)

        def running() -> bool:
            assert proc.poll() is None, "the replay exited: " + (tmp_path / "run.log").read_text(errors="replace")[-4000:]
            return True

        wait_for(lambda: (out / "config.yaml").exists() or proc.poll() is not None, 30, 0.1, "the replay to write its config")
        running()
        # The running stages read the config with its secrets from the private run dir, which only we can read.
        (run_dir,) = [p for p in private_tmp.iterdir() if p.name.startswith("vidpipe-")]
        assert run_dir.stat().st_mode & 0o777 == 0o700 and (run_dir / "config.yaml").stat().st_mode & 0o777 == 0o600
        running_config = yaml.safe_load((run_dir / "config.yaml").read_text())  # with this run's ports
        port_base, n_ports = running_config["metrics"]["port_base"], len(running_config["stages"]) + 2
        alert_port = port_base + 1 + [s["name"] for s in running_config["stages"]].index("alert")

        def delivered() -> bool:
            samples = scrape(alert_port)
            return all(metric(samples, "vidpipe_alert_deliveries_total", sink=s) >= 1 for s in ("hook", "broker"))

        wait_for(lambda: proc.poll() is not None or delivered(), 90, 0.5, "an alert delivered to the webhook and to the broker")
        running()
        scraped = metrics_texts(port_base, n_ports)
        assert alert_port in scraped and port_base + 1 in scraped  # the alert stage and decode among them
        rc = stop(proc, signal.SIGINT, timeout=60)
        wait_for(lambda: sub.messages, 5, 0.05, "the alert at the MQTT subscriber")
    log = (tmp_path / "run.log").read_text(errors="replace")
    assert rc == 130, log[-4000:]  # stopped by the SIGINT, cleanly

    # The secrets were used: the receiver got the token, the broker (no anonymous access) took the alerts.
    assert receiver.received and all(h["Authorization"] == f"Bearer {secret_texts['webhook token']}" for _, _, h in receiver.received)
    assert all(body["stream"] == STREAM for _, body, _ in receiver.received)
    assert sub.messages[0][0] == f"vidpipe/alerts/{STREAM}/someone"

    # ... and they show nowhere.
    found = [f"{what} in the run's output" for what, s in secret_texts.items() if s in log]
    found += [f"{what} in /metrics of port {port}" for port, text in scraped.items() for what, s in secret_texts.items() if s in text]
    found += leaks(secret_texts, out)
    assert found == []
    assert f"stream {STREAM}: opened rtsp://viewer:***@127.0.0.1:{rtsp_port}/cam" in log  # the camera was read
    # The private run dir went with the run (what libraries leave in TMPDIR holds no secret either).
    assert [p.name for p in private_tmp.iterdir() if p.name.startswith("vidpipe-")] == [] and leaks(secret_texts, private_tmp) == []
    # The config beside the results says what ran, without the secrets: the token as its reference.
    config = out / "config.yaml"
    assert config.stat().st_mode & 0o777 == 0o600
    written = yaml.safe_load(config.read_text())
    assert written["streams"] == [{"id": STREAM, "source": f"rtsp://viewer:***@127.0.0.1:{rtsp_port}/cam"}]
    sinks = written["stages"][4]["options"]["sinks"]
    assert sinks["hook"]["headers"]["Authorization"] == "Bearer ${WEBHOOK_TOKEN}" and sinks["broker"]["password"] == "***"
    assert sinks["down"]["url"] == "***"
    # What was searched holds the run's results: the record stage's frames, and the outbox with the failures of
    # the webhook that is down, which were logged too.
    assert (out / f"{STREAM}.jsonl").stat().st_size > 0
    con = sqlite3.connect(f"file:{out / 'alerts' / 'outbox.db'}?mode=ro", uri=True)
    try:
        errors = [e for (e,) in con.execute("SELECT last_error FROM deliveries WHERE sink = 'down' AND attempts > 0")]
    finally:
        con.close()
    assert errors and all(f"http://127.0.0.1:{closed_port}/alerts?***" in e for e in errors), errors
    assert "sink down: delivery of alert" in log
