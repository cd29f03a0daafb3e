"""Video files for tests, made from the bundled samples."""

from __future__ import annotations

from pathlib import Path

import cv2


def damaged_h264(samples: Path, path: Path, frames: int, damage_at: int) -> Path:
    """An H.264 MP4 of vtest whose packet `damage_at` has a broken NAL length: the decoder fails a read there."""
    import av

    cap = cv2.VideoCapture(str(samples / "vtest.avi"))
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = 768, 576, "yuv420p"
        st.options = {"g": "50"}  # a keyframe every 50 frames: damage_at=200 is one
        for _ in range(frames):
            ok, img = cap.read()
            assert ok
            for packet in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in st.encode():
            out.mux(packet)
    with av.open(str(path)) as src:
        packets = [(p.pos, p.size) for p in src.demux(video=0) if p.size]
    data = bytearray(path.read_bytes())
    pos, _ = packets[damage_at]
    data[pos : pos + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    return path
