"""The primary detectors are plugins (stages/infer/detectors/, one module each), chosen by `detector:` in the
infer options: a name for its defaults, or a mapping with `type` and its settings."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.config import ConfigError, parse_config
from stages.infer.detectors import DETECTORS, parse_detector_config
from stages.infer.detectors.coco_ssd import CocoSsdOptions
from stages.infer.detectors.motion import MotionOptions
from stages.infer.options import GateOptions, InferOptions


def problems(options: dict[str, Any]) -> list[tuple[str, str]]:
    data = {
        "streams": [{"id": "a", "source": "a.mp4"}],
        "stages": [{"name": "decode", "kind": "decode"}, {"name": "infer", "kind": "infer", "options": options}],
    }
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return exc.value.problems


def test_the_registry_finds_the_three_detectors() -> None:
    assert DETECTORS.names() == ["coco_ssd", "custom", "motion"]
    for name, cls in DETECTORS.all().items():
        assert cls.type == name
        # The options' `type` defaults to the detector's key, so `detector: NAME` and Options() both mean it.
        assert cls.Options.model_fields["type"].default == name, cls


def test_default_shorthand_and_mapping() -> None:
    assert InferOptions().detector == CocoSsdOptions()
    assert InferOptions.model_validate({"detector": "motion"}).detector == MotionOptions()
    opts = InferOptions.model_validate({"detector": {"type": "coco_ssd", "score_threshold": 0.2}}).detector
    assert isinstance(opts, CocoSsdOptions) and opts.score_threshold == 0.2
    opts = InferOptions.model_validate({"detector": {"type": "motion", "history": 50}}).detector
    assert isinstance(opts, MotionOptions) and opts.history == 50
    assert parse_detector_config("motion") == MotionOptions()
    # The motion gate's own motion settings need no type.
    assert GateOptions.model_validate({"motion": {"history": 50}}).motion.history == 50


def test_bad_detectors_name_the_field() -> None:
    assert problems({"detector": "yolo"}) == [
        ("stages[1].options.detector", "unknown detector 'yolo'; known: coco_ssd, custom, motion (got 'yolo')")
    ]
    [(path, msg)] = problems({"detector": {"score_threshold": 0.2}})
    assert path == "stages[1].options.detector" and msg.startswith("needs a type: one of coco_ssd, custom, motion")
    got = dict(problems({"detector": {"type": "motion", "history": 3, "score_threshold": 0.2}}))
    assert set(got) == {"stages[1].options.detector.history", "stages[1].options.detector.score_threshold"}
    with pytest.raises(ValidationError):
        parse_detector_config({"type": "motion", "history": 3})


def test_old_detector_sections_say_where_the_settings_went() -> None:
    assert problems({"coco_ssd": {"score_threshold": 0.2}}) == [
        ("stages[1].options.coco_ssd", "detector settings moved: write detector: {type: coco_ssd, score_threshold: 0.2}")
    ]
    assert problems({"detector": "motion", "motion": {"history": 300, "min_area": 0.0015}}) == [
        ("stages[1].options.motion", "detector settings moved: write detector: {type: motion, history: 300, min_area: 0.0015}")
    ]
    # A section the old config's detector did not use is named as unused.
    [(path, msg)] = problems({"detector": "motion", "coco_ssd": {"score_threshold": 0.2}})
    assert path == "stages[1].options.coco_ssd" and "unused (the detector was motion): remove them" in msg
