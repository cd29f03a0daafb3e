"""Two streams at once through real decode, infer and record processes, over ipc and over tcp."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import cv2
import pytest

from tests.helpers.configs import write_config
from tests.helpers.procs import free_port_block, free_ports, run_vidpipe


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def source_counts(samples: Path = Path(__file__).resolve().parent.parent / "sample_videos") -> dict[str, int]:
    return {"bikes": count_frames(samples / "bikes.mp4"), "car": count_frames(samples / "carphone_pristine.mp4")}


def run_two_streams(transport: str, tmp_path: Path, samples: Path) -> Path:
    out = tmp_path / transport
    streams = [{"id": "bikes", "source": str(samples / "bikes.mp4")}, {"id": "car", "source": str(samples / "carphone_pristine.mp4")}]
    # ipc socket paths must be short: a private folder under /tmp, removed afterwards.
    with tempfile.TemporaryDirectory(prefix="vp-") as run_dir:
        cfg = write_config(
            tmp_path / f"{transport}.yaml", streams, out,
            port_base=free_port_block(6),
            run_dir=Path(run_dir),
            tcp_ports=free_ports(2) if transport == "tcp" else None,
        )
        result = run_vidpipe("run", str(cfg), timeout=180)
        sockets = sorted(p.name for p in Path(run_dir).iterdir())
    assert result.returncode == 0, result.stderr[-3000:]
    assert sockets == []  # stages remove the ipc socket files they bound
    return out


def test_two_streams_over_ipc_and_tcp(tmp_path: Path, samples: Path, source_counts: dict[str, int]) -> None:
    outs = {t: run_two_streams(t, tmp_path, samples) for t in ("ipc", "tcp")}
    for out in outs.values():
        summary = json.loads((out / "summary.json").read_text())
        for sid, n in source_counts.items():
            s = summary["streams"][sid]
            assert s["status"] == "complete", s
            assert s["frames"] == n and s["source_frames"] == n
            lines = (out / f"{sid}.jsonl").read_text().splitlines()
            assert [json.loads(x)["seq"] for x in lines] == list(range(n))
            assert count_frames(out / f"{sid}.mp4") == n
        # Motion is found on both clips (bikes: a street; carphone: a person talking in a car).
        assert summary["streams"]["bikes"]["objects"] > 0 and summary["streams"]["car"]["objects"] > 0
    # The transport changes nothing in the results.
    for sid in source_counts:
        assert (outs["ipc"] / f"{sid}.jsonl").read_bytes() == (outs["tcp"] / f"{sid}.jsonl").read_bytes()


def test_a_source_that_ends_while_downstream_is_busy_loses_nothing(tmp_path: Path, sock_dir: Path, samples: Path) -> None:
    """decode reads the whole clip long before the slow stage is done: what its socket still queues when it
    exits (the last frames and the end of stream) must still be delivered."""
    out = tmp_path / "out"
    stages = [
        {"name": "decode", "kind": "decode"},
        {"name": "slow", "kind": "tests.helpers.slow_stage:SlowStage", "batch": {"max_size": 1},
         "options": {"seconds_per_frame": 0.03}},
        {"name": "record", "kind": "record", "options": {"out_dir": str(out), "video": False}},
    ]
    streams = [{"id": "car", "source": str(samples / "carphone_pristine.mp4")}]
    cfg = write_config(tmp_path / "c.yaml", streams, out, port_base=None, run_dir=sock_dir, stages=stages)
    result = run_vidpipe("run", str(cfg), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())["streams"]["car"]
    assert summary["status"] == "complete" and summary["frames"] == 120
