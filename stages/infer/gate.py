"""Motion gating: the CNN runs only on frames where something moves.

A fixed camera's frame with no motion shows what the previous one showed, so the
previous CNN detections of that stream are carried forward instead of running the
network again. The CNN still runs while the background model warms up, on a
stream's first frame, and at least every `refresh_frames` frames, so that a scene
that changed without visible motion (lighting, a stopped car) is seen again.

Only whole frames are gated. Gating regions (running the CNN on crops around
motion) saves nothing with a fixed-input detector like COCO-SSD, which resizes any
input to 300x300: the cost per forward is the same for a crop as for the frame.
"""

from __future__ import annotations

from pipeline.detections import Detections
from pipeline.protocol import Frame
from stages.infer.detectors.motion import MotionDetector
from stages.infer.options import GateOptions


class MotionGate:
    def __init__(self, options: GateOptions) -> None:
        self.o = options
        self.motion = MotionDetector(options.motion)
        self._since_run: dict[str, int] = {}

    def needs_cnn(self, frames: list[Frame]) -> list[bool]:
        """For each frame, in order: run the CNN (True) or carry the stream's last detections (False)."""
        out = []
        for f in frames:
            assert f.image is not None
            moving = len(self.motion.detect_image(f.stream, f.image)) > 0 or self.motion.warming_up(f.stream)
            since = self._since_run.get(f.stream)
            run = moving or since is None or since + 1 >= self.o.refresh_frames
            self._since_run[f.stream] = 0 if run else since + 1  # type: ignore[operator]
            out.append(run)
        return out

    def reset(self, stream: str) -> None:
        self.motion.reset(stream)
        self._since_run.pop(stream, None)


def fill_gated(frames: list[Frame], ran: list[bool], results: list[Detections], last: dict[str, Detections]) -> list[Detections]:
    """Detections for every frame: CNN results where it ran, the stream's previous ones where it did not."""
    out = []
    it = iter(results)
    for f, r in zip(frames, ran):
        det = next(it) if r else last.get(f.stream, Detections())
        last[f.stream] = det
        out.append(det)
    return out
