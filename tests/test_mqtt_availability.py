"""MQTT for integrators, with a real mosquitto: a retained availability topic (online, offline on close, and the
broker's last will when the sink's process dies), and Home Assistant discovery of each stream's rules."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from stages.alert.sinks import build_sink
from tests.helpers.alerts import make_alert
from tests.helpers.procs import ROOT, free_ports, wait_for
from tests.helpers.receivers import MOSQUITTO, Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian package mosquitto)")
    (port,) = free_ports(1)
    b = Broker(tmp_path, port)
    b.start()
    try:
        yield b
    finally:
        b.stop()


class Watcher:
    """A subscriber to every topic, keeping the last payload of each (retained ones included)."""

    def __init__(self, port: int) -> None:
        self.last: dict[str, bytes] = {}
        self.ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="vidpipe-test-watcher")
        c.on_connect = lambda client, userdata, flags, rc, props: client.subscribe("#", qos=1)
        c.on_subscribe = lambda client, userdata, mid, rcs, props: self.ready.set()
        c.on_message = lambda client, userdata, msg: self.last.__setitem__(msg.topic, msg.payload)
        c.connect("127.0.0.1", port, 30)
        c.loop_start()
        self.client = c
        assert self.ready.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_availability_is_online_then_offline_on_close_and_by_last_will_on_a_crash(broker: Broker) -> None:
    watcher = Watcher(broker.port)
    try:
        sink = build_sink("alarms", {"type": "mqtt", "host": "127.0.0.1", "port": broker.port})
        sink.deliver(make_alert(1))
        wait_for(lambda: watcher.last.get("vidpipe/alarms/availability") == b"online", 10, what="online")
        sink.close()
        wait_for(lambda: watcher.last.get("vidpipe/alarms/availability") == b"offline", 10, what="offline on close")
        # A process that dies without a goodbye: the broker publishes the will.
        script = textwrap.dedent(f"""
            import os
            from stages.alert.sinks import build_sink
            from tests.helpers.alerts import make_alert
            sink = build_sink("alarms", {{"type": "mqtt", "host": "127.0.0.1", "port": {broker.port}}})
            sink.deliver(make_alert(2))
            print("delivered", flush=True)
            os._exit(9)
        """)
        proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert "delivered" in proc.stdout, proc.stderr
        wait_for(lambda: watcher.last.get("vidpipe/alarms/availability") == b"offline", 10, what="the last will")
    finally:
        watcher.close()


def test_home_assistant_discovers_one_event_entity_per_stream_and_rule(broker: Broker) -> None:
    watcher = Watcher(broker.port)
    sink = build_sink("ha", {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "home_assistant": True})
    try:
        for alert in (make_alert(1, "cam1", "door"), make_alert(2, "cam1", "door"), make_alert(3, "cam2", "gate")):
            sink.deliver(alert)
        wait_for(lambda: len([t for t in watcher.last if t.startswith("homeassistant/")]) == 2, 10, what="two discoveries")
        wait_for(lambda: "vidpipe/alerts/cam2/gate" in watcher.last, 10, what="the third alert's state")  # after its discovery
        config = json.loads(watcher.last["homeassistant/event/vidpipe_ha_cam1_door/config"])
        assert config["state_topic"] == "vidpipe/alerts/cam1/door" and config["availability_topic"] == "vidpipe/ha/availability"
        assert config["event_types"] == ["new", "update", "end"] and config["unique_id"] == "vidpipe_ha_cam1_door"
        assert json.loads(watcher.last["vidpipe/alerts/cam2/gate"])["event"] == "new"  # what the template reads
    finally:
        sink.close()
        watcher.close()
