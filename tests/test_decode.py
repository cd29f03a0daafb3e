"""The decode stage's own behaviour, driven in-process: folders, fps cap, resize, looping, pacing."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.config import parse_config
from pipeline.metrics import StageMetrics
from pipeline.protocol import KIND_EOS, KIND_STARTED, Control, Frame
from pipeline.stage import NoOptions, StageContext
from stages.decode import DecodeStage, redact, source_kind
from tests.helpers.clips import damaged_h264


def run_decode(stream: dict[str, Any], mode: str = "replay", limit: int | None = None) -> tuple[list[Frame], list[Control], StageMetrics]:
    cfg = parse_config({"mode": mode, "streams": [stream], "stages": [{"name": "decode", "kind": "decode"}]})
    metrics = StageMetrics("decode")
    ctx = StageContext("decode", cfg, cfg.stages[0], NoOptions(), metrics, logging.getLogger("test"), stream["id"])
    frames: list[Frame] = []
    controls: list[Control] = []
    for item in DecodeStage(ctx).frames():
        (controls if isinstance(item, Control) else frames).append(item)
        if limit is not None and len(frames) >= limit:
            ctx.stop_event.set()
    return frames, controls, metrics


def test_file_fps_cap_and_resize(samples: Path) -> None:
    frames, controls, _ = run_decode({"id": "b", "source": str(samples / "bikes.mp4"), "fps": 5, "resize": [320, 136]})
    # 250 frames at 25 fps = 10 s; capped at 5 fps: 50 frames, evenly spaced.
    assert len(frames) == 50
    assert [f.seq for f in frames] == list(range(50))
    assert np.allclose(np.diff([f.pts for f in frames]), 0.2)
    assert frames[0].image.shape == (136, 320, 3) and (frames[0].width, frames[0].height) == (320, 136)
    assert [c.kind for c in controls] == [KIND_STARTED, KIND_EOS]
    start = controls[0].start
    assert start.fps == 5 and start.frames == 250 and not start.live and start.epoch > 0
    assert all(f.epoch == start.epoch for f in frames) and controls[-1].epoch == start.epoch
    assert controls[-1].end.frames == 50 and controls[-1].end.error is None


def test_image_folder_skips_unreadable_images(tmp_path: Path) -> None:
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"img{i:03d}.png"), np.full((40, 60, 3), i * 40, np.uint8))
    (tmp_path / "img002.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    frames, controls, metrics = run_decode({"id": "f", "source": str(tmp_path), "fps": 2})
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 40, 120]
    assert [f.pts for f in frames] == [0.0, 0.5, 1.0]
    assert metrics.decode_errors.labels("decode", "f", "bad_image")._value.get() == 1
    assert controls[-1].kind == KIND_EOS and controls[-1].end.frames == 3


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    frames, controls, _ = run_decode({"id": "f", "source": str(tmp_path)})
    assert frames == [] and "holds no images" in (controls[-1].end.error or "")


def test_loop_continues_pts_and_seq(samples: Path) -> None:
    frames, _, _ = run_decode({"id": "c", "source": str(samples / "carphone_pristine.mp4"), "loop": True}, limit=150)
    assert [f.seq for f in frames[:150]] == list(range(150))
    assert np.all(np.diff([f.pts for f in frames]) > 0)  # no jump back at the loop


def test_live_mode_paces_files_at_their_native_rate(samples: Path) -> None:
    t0 = time.monotonic()
    frames, _, _ = run_decode({"id": "v", "source": str(samples / "vtest.avi")}, mode="live", limit=11)
    assert 0.9 < time.monotonic() - t0 < 3.0  # 11 frames at 10 fps: one second of video


def test_source_kinds_and_redaction(tmp_path: Path) -> None:
    assert source_kind(0) == "device"
    assert source_kind("rtsp://cam/x") == "url" and source_kind("HTTP://cam/x.mjpg") == "url"
    assert source_kind(str(tmp_path)) == "folder" and source_kind(str(tmp_path / "a.mp4")) == "file"
    assert redact("rtsp://admin:pw@10.0.0.1/ch1") == "rtsp://admin:***@10.0.0.1/ch1"
    assert redact("rtsp://10.0.0.1/ch1") == "rtsp://10.0.0.1/ch1"


def test_a_damaged_packet_costs_its_frames_not_the_rest_of_the_file(tmp_path: Path, samples: Path) -> None:
    clip = damaged_h264(samples, tmp_path / "damaged.mp4", 300, 200)
    frames, controls, metrics = run_decode({"id": "d", "source": str(clip)})
    end = controls[-1].end
    assert end.error is None and not end.stopped  # read to its end, not "truncated"
    # What follows the damage is all there (give or take the one frame a decoder may repeat while it recovers).
    assert 0 < end.damaged <= 30 and abs(len(frames) + end.damaged - 300) <= 1
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert metrics.decode_errors.labels("decode", "d", "damaged_frame")._value.get() == end.damaged
    assert abs(frames[-1].pts - 29.9) < 0.15  # the frames after the damage keep their times, to the end of the clip
