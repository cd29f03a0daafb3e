"""The track stage as its own process (`vidpipe stage track`), driven over real tcp sockets by the test.

Two streams carry the same real frames and detections (vtest.avi, COCO-SSD run by the test); one is
delivered in order, the other shuffled the way several infer workers would deliver it. The stage must
give both the same tracks, and free a stream's tracks when that stream ends.
"""

from __future__ import annotations

import random
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import zmq

from pipeline.protocol import KIND_EOS, KIND_STARTED, Control, Frame, StreamEnd, StreamStart, decode, encode
from tests.helpers.configs import write_config
from tests.helpers.procs import free_ports, metric, scrape, stop, vidpipe, wait_for
from tools.tracklets import read_frames

N_FRAMES = 60
EPOCH = 1_700_000_000_000


@pytest.fixture(scope="module")
def vtest_frames() -> list[Frame]:
    from stages.infer.detectors.coco_ssd import CocoSsdDetector, CocoSsdOptions

    frames = [Frame("x", i, i / 10, 0.0, img.shape[1], img.shape[0], img)
              for i, img in read_frames(Path(__file__).resolve().parents[1] / "sample_videos" / "vtest.avi", 0, N_FRAMES)]
    det = CocoSsdDetector(CocoSsdOptions(device="cpu", score_threshold=0.1))
    for i in range(0, N_FRAMES, 10):
        for f, d in zip(frames[i : i + 10], det.detect(frames[i : i + 10])):
            f.detections = d
    return frames


def bounded_shuffle(n: int, displacement: int, rng: random.Random) -> list[int]:
    keys = [i + rng.uniform(0, displacement) for i in range(n)]
    return [i for _, i in sorted(zip(keys, range(n)))]


def test_out_of_order_delivery_gives_the_same_tracks_and_an_ended_stream_frees_its_tracks(
    tmp_path: Path, vtest_frames: list[Frame]
) -> None:
    p_in, p_out, p_metrics = free_ports(3)
    stages = [
        {"name": "decode", "kind": "decode"},
        {"name": "track", "kind": "track", "input": f"@tcp://127.0.0.1:{p_in}", "output": f"@tcp://127.0.0.1:{p_out}",
         "metrics_port": p_metrics, "batch": {"max_size": 4}, "options": {"reorder_window": 32}},
    ]
    streams = [{"id": "inorder", "source": "unused.avi"}, {"id": "shuffled", "source": "unused.avi"}]
    cfg = write_config(tmp_path / "c.yaml", streams, tmp_path, mode="replay", port_base=None, stages=stages)
    proc = vidpipe("stage", "track", "--config", str(cfg), log_path=tmp_path / "log.txt")
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    for s in (push, pull):
        s.setsockopt(zmq.LINGER, 0)
    try:
        push.connect(f"tcp://127.0.0.1:{p_in}")
        pull.connect(f"tcp://127.0.0.1:{p_out}")
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{p_metrics}/healthz", timeout=1).status == 200, 60,
                 what="healthz")
        order = bounded_shuffle(N_FRAMES, 6, random.Random(7))
        assert order != list(range(N_FRAMES))
        for stream in ("inorder", "shuffled"):  # each epoch begins with its "started" message
            push.send_multipart(encode(Control(KIND_STARTED, stream, "decode", StreamStart(EPOCH, fps=10.0))))
        for i in range(N_FRAMES):
            for stream, seq in (("inorder", i), ("shuffled", order[i])):
                f = vtest_frames[seq]
                msg = Frame(stream, seq, f.pts, time.time(), f.width, f.height, f.image, detections=f.detections, epoch=EPOCH, sender="decode")
                push.send_multipart(encode(msg), copy=False)
        push.send_multipart(encode(Control(KIND_EOS, "inorder", "decode", StreamEnd(N_FRAMES), epoch=EPOCH)))

        got: dict[str, list[Frame]] = {"inorder": [], "shuffled": []}
        ended: set[str] = set()

        def receive(until: str) -> None:
            while until not in ended:
                assert pull.poll(60_000), "no output from the track stage:\n" + (tmp_path / "log.txt").read_text()[-3000:]
                msg = decode(pull.recv_multipart())
                if isinstance(msg, Control):
                    if msg.kind == KIND_EOS:
                        ended.add(msg.stream)
                else:
                    got[msg.stream].append(msg)

        receive("inorder")
        m = scrape(p_metrics)  # "shuffled" has not ended: its tracks are held, those of "inorder" are freed
        for state in ("tentative", "confirmed", "lost"):
            assert metric(m, "vidpipe_tracks", stream="inorder", state=state) == 0
        assert metric(m, "vidpipe_tracks", stream="shuffled", state="confirmed") >= 3
        assert metric(m, "vidpipe_reorder_frames_total", outcome="waited") > 0
        push.send_multipart(encode(Control(KIND_EOS, "shuffled", "decode", StreamEnd(N_FRAMES), epoch=EPOCH)))
        receive("shuffled")
        assert proc.wait(30) == 0
    finally:
        for s in (push, pull):
            s.close()
        ctx.term()
        stop(proc)

    a, b = got["inorder"], got["shuffled"]
    assert [f.seq for f in a] == list(range(N_FRAMES))
    assert [f.seq for f in b] == list(range(N_FRAMES))  # back in order
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.detections.track_ids, fb.detections.track_ids)
        np.testing.assert_array_equal(fa.detections.boxes, fb.detections.boxes)
    ids = np.concatenate([f.detections.track_ids for f in a])
    assert len(set(ids[ids >= 0].tolist())) >= 4  # people walk in vtest from the first frame: real tracks
