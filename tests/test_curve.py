"""CURVE between stages: a keyed stage answers only the stages the config wires to it, over real tcp sockets.

The stage under test is a real `vidpipe stage` process; the peers are ZeroMQ sockets of the test, each
with or without keys, as an attacker on the network would have them.
"""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import zmq
import zmq.auth

from pipeline.curve import SECRET_ENV
from pipeline.protocol import KIND_EOS, Control, Frame, StreamEnd, encode
from tests.helpers.configs import write_config
from tests.helpers.procs import free_ports, metric, run_vidpipe, scrape, stop, vidpipe, wait_for

TINY = np.zeros((16, 16, 3), np.uint8)


def _frame(seq: int, sender: str = "decode") -> list[bytes]:
    return encode(Frame("cam", seq, seq / 10, time.time(), 16, 16, TINY, sender=sender))  # type: ignore[return-value]


def _push(ctx: zmq.Context, port: int, keys: tuple[bytes, bytes] | None, server_key: bytes | None) -> zmq.Socket:
    sock = ctx.socket(zmq.PUSH)
    sock.linger = 0
    if keys is not None:
        sock.curve_publickey, sock.curve_secretkey = keys
        sock.curve_serverkey = server_key
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def test_a_keyed_stage_takes_frames_only_from_its_upstream_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    made = run_vidpipe("keys", str(keys), "decode", "record", "mallory")
    assert made.returncode == 0, made.stderr
    assert (keys / "record.key_secret").stat().st_mode & 0o777 == 0o600
    again = run_vidpipe("keys", str(keys), "record")
    assert again.returncode == 2 and "exists" in again.stderr  # never overwrites a key its peers rely on
    record_public, record_secret = zmq.auth.load_certificate(str(keys / "record.key_secret"))
    # The record stage's secret comes from the environment, as from a Kubernetes Secret: not from the folder.
    env_secret = record_secret.decode()  # type: ignore[union-attr]
    (keys / "record.key_secret").unlink()
    p_in, p_metrics = free_ports(2)
    stages = [{"name": "decode", "kind": "decode"},
              {"name": "record", "kind": "record", "input": f"@tcp://127.0.0.1:{p_in}", "metrics_port": p_metrics,
               "options": {"out_dir": str(tmp_path / "out")}}]
    cfg = write_config(tmp_path / "c.yaml", [{"id": "cam", "source": "x.mp4"}], tmp_path, port_base=None, stages=stages,
                       transport={"curve_keys": str(keys)})
    proc = vidpipe("stage", "record", "--config", str(cfg), log_path=tmp_path / "log.txt", env={**os.environ, SECRET_ENV: env_secret})
    ctx = zmq.Context()
    socks: list[zmq.Socket] = []
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{p_metrics}/healthz", timeout=1).status == 200, 30, what="healthz")
        # No keys at all: the handshake fails, nothing is read.
        socks.append(_push(ctx, p_in, None, None))
        socks[-1].send_multipart(_frame(0))
        # A key pair the stage does not know (mallory is in the folder, but not wired to record).
        mallory = zmq.auth.load_certificate(str(keys / "mallory.key_secret"))
        socks.append(_push(ctx, p_in, mallory, record_public))  # type: ignore[arg-type]
        socks[-1].send_multipart(_frame(0))
        # decode's key, but expecting another server (a stand-in record): the handshake fails both ways.
        decode_keys = zmq.auth.load_certificate(str(keys / "decode.key_secret"))
        socks.append(_push(ctx, p_in, decode_keys, zmq.curve_keypair()[0]))  # type: ignore[arg-type]
        socks[-1].send_multipart(_frame(0))

        def refused(reason: str) -> float:
            return metric(scrape(p_metrics), "vidpipe_peers_refused_total", reason=reason)

        wait_for(lambda: refused("auth") >= 1 and refused("handshake") >= 2, 30, what="three refused peers")
        # The real decode: accepted. A message on its connection claiming another sender is refused.
        good = _push(ctx, p_in, decode_keys, record_public)  # type: ignore[arg-type]
        socks.append(good)
        for seq in range(5):
            good.send_multipart(_frame(seq))
        good.send_multipart(_frame(5, sender="infer"))
        wait_for(lambda: metric(scrape(p_metrics), "vidpipe_frames_in_total", stream="cam") == 5, 30, what="5 frames in")
        m = scrape(p_metrics)
        assert metric(m, "vidpipe_messages_rejected_total", reason="sender") == 1
        assert metric(m, "vidpipe_frames_in_total", stream="cam") == 5  # none from the three refused peers
        good.send_multipart(encode(Control(KIND_EOS, "cam", "decode", StreamEnd(5))))  # type: ignore[arg-type]
        assert proc.wait(30) == 0
    finally:
        for s in socks:
            s.close()
        ctx.term()
        stop(proc)
    log = (tmp_path / "log.txt").read_text()
    assert "refused a CURVE peer on input" in log and "not one of decode" in log
    assert env_secret not in log


def test_a_keyed_pipeline_runs_over_tcp(tmp_path: Path, samples: Path) -> None:
    keys = tmp_path / "keys"
    assert run_vidpipe("keys", str(keys), "decode", "infer", "record").returncode == 0
    p_infer, p_record = free_ports(2)
    stages = [{"name": "decode", "kind": "decode"},
              {"name": "infer", "kind": "infer", "input": f"@tcp://127.0.0.1:{p_infer}"},
              {"name": "record", "kind": "record", "input": f"@tcp://127.0.0.1:{p_record}", "options": {"out_dir": str(tmp_path / "out")}}]
    cfg = write_config(tmp_path / "c.yaml", [{"id": "cam", "source": str(samples / "vtest.avi"), "fps": 5}], tmp_path,
                       stages=stages, transport={"curve_keys": str(keys)})
    out = run_vidpipe("run", str(cfg), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (tmp_path / "out" / "cam.jsonl").read_text().splitlines()
    assert len(lines) > 10


def test_reachable_tcp_needs_keys_or_an_explicit_allow(tmp_path: Path) -> None:
    stages = [{"name": "decode", "kind": "decode"},
              {"name": "record", "kind": "record", "input": "@tcp://*:5555", "options": {"out_dir": str(tmp_path / "out")}}]
    cfg = write_config(tmp_path / "c.yaml", [{"id": "cam", "source": "x.mp4"}], tmp_path, stages=stages)
    out = run_vidpipe("check", "--no-sources", str(cfg))
    assert out.returncode == 2 and "stages[1].input: @tcp://*:5555 binds where other hosts can reach it" in out.stderr
    write_config(cfg, [{"id": "cam", "source": "x.mp4"}], tmp_path, stages=stages, transport={"allow_insecure_tcp": True})
    assert run_vidpipe("check", "--no-sources", str(cfg)).returncode == 0
    keys = tmp_path / "keys"
    assert run_vidpipe("keys", str(keys), "decode").returncode == 0
    write_config(cfg, [{"id": "cam", "source": "x.mp4"}], tmp_path, stages=stages, transport={"curve_keys": str(keys)})
    out = run_vidpipe("check", "--no-sources", str(cfg))
    assert out.returncode == 2 and "no public key of record" in out.stderr and f"vidpipe keys {keys} record" in out.stderr
    assert run_vidpipe("keys", str(keys), "--config", str(cfg)).returncode == 2  # decode's pair exists: nothing overwritten
    assert run_vidpipe("keys", str(keys), "record").returncode == 0
    assert run_vidpipe("check", "--no-sources", str(cfg)).returncode == 0


def test_keys_if_missing_makes_only_the_missing_pairs(tmp_path: Path) -> None:
    """What a container that makes the keys at every start runs: the first start makes them, a later one keeps
    them (their peers rely on them), a stage added to the config gets its pair, half a pair is an error."""
    keys = tmp_path / "keys"
    stages = [{"name": "decode", "kind": "decode"}, {"name": "infer", "kind": "infer"}, {"name": "record", "kind": "record"}]
    cfg = write_config(tmp_path / "c.yaml", [{"id": "cam", "source": "x.mp4"}], tmp_path, stages=stages, transport={"curve_keys": str(keys)})
    assert run_vidpipe("keys", str(keys), "decode", "record").returncode == 0
    before = {p.name: p.read_bytes() for p in keys.iterdir()}
    made = run_vidpipe("keys", str(keys), "--if-missing", "--config", str(cfg))
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == [str(keys / "infer.key"), str(keys / "infer.key_secret")]
    assert {p.name: p.read_bytes() for p in keys.iterdir() if not p.name.startswith("infer.")} == before
    assert (keys / "infer.key_secret").stat().st_mode & 0o777 == 0o600
    assert run_vidpipe("check", "--no-sources", str(cfg)).returncode == 0
    after = {p.name: p.read_bytes() for p in keys.iterdir()}
    again = run_vidpipe("keys", str(keys), "--if-missing", "--config", str(cfg))
    assert again.returncode == 0 and again.stdout == "" and "none made" in again.stderr
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == after
    (keys / "infer.key_secret").unlink()  # a public key whose secret is gone: a new pair would leave peers with the old one
    half = run_vidpipe("keys", str(keys), "--if-missing", "--config", str(cfg))
    assert half.returncode == 2 and "infer.key in" in half.stderr and "remove it first" in half.stderr
    assert not (keys / "infer.key_secret").exists()
    assert run_vidpipe("keys", "--kubernetes", "--if-missing", "--config", str(cfg)).returncode == 2
