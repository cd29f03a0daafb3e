"""The record stage's video writer (stages/encode.py) and the COCO-SSD tap gather (stages/infer/ssd/taps.py)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stages.encode import open_video
from stages.infer.ssd.taps import gather_bgr, gather_taps, legacy_taps, pixel_columns

SAMPLES = Path(__file__).resolve().parent.parent / "sample_videos"


def _frames(n: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(SAMPLES / "vtest.avi"))
    frames = []
    for _ in range(n):
        ok, f = cap.read()
        assert ok
        frames.append(f if size is None else cv2.resize(f, size))
    return frames


def _write(path: Path, frames: list[np.ndarray], codec: str = "h264") -> None:
    h, w = frames[0].shape[:2]
    out = open_video(str(path), codec, 10.0, w, h)
    for f in frames:
        out.write(f)
    out.close()


def test_h264_is_what_browsers_play(tmp_path: Path) -> None:
    frames = _frames(30)
    path = tmp_path / "a.mp4"
    _write(path, frames)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.pix_fmt, s.frames) == ("h264", "yuv420p", 30)
        assert s.codec_context.profile in ("Constrained Baseline", "Baseline", "Main", "High")
        assert float(s.average_rate) == pytest.approx(10.0)
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "the index comes first: a browser plays it while it downloads"
    cap = cv2.VideoCapture(str(path))
    decoded = [cap.read()[1] for _ in range(30)]
    assert all(d is not None and d.shape == frames[0].shape for d in decoded)
    # Colours survive: BT.601 limited range in, the same out (a range mix-up shifts every pixel by 10-20).
    diff = np.stack(decoded).astype(np.float32) - np.stack(frames)
    assert abs(float(diff.mean())) < 1.5 and float(np.abs(diff).mean()) < 4.0


def test_h264_bytes_follow_from_the_frames(tmp_path: Path) -> None:
    frames = _frames(20)
    _write(tmp_path / "a.mp4", frames)
    _write(tmp_path / "b.mp4", frames)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_h264_pads_odd_sizes(tmp_path: Path) -> None:
    frames = _frames(5, size=(321, 241))
    _write(tmp_path / "odd.mp4", frames)
    cap = cv2.VideoCapture(str(tmp_path / "odd.mp4"))
    ok, first = cap.read()
    assert ok and first.shape == (242, 322, 3)
    assert float(np.abs(first[:241, :321].astype(np.float32) - frames[0]).mean()) < 4.0


def test_unwritable_video_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        open_video(str(tmp_path / "missing" / "a.mp4"), "h264", 10.0, 64, 48)


@pytest.mark.parametrize("shape", [(576, 768), (480, 640), (241, 321), (300, 300), (1080, 1920), (120, 90)])
def test_gather_bgr_is_the_byte_gather(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0])
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    rows, cols, _, _ = legacy_taps(*shape, (300, 300), bgr=True)
    expected = gather_taps(image[None], rows, cols)
    got = gather_bgr(image, rows, pixel_columns(shape[1], (300, 300)))
    assert got.shape == expected.shape and got.dtype == np.uint8
    assert np.array_equal(got, expected)
    # A read-only frame (as they come off the wire) and a non-contiguous view gather the same.
    image.flags.writeable = False
    assert np.array_equal(gather_bgr(image, rows, pixel_columns(shape[1], (300, 300))), expected)
    wide = np.zeros((shape[0], shape[1] + 8, 3), np.uint8)
    wide[:, 4 : 4 + shape[1]] = image
    assert np.array_equal(gather_bgr(wide[:, 4 : 4 + shape[1]], rows, pixel_columns(shape[1], (300, 300))), expected)
