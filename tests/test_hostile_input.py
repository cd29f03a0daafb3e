"""Running stages under attack: what a fuzzer found crashing stages, forged ids, forged alerts and end-of-streams,
and an oversized message, sent over a real tcp socket to a real `vidpipe stage` process. Each is rejected and
counted, the process keeps its pid and goes on with valid frames, and nothing lands outside its output folder.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from pipeline.alert import Alert
from pipeline.analytics import Analytics
from pipeline.detections import Detections
from pipeline.protocol import KIND_EOS, PROTOCOL_VERSION, Control, Frame, StreamEnd, encode
from tests.helpers.configs import write_config
from tests.helpers.procs import free_ports, metric, scrape, stop, vidpipe, wait_for
from tests.helpers.receivers import Receiver

TINY = np.zeros((8, 8, 3), np.uint8)


def _header(**kw: object) -> bytes:
    h = {"v": PROTOCOL_VERSION, "k": "frame", "s": "cam", "n": 0, "pts": 0.0, "ct": 0.0, "w": 8, "h": 8, "pf": "bgr24",
         "e": 1, "d": Detections().to_wire()}
    h.update(kw)
    return msgpack.packb(h)


HOSTILE: list[tuple[str, list[bytes]]] = [
    # The five messages that crashed every stage before (issue 14), then ids that would escape a folder.
    ("malformed", [_header(w=float("inf"))]),
    ("malformed", [_header(n=float("inf"))]),
    ("malformed", [_header(d={**Detections().to_wire(), "scores": ["<f4", [float("inf")], b""]})]),
    ("malformed", [_header(d={**Detections().to_wire(), "extra": "posture"})]),
    ("malformed", [_header(d={**Detections().to_wire(), "class_ids": [",i4", [0], b""]})]),
    ("malformed", [_header(s="../../escaped")]),
    ("malformed", [_header(s="a/b")]),
    ("malformed", [_header(s="..")]),
    ("malformed", [_header(s="a\x00b")]),
    ("malformed", [_header(s="x" * 10_000)]),
]


def _alert(alert_id: str, seq: int) -> Alert:
    return Alert(alert_id, "cam", "door", "zone_intrusion", "critical", [1], seq, seq / 10, time.time(), f"forged? {alert_id}")


def _attack(ctx: zmq.Context, port: int) -> dict[str, int]:
    """Send every hostile message; the rejections each should be counted under, by reason."""
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.connect(f"tcp://127.0.0.1:{port}")
    try:
        for _, parts in HOSTILE:
            push.send_multipart(parts)
        # From a stage that is not this one's upstream: an alert, an end of the stream.
        push.send_multipart(encode(Frame("cam", 0, 0.0, time.time(), 8, 8, TINY, sender="mallory",  # type: ignore[arg-type]
                                         analytics=Analytics(alerts=[_alert("forged-1", 0)]))))
        push.send_multipart(encode(Control(KIND_EOS, "cam", "mallory", StreamEnd(0))))  # type: ignore[arg-type]
        push.send_multipart(encode(Frame("other", 0, 0.0, time.time(), 8, 8, TINY, sender="analyze")))  # type: ignore[arg-type]
        time.sleep(0.2)
    finally:
        push.close()
    big = ctx.socket(zmq.PUSH)  # over transport.max_message_mb: dropped by ZeroMQ before it is read
    big.linger = 0
    big.connect(f"tcp://127.0.0.1:{port}")
    big.send_multipart([b"\x00" * (8 << 20)])
    return {"malformed": len(HOSTILE), "sender": 2, "unknown_stream": 1}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@contextlib.contextmanager
def _attacked(tmp_path: Path, stage: dict[str, Any]) -> Iterator[tuple[subprocess.Popen[bytes], zmq.Socket, int, dict[str, int]]]:
    """`stage` running as its own process after analyze, attacked on its tcp input; yields (process, a socket of
    its real upstream, its metrics port, the rejections expected by reason)."""
    p_in, p_metrics = free_ports(2)
    stages = [{"name": "decode", "kind": "decode"}, {"name": "analyze", "kind": "analyze"},
              {**stage, "input": f"@tcp://127.0.0.1:{p_in}", "metrics_port": p_metrics}]
    cfg = write_config(tmp_path / "c.yaml", [{"id": "cam", "source": "x.mp4"}], tmp_path, port_base=None, stages=stages,
                       transport={"max_message_mb": 1})
    proc = vidpipe("stage", stage["name"], "--config", str(cfg), log_path=tmp_path / "log.txt")
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{p_metrics}/healthz", timeout=1).status == 200, 30, what="healthz")
        expected = _attack(ctx, p_in)
        wait_for(lambda: metric(scrape(p_metrics), "vidpipe_input_disconnections_total") >= 1, 30, what="the oversized sender dropped")
        push.connect(f"tcp://127.0.0.1:{p_in}")
        yield proc, push, p_metrics, expected
    finally:
        push.close()
        ctx.term()
        stop(proc)


def _assert_rejected(port: int, expected: dict[str, int]) -> None:
    m = scrape(port)
    for reason, n in expected.items():
        assert metric(m, "vidpipe_messages_rejected_total", reason=reason) == n, reason


def test_an_alert_stage_under_attack_raises_only_its_upstreams_alerts(tmp_path: Path) -> None:
    recv = Receiver()
    stage = {"name": "alert", "kind": "alert", "batch": {"max_size": 1},
             "options": {"outbox": str(tmp_path / "out" / "outbox.db"),
                         "sinks": {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{recv.port}/alerts"}}}}
    before = _files(tmp_path)
    try:
        with _attacked(tmp_path, stage) as (proc, push, port, expected):
            pid = proc.pid
            for seq in range(3):
                alerts = [_alert("real-1", seq)] if seq == 1 else []
                push.send_multipart(encode(Frame("cam", seq, seq / 10, time.time(), 8, 8, TINY, sender="analyze",  # type: ignore[arg-type]
                                                 analytics=Analytics(alerts=alerts))))
            wait_for(lambda: recv.keys() == ["real-1"], 30, what="the real alert delivered")
            _assert_rejected(port, expected)
            assert metric(scrape(port), "vidpipe_frames_in_total", stream="cam") == 3
            assert proc.poll() is None and proc.pid == pid  # never crashed, never restarted
            push.send_multipart(encode(Control(KIND_EOS, "cam", "analyze", StreamEnd(3))))  # type: ignore[arg-type]
            assert proc.wait(30) == 0
    finally:
        recv.close()
    assert recv.keys() == ["real-1"]  # the forged alert was never raised nor delivered
    new = _files(tmp_path) - before
    assert all(p in (tmp_path / "log.txt", tmp_path / "c.yaml", tmp_path / "out") or (tmp_path / "out") in p.parents for p in new), sorted(new)


def test_a_record_stage_under_attack_writes_only_its_streams_inside_its_folder(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    before = _files(tmp_path)
    with _attacked(tmp_path, {"name": "record", "kind": "record", "options": {"out_dir": str(out)}}) as (proc, push, port, expected):
        for seq in range(4):
            push.send_multipart(encode(Frame("cam", seq, seq / 10, time.time(), 8, 8, TINY, sender="analyze")))  # type: ignore[arg-type]
        wait_for(lambda: metric(scrape(port), "vidpipe_frames_in_total", stream="cam") == 4, 30, what="4 frames in")
        _assert_rejected(port, expected)
        push.send_multipart(encode(Control(KIND_EOS, "cam", "analyze", StreamEnd(4))))  # type: ignore[arg-type]
        assert proc.wait(30) == 0
    new = _files(tmp_path) - before
    outside = [p for p in new if p not in (tmp_path / "log.txt", tmp_path / "c.yaml", out, out.parent) and out not in p.parents]
    assert not outside, outside
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["cam.jsonl", "cam.mp4", "summary.json"]
    assert len((out / "cam.jsonl").read_text().splitlines()) == 4
    assert os.path.getsize(out / "cam.mp4") > 0
