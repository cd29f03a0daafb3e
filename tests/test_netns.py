"""Stages on three hosts: each stage process in its own network namespace, the stages connected over TCP
through a bridge, authenticated and encrypted with CURVE keys, replaying a clip; the JSONL equals a
single-host replay of the same clip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.analytics import make_clip
from tests.helpers.netns import Hosts, available
from tests.helpers.procs import ROOT, run_vidpipe

REASON = available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no network namespaces here: {REASON}")

STAGES = [
    {"name": "decode", "kind": "decode"},
    {"name": "infer", "kind": "infer", "options": {"detector": {"type": "coco_ssd", "score_threshold": 0.2}}},
    {"name": "track", "kind": "track"},
    {"name": "record", "kind": "record"},
]


def test_stages_on_three_hosts_over_tcp_give_the_single_host_results(tmp_path: Path, samples: Path, sock_dir: Path) -> None:
    clip = make_clip(samples / "vtest.avi", tmp_path / "vtest120.avi", 120)
    # One host: plain `vidpipe replay` over ipc sockets.
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump({"stages": STAGES, "transport": {"run_dir": str(sock_dir)}, "metrics": {"port_base": None}}))
    res = run_vidpipe("replay", "--config", str(single), "--out", str(tmp_path / "one"), "--quiet", str(clip), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr

    hosts = Hosts(3)  # decode | infer + track | record
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a, b, c = hosts.addresses
        stages = [dict(s) for s in STAGES]
        stages[0]["output"] = f">tcp://{b}:5701"
        stages[1]["input"] = "@tcp://*:5701"
        stages[1]["output"] = ">tcp://127.0.0.1:5702"  # same host: its own loopback
        stages[2]["input"] = "@tcp://127.0.0.1:5702"
        stages[2]["output"] = f">tcp://{c}:5703"
        stages[3]["input"] = "@tcp://*:5703"
        stages[3]["options"] = {"out_dir": str(tmp_path / "three")}
        keys = tmp_path / "keys"  # one folder standing in for the copies on each host
        made = run_vidpipe("keys", str(keys), *[s["name"] for s in STAGES])
        assert made.returncode == 0, made.stderr
        cfg = tmp_path / "hosts.yaml"
        cfg.write_text(yaml.safe_dump({"mode": "replay", "streams": [{"id": "vtest120", "source": str(clip)}], "stages": stages,
                                       "transport": {"curve_keys": str(keys)}, "metrics": {"port_base": None}}, sort_keys=False))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        placement = [("record", 2, []), ("track", 1, []), ("infer", 1, []), ("decode", 0, ["--stream", "vtest120"])]
        for name, host, extra in placement:
            argv = [sys.executable, "-P", "-m", "pipeline.cli", "stage", name, "--config", str(cfg), *extra]
            with open(tmp_path / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen(hosts.command(host, argv), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 300
        for (name, _, _), p in zip(placement, procs):
            try:
                code = p.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # A hang: every stage still running prints where its threads wait (SIGUSR1), and all logs are shown.
                for q in procs:
                    if q.poll() is None:
                        q.send_signal(signal.SIGUSR1)
                time.sleep(2)
                logs = "".join(f"\n--- {n}.log\n" + (tmp_path / f"{n}.log").read_text()[-4000:] for n, _, _ in placement)
                raise AssertionError(f"{name} did not finish within 300 s" + logs) from None
            assert code == 0, f"{name}: " + (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        hosts.close()

    one = (tmp_path / "one" / "vtest120.jsonl").read_text()
    three = (tmp_path / "three" / "vtest120.jsonl").read_text()
    assert len(one.splitlines()) == 120 and "track_ids" in one
    assert three == one
