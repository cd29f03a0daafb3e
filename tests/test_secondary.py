"""Secondary models on crops of the primary detections: crop content and geometry, selection, batching,
columns on every frame, the wire protocol, and config errors that name the field path."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pipeline.categories import category_id
from pipeline.detections import Detections
from pipeline.protocol import Frame, decode, encode
from stages.infer.secondary import SecondaryRunner
from stages.infer.secondary_model import validate_secondary
from tests.helpers.secondary_models import MeanColour

MEAN = "tests.helpers.secondary_models:MeanColour"
DOMINANT = "tests.helpers.secondary_models:DominantChannel"
PERSON, CAR = category_id("person"), category_id("car")
# BGR, as frames travel.
RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)


def image(w: int, h: int, rects: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]], bg: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bg
    for (x1, y1, x2, y2), colour in rects:
        img[y1:y2, x1:x2] = colour
    return img


Box = tuple[float, float, float, float]


def frame(img: np.ndarray, boxes: list[Box], classes: list[int], scores: list[float] | None = None, seq: int = 0) -> Frame:
    h, w = img.shape[:2]
    det = Detections(np.array(boxes, np.float32).reshape(-1, 4), scores or [0.9] * len(boxes), classes)
    return Frame("cam", seq, seq / 10, 0.0, w, h, img, detections=det)


def runner(*configs: dict[str, Any], counts: Counter | None = None) -> SecondaryRunner:
    on_count = None if counts is None else (lambda model, outcome, n: counts.update({(model, outcome): n}))
    return SecondaryRunner(validate_secondary(list(configs)), torch.device("cpu"), on_count)


def mean_cfg(**kw: Any) -> dict[str, Any]:
    return {"name": "colour", "kind": MEAN, "classes": ["person"], **kw}


def rgb(f: Frame, row: int) -> tuple[float, float, float]:
    x = f.detections.extra
    return (float(x["colour.r"][row]), float(x["colour.g"][row]), float(x["colour.b"][row]))


def test_crop_content_mean_colour() -> None:
    # Left half of the second box red, right half blue.
    img = image(100, 60, [((10, 10, 30, 40), RED), ((40, 10, 60, 40), RED), ((60, 10, 80, 40), BLUE)])
    f = frame(img, [(10, 10, 30, 40), (40, 10, 80, 40)], [PERSON, PERSON])
    runner(mean_cfg()).apply([f])
    assert rgb(f, 0) == pytest.approx((1, 0, 0), abs=1e-6)
    assert rgb(f, 1) == pytest.approx((0.5, 0, 0.5), abs=1e-6)


def test_crop_geometry_on_a_gradient() -> None:
    """Red = column index, green = row index: each crop pixel's value says exactly where it sampled."""
    h, w = 60, 100
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 2] = np.arange(w)[None, :]
    img[:, :, 1] = np.arange(h)[:, None]
    box, pad, (cw, ch) = (20.0, 10.0, 50.0, 40.0), 0.25, (9, 7)
    f = frame(img, [box], [PERSON])
    r = runner(mean_cfg(padding=pad, options={"width": cw, "height": ch}))
    r.apply([f])
    crop = r.models["colour"].batches[0][0].numpy() * 255  # [3, ch, cw], RGB
    x1, y1, x2, y2 = box
    px, py = (x2 - x1) * pad, (y2 - y1) * pad
    x1, x2, y1, y2 = x1 - px, x2 + px, y1 - py, y2 + py
    # Crop pixel j's centre lies at x1 + (j + 0.5) * width / cw; pixel i's value sits at its centre i + 0.5.
    xs = x1 + (np.arange(cw) + 0.5) * (x2 - x1) / cw - 0.5
    ys = y1 + (np.arange(ch) + 0.5) * (y2 - y1) / ch - 0.5
    np.testing.assert_allclose(crop[0], np.broadcast_to(xs[None, :], (ch, cw)), atol=1e-3)
    np.testing.assert_allclose(crop[1], np.broadcast_to(ys[:, None], (ch, cw)), atol=1e-3)
    # The centre pixel samples the box's centre (35, 25), i.e. between pixels 34 and 35.
    assert crop[0, ch // 2, cw // 2] == pytest.approx(34.5, abs=1e-3)
    assert crop[1, ch // 2, cw // 2] == pytest.approx(24.5, abs=1e-3)


def test_padding_beyond_the_frame_replicates_its_border() -> None:
    h, w = 40, 64
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 2] = np.arange(w)[None, :]
    f = frame(img, [(0, 0, 20, 40)], [PERSON])
    r = runner(mean_cfg(padding=0.5, options={"width": 8, "height": 8}))
    r.apply([f])
    crop = r.models["colour"].batches[0][0].numpy() * 255
    # Box x from -10 to 30: samples left of pixel 0's centre read pixel 0, the rest the gradient.
    xs = np.clip(-10 + (np.arange(8) + 0.5) * 40 / 8 - 0.5, 0, w - 1)
    np.testing.assert_allclose(crop[0], np.broadcast_to(xs, (8, 8)), atol=1e-3)


def test_models_run_only_on_their_classes() -> None:
    img = image(100, 60, [((0, 0, 50, 60), RED), ((50, 0, 100, 60), GREEN)])
    f = frame(img, [(0, 0, 50, 60), (50, 0, 100, 60)], [PERSON, CAR])
    r = runner(mean_cfg(), {"name": "dom", "kind": DOMINANT, "classes": ["car"]})
    r.apply([f])
    x = f.detections.extra
    assert rgb(f, 0) == pytest.approx((1, 0, 0))
    assert np.isnan(x["colour.r"][1]) and np.isnan(x["colour.g"][1]) and np.isnan(x["colour.b"][1])
    assert x["dom.channel"].tolist() == [-1, 1]
    assert x["dom.channel"].dtype == np.int32 and x["colour.r"].dtype == np.float32
    assert set(x) == set(r.columns)


def test_min_size_min_score_and_max_crops() -> None:
    img = image(200, 100, [((0, 0, 200, 100), BLUE)])
    boxes = [(0, 0, 5, 50), (10, 0, 50, 40), (60, 0, 100, 40), (110, 0, 150, 40), (160, 0, 200, 40)]
    scores = [0.9, 0.2, 0.6, 0.8, 0.7]
    f = frame(img, boxes, [PERSON] * 5, scores)
    counts: Counter = Counter()
    r = runner(mean_cfg(min_size=8, min_score=0.3, max_crops=2), counts=counts)
    r.apply([f])
    ran = ~np.isnan(f.detections.extra["colour.b"])
    # 0: too narrow; 1: scores too low; of 2, 3, 4 the two best (0.8, 0.7) run.
    assert ran.tolist() == [False, False, False, True, True]
    assert counts == {("colour", "run"): 2, ("colour", "min_size"): 1, ("colour", "min_score"): 1, ("colour", "max_crops"): 1}


def test_one_forward_for_the_whole_batch_and_frames_of_different_sizes() -> None:
    frames = [
        frame(image(64, 48, [((0, 0, 32, 48), RED)], bg=BLUE), [(0, 0, 32, 48), (32, 0, 64, 48)], [PERSON, PERSON], seq=0),
        frame(image(120, 90, [], bg=GREEN), [(10, 10, 60, 60)], [PERSON], seq=1),
        frame(image(64, 48, [], bg=BLUE), [(8, 8, 40, 40)], [PERSON], seq=2),
        frame(image(120, 90, [], bg=RED), [(70, 20, 110, 80)], [PERSON], seq=3),
    ]
    r = runner(mean_cfg())
    r.apply(frames)
    model = r.models["colour"]
    assert isinstance(model, MeanColour)
    assert len(model.batches) == 1 and model.batches[0].shape == (5, 3, 16, 16)
    assert rgb(frames[0], 0) == pytest.approx((1, 0, 0)) and rgb(frames[0], 1) == pytest.approx((0, 0, 1))
    assert rgb(frames[1], 0) == pytest.approx((0, 1, 0))
    assert rgb(frames[2], 0) == pytest.approx((0, 0, 1))
    assert rgb(frames[3], 0) == pytest.approx((1, 0, 0))


def test_boxes_at_the_bottom_of_a_frame_do_not_bleed_into_the_next_of_its_size() -> None:
    # Two frames of one size are cut from one stack: the first's bottom edge touches the second's top.
    frames = [
        frame(image(32, 32, [], bg=RED), [(0, 16, 32, 32)], [PERSON], seq=0),
        frame(image(32, 32, [], bg=BLUE), [(0, 0, 32, 16)], [PERSON], seq=1),
    ]
    runner(mean_cfg(padding=0.5)).apply(frames)
    assert rgb(frames[0], 0) == pytest.approx((1, 0, 0), abs=1e-4)
    assert rgb(frames[1], 0) == pytest.approx((0, 0, 1), abs=1e-4)


def test_every_frame_gets_the_columns_even_without_detections() -> None:
    frames = [
        frame(image(64, 48, [], bg=RED), [(0, 0, 32, 32)], [PERSON], seq=0),
        frame(image(64, 48, [], bg=RED), [], [], seq=1),
        frame(image(64, 48, [], bg=RED), [(0, 0, 32, 32)], [CAR], seq=2),
    ]
    r = runner(mean_cfg(), {"name": "dom", "kind": DOMINANT, "classes": ["person"]})
    r.apply(frames)
    for f in frames:
        assert set(f.detections.extra) == {"colour.r", "colour.g", "colour.b", "dom.channel"}
    assert len(frames[1].detections.extra["dom.channel"]) == 0 and frames[1].detections.extra["dom.channel"].dtype == np.int32
    assert frames[2].detections.extra["dom.channel"].tolist() == [-1]
    both = Detections.concat([f.detections for f in frames])
    assert both.extra["dom.channel"].tolist() == [0, -1]


def test_no_applicable_detection_means_no_forward() -> None:
    f = frame(image(64, 48, []), [(0, 0, 32, 32)], [CAR])
    r = runner(mean_cfg())
    r.apply([f])
    assert r.models["colour"].batches == [] and np.isnan(f.detections.extra["colour.r"]).all()


def test_input_detections_are_not_changed_in_place() -> None:
    # The motion gate hands a stream's last Detections object to later frames.
    f = frame(image(64, 48, [], bg=RED), [(0, 0, 32, 32)], [PERSON])
    before = f.detections
    runner(mean_cfg()).apply([f])
    assert before.extra == {} and f.detections is not before


def test_columns_round_trip_through_the_protocol() -> None:
    frames = [
        frame(image(64, 48, [], bg=GREEN), [(0, 0, 32, 32), (0, 0, 32, 32)], [PERSON, CAR]),
        frame(image(64, 48, []), [], []),
    ]
    runner(mean_cfg(), {"name": "dom", "kind": DOMINANT, "classes": ["person", "car"]}).apply(frames)
    for f in frames:
        g = decode([bytes(memoryview(p)) for p in encode(f)])  # as received off a socket
        assert isinstance(g, Frame) and set(g.detections.extra) == set(f.detections.extra)
        for name, col in f.detections.extra.items():
            assert g.detections.extra[name].dtype == col.dtype
            np.testing.assert_array_equal(g.detections.extra[name], col)  # NaN equals NaN here


def test_model_that_returns_the_wrong_shape_is_reported() -> None:
    f = frame(image(64, 48, []), [(0, 0, 32, 32)], [PERSON])
    r = runner(mean_cfg())
    one = lambda crops: crops[:, 0, 0, 0]  # noqa: E731
    r.models["colour"].run = lambda crops: {"r": one(crops), "g": one(crops), "b": crops[:, 0, 0]}  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="'b' as a tensor"):
        r.apply([f])


def locs(items: list[dict[str, Any]]) -> dict[str, str]:
    with pytest.raises(ValidationError) as exc:
        validate_secondary(items)
    out = {}
    for err in exc.value.errors():
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        out[path] = err["msg"]
    return out


@pytest.mark.parametrize(
    "kind, message",
    [
        ("colour", "unknown secondary model 'colour'"),
        ("Colour", "is not a name or module:Class"),
        ("tests.helpers.secondary_models:", "must be a built-in name or package.module:Class"),
        ("tests.helpers.no_such_module:MeanColour", "no module tests.helpers.no_such_module"),
        ("tests.helpers.secondary_models:Missing", "Missing is not a SecondaryModel class"),
        ("tests.helpers.secondary_models:NotAModel", "NotAModel is not a SecondaryModel class"),
        ("stages.infer.secondary:SecondaryModel", "is abstract"),
    ],
)
def test_bad_kind_names_the_field(kind: str, message: str) -> None:
    problems = locs([mean_cfg(), mean_cfg(name="other", kind=kind, options={"width": 3})])
    assert list(problems) == ["secondary[1].kind"]  # no second error about options the kind cannot check
    assert message in problems["secondary[1].kind"]


def test_a_built_in_model_is_named_by_its_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built-in models are found by the registry in their package (stages/infer/secondaries/, here a stand-in)."""
    from pipeline.plugins import Registry
    from stages.infer import secondary_model
    from stages.infer.secondary_model import SecondaryModel

    registry = Registry("secondary model", SecondaryModel, "tests.helpers.builtin_secondaries", key="kind")
    monkeypatch.setattr(secondary_model, "SECONDARY_MODELS", registry)
    assert registry.names() == ["mean_colour"]
    [cfg] = validate_secondary([mean_cfg(kind="mean_colour", options={"width": 3})])
    frames = [frame(image(64, 48, [((8, 8, 24, 40), RED)]), [(8, 8, 24, 40)], [PERSON])]
    runner(cfg.model_dump()).apply(frames)
    assert rgb(frames[0], 0) == pytest.approx((1.0, 0.0, 0.0), abs=1e-3)
    assert "known: mean_colour (or module:Class)" in locs([mean_cfg(kind="mean_color")])["secondary[0].kind"]


def test_bad_options_and_fields_name_their_path() -> None:
    problems = locs([mean_cfg(options={"width": "wide", "colour": 1}, classes=["person", "unicorn"], padding=-1)])
    assert set(problems) == {
        "secondary[0].options.width",
        "secondary[0].options.colour",
        "secondary[0].classes",
        "secondary[0].padding",
    }
    assert "unicorn" in problems["secondary[0].classes"]
    assert "duplicate name colour" in locs([mean_cfg(), mean_cfg()])["secondary"]
    assert list(locs([mean_cfg(name="Face.id")])) == ["secondary[0].name"]


def test_secondary_model_through_a_real_pipeline(tmp_path, sock_dir, samples) -> None:  # type: ignore[no-untyped-def]
    """The infer stage runs a configured secondary model on person crops; its columns reach the JSONL."""
    import json

    from tests.helpers.configs import write_config
    from tests.helpers.procs import run_vidpipe

    out = tmp_path / "out"
    stages = [
        {"name": "decode", "kind": "decode"},
        {"name": "infer", "kind": "infer", "options": {"secondary": [
            {"name": "colour", "kind": "tests.helpers.secondary_models:MeanColour", "classes": ["person"]}]}},
        {"name": "record", "kind": "record", "options": {"out_dir": str(out), "video": False}},
    ]
    streams = [{"id": "v", "source": str(samples / "vtest.avi"), "fps": 0.5}]  # every 20th frame: 40 frames
    cfg = write_config(tmp_path / "c.yaml", streams, out, port_base=None, run_dir=sock_dir, stages=stages)
    result = run_vidpipe("run", str(cfg), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(x)["objects"] for x in (out / "v.jsonl").read_text().splitlines()]
    assert len(rows) == 40
    people = cars = 0
    for o in rows:
        assert {"colour.r", "colour.g", "colour.b"} <= set(o)
        for cls, r in zip(o["classes"], o["colour.r"]):
            if cls == "person":
                people += 1
                assert r is not None and 0.0 <= r <= 1.0
            else:
                cars += 1
                assert r is None  # not a class the model runs on
    assert people > 50 and cars > 30
