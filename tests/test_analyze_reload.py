"""A live analyze stage takes edited analytics from its config file without a restart (stages/analyze/stage.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import yaml

from pipeline.categories import category_id
from pipeline.config import load_config
from pipeline.detections import Detections
from pipeline.metrics import StageMetrics
from pipeline.protocol import Frame, StreamStart
from pipeline.stage import StageContext
from stages.analyze.stage import AnalyzeStage


def _doc(line_x: float, zone: list[list[float]]) -> dict[str, object]:
    return {
        "mode": "live", "streams": [{"id": "cam", "source": "rtsp://h/x"}],
        "stages": [{"name": "decode", "kind": "decode"}, {"name": "analyze", "kind": "analyze", "options": {"streams": {"cam": {
            "frame_size": [200, 100], "zones": {"z": {"points": zone}}, "lines": {"gate": {"points": [[line_x, 0], [line_x, 100]]}},
            "rules": [{"name": "in-z", "type": "zone_intrusion", "zone": "z", "classes": ["person"], "min_dwell_s": 0}]}}}}],
    }  # fmt: skip


def _frame(seq: int, x: float) -> Frame:
    d = Detections(np.array([[x - 5, 40, x + 5, 80]], np.float32), np.array([0.9], np.float32), np.full(1, category_id("person"), np.int32))
    d.track_ids = np.array([7], np.int64)
    return Frame("cam", seq, seq / 10, 1_800_000_000 + seq / 10, 200, 100, None, detections=d)


def test_edited_zones_and_lines_are_taken_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_doc(50, [[150, 0], [199, 0], [199, 99], [150, 99]])))
    cfg = load_config(path)
    st = cfg.stage("analyze")
    stage = AnalyzeStage(StageContext("analyze", cfg, st, AnalyzeStage.Options.model_validate(st.options), StageMetrics("analyze"),
                                      logging.getLogger("t"), config_path=path))  # fmt: skip
    stage.ctx.streams.begin(stage, "cam", StreamStart(1, live=True, fps=10.0))
    out = []
    for seq, x in enumerate([20, 30, 40, 60, 70, 80]):  # crosses x=50 once
        out += stage.process([_frame(seq, x)])
    assert sum(out[-1].analytics.counts["gate"].values()) == 1
    assert not any(f.analytics.alerts for f in out)  # the zone is on the right, the person is not in it yet
    # The line moves to x=100 and the zone to the left: the count goes on, the next frame in the zone alerts.
    path.write_text(yaml.safe_dump(_doc(100, [[0, 0], [120, 0], [120, 99], [0, 99]])))
    os.utime(path, ns=(1, 2))  # a changed mtime, whatever the clock's resolution
    stage._config._next = 0.0  # look now, not a second later
    stage.tick()
    more = stage.process([_frame(6, 90)]) + stage.process([_frame(7, 110)])
    assert sum(more[-1].analytics.counts["gate"].values()) == 2  # one before the edit, one across the moved line
    assert any(a.rule == "in-z" for f in more for a in f.analytics.alerts)
    # An invalid edit (a rule's zone gone) is refused: the analytics go on as they were.
    bad = _doc(100, [[0, 0], [120, 0], [120, 99], [0, 99]])
    bad["stages"][1]["options"]["streams"]["cam"]["zones"] = {}  # type: ignore[index]
    path.write_text(yaml.safe_dump(bad))
    assert stage.reload(path) is False
    assert "z" in stage.ctx.streams.state("cam").zones
