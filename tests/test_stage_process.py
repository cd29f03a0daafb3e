"""One stage as its own process (`vidpipe stage`), driven over real tcp sockets by the test."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import msgpack
import numpy as np
import zmq

from pipeline.protocol import KIND_EOS, PROTOCOL_VERSION, Control, Frame, StreamEnd, decode, encode
from pipeline.runtime import EXIT_INCOMPLETE
from tests.helpers.configs import write_config
from tests.helpers.procs import free_ports, metric, run_vidpipe, scrape, stop, vidpipe, wait_for


def test_stage_rejects_bad_messages_keeps_going_and_feeds_observers(tmp_path: Path, samples: Path) -> None:
    p_in, p_out, p_pub, p_metrics = free_ports(4)
    stages = [
        {"name": "decode", "kind": "decode"},
        {"name": "infer", "kind": "infer", "input": f"@tcp://127.0.0.1:{p_in}", "output": f"@tcp://127.0.0.1:{p_out}",
         "publish": f"@tcp://127.0.0.1:{p_pub}", "metrics_port": p_metrics, "batch": {"max_size": 4}},
    ]
    cfg = write_config(tmp_path / "c.yaml", [{"id": "cam", "source": str(samples / "vtest.avi")}], tmp_path,
                       mode="replay", port_base=None, stages=stages, transport={"max_message_mb": 4})
    proc = vidpipe("stage", "infer", "--config", str(cfg), log_path=tmp_path / "log.txt")
    ctx = zmq.Context()
    push, pull, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL), ctx.socket(zmq.SUB)
    for s in (push, pull, sub):
        s.setsockopt(zmq.LINGER, 0)
    try:
        push.connect(f"tcp://127.0.0.1:{p_in}")
        pull.connect(f"tcp://127.0.0.1:{p_out}")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://127.0.0.1:{p_pub}")
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{p_metrics}/healthz", timeout=1).status == 200, 30,
                 what="healthz")
        time.sleep(0.3)  # let the SUB connection settle: PUB drops what no subscriber is there for
        push.send_multipart([b"\xc1 not msgpack"])
        push.send_multipart([msgpack.packb({"v": 99, "k": "frame"})])
        push.send_multipart([msgpack.packb({"v": PROTOCOL_VERSION, "k": "frame", "s": "cam"}), b"x"])
        # Forged: an id that would escape a folder, a stream not in the config, a frame and an end of stream
        # from a stage that is not this one's upstream. Each is refused and counted; the stream goes on.
        tiny = np.zeros((4, 4, 3), np.uint8)
        push.send_multipart(encode(Frame("../../x", 0, 0.0, time.time(), 4, 4, tiny, sender="decode")))
        push.send_multipart(encode(Frame("other", 0, 0.0, time.time(), 4, 4, tiny, sender="decode")))
        push.send_multipart(encode(Frame("cam", 0, 0.0, time.time(), 4, 4, tiny, sender="mallory")))
        push.send_multipart(encode(Control(KIND_EOS, "cam", "mallory", StreamEnd(0))))
        # Over transport.max_message_mb (4): ZeroMQ drops that sender's connection before reading it all.
        big = ctx.socket(zmq.PUSH)
        big.setsockopt(zmq.LINGER, 0)
        big.connect(f"tcp://127.0.0.1:{p_in}")
        big.send_multipart([b"\x00" * (64 << 20)])
        wait_for(lambda: metric(scrape(p_metrics), "vidpipe_input_disconnections_total") >= 1, 30, what="oversized sender dropped")
        big.close()
        cap = cv2.VideoCapture(str(samples / "vtest.avi"))
        for i in range(30):
            ok, img = cap.read()
            assert ok
            push.send_multipart(encode(Frame("cam", i, i / 10, time.time(), img.shape[1], img.shape[0], img, sender="decode")), copy=False)
        got: list[object] = []

        def receive(until_eos: bool, count: int = 0) -> None:
            while until_eos or len(got) < count:
                assert pull.poll(30_000), "no output from the stage"
                got.append(decode(pull.recv_multipart()))
                if isinstance(got[-1], Control) and got[-1].kind == KIND_EOS:
                    return

        receive(False, 28)  # replay batches of 4: the last 2 frames wait for more or for the end of stream
        m = scrape(p_metrics)  # scraped while the stage runs: it exits once every stream has ended
        assert metric(m, "vidpipe_messages_rejected_total", reason="malformed") == 3
        assert metric(m, "vidpipe_messages_rejected_total", reason="version") == 1
        assert metric(m, "vidpipe_messages_rejected_total", reason="unknown_stream") == 1
        assert metric(m, "vidpipe_messages_rejected_total", reason="sender") == 2
        assert metric(m, "vidpipe_frames_in_total", stream="cam") == 30
        assert metric(m, "vidpipe_batch_size_count", stage="infer") == 7
        push.send_multipart(encode(Control(KIND_EOS, "cam", "decode", StreamEnd(30))))
        receive(True)
        frames = [f for f in got if isinstance(f, Frame)]
        assert [f.seq for f in frames] == list(range(30))
        assert isinstance(got[-1], Control) and got[-1].end == StreamEnd(30)
        assert frames[-1].image is not None and frames[-1].image.shape == (576, 768, 3)
        assert sum(len(f.detections) for f in frames) > 0  # people walk in vtest from the first frames
        observed = 0
        while sub.poll(1000):
            observed += isinstance(decode(sub.recv_multipart()), Frame)
        assert observed > 0
        assert proc.wait(30) == 0  # every configured stream ended
    finally:
        for s in (push, pull, sub):
            s.close()
        ctx.term()
        stop(proc)
    log = (tmp_path / "log.txt").read_text()
    assert "rejected a message: version: protocol version 99" in log
    assert "rejected a message: malformed: header is not msgpack" in log


def test_unknown_paths_and_health(tmp_path: Path, samples: Path) -> None:
    p_in, p_metrics = free_ports(2)
    stages = [{"name": "decode", "kind": "decode"},
              {"name": "record", "kind": "record", "input": f"@tcp://127.0.0.1:{p_in}", "metrics_port": p_metrics,
               "options": {"out_dir": str(tmp_path / "out")}}]
    cfg = write_config(tmp_path / "c.yaml", [{"id": "cam", "source": "x.mp4"}], tmp_path, port_base=None, stages=stages)
    proc = vidpipe("stage", "record", "--config", str(cfg), log_path=tmp_path / "log.txt")
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{p_metrics}/healthz", timeout=1).read() == b"ok\n", 30)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{p_metrics}/nope", timeout=1)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        m = scrape(p_metrics)
        assert "vidpipe_heartbeat_timestamp_seconds" in m
        # What runs, on every stage: the version `vidpipe --version` prints, and the wire protocol.
        (labels, value), = m["vidpipe_build_info"]
        version = run_vidpipe("--version").stdout.split()[1]
        assert value == 1 and labels["version"] == version and labels["protocol"] == str(PROTOCOL_VERSION)
        assert "process_resident_memory_bytes" in m and "process_cpu_seconds_total" in m
    finally:
        # Stopped before its stream ended, in replay: 3, which tells a supervisor to restart it (pipeline/launcher.py).
        assert stop(proc) == EXIT_INCOMPLETE
