"""Config validation: every error names the field path and the problem; `check` exits 2 and nothing starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import ConfigError, load_config
from tests.helpers.procs import run_vidpipe

GOOD = {
    "mode": "replay",
    "streams": [{"id": "cam1", "source": "video.mp4"}],
    "stages": [
        {"name": "decode", "kind": "decode"},
        {"name": "infer", "kind": "infer", "options": {"detector": {"type": "motion", "history": 200}}},
        {"name": "record", "kind": "record", "options": {"out_dir": "out"}},
    ],
}


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "pipeline.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def problems(tmp_path: Path, data: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, data))
    return exc.value.problems


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.transport.hwm == 4 and cfg.live.source_queue == 2
    # Relative sources are relative to the config file.
    assert cfg.streams[0].source == str(tmp_path / "video.mp4")
    assert cfg.input_endpoint("infer").endswith("/infer.sock")
    assert cfg.output_endpoint("decode") == ">" + cfg.input_endpoint("infer")
    assert cfg.output_endpoint("record") is None


def test_unknown_key_is_named(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["streams"][0]["fpss"] = 5
    assert problems(tmp_path, data) == [("streams[0].fpss", "unknown key (did you mean fps?)")]
    data["streams"][0] = {"id": "cam1", "source": "video.mp4", "zzz": 5}  # nothing is close
    assert problems(tmp_path, data) == [("streams[0].zzz", "unknown key (not part of the schema; check its spelling)")]


def test_wrong_type_is_named_with_the_value(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["transport"] = {"hwm": "lots"}
    [(path, msg)] = problems(tmp_path, data)
    assert path == "transport.hwm" and "integer" in msg and "'lots'" in msg


def test_missing_field_is_named(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    del data["streams"][0]["source"]
    assert problems(tmp_path, data) == [("streams[0].source", "missing required field")]


def test_stage_options_are_checked_by_their_kind(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["stages"][1]["options"] = {"detector": {"type": "motion", "history": -3, "colour": 1}}
    got = dict(problems(tmp_path, data))
    # The path is the document's: pydantic's `motion` (the union member, told by `type`) is not in it.
    assert "greater than or equal to 10" in got["stages[1].options.detector.history"]
    assert got["stages[1].options.detector.colour"].startswith("unknown key")


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["streams"][0]["fpss"] = 5
    data["transport"] = {"hwm": 0}
    got = problems(tmp_path, data)
    assert [p for p, _ in got] == ["streams[0].fpss", "transport.hwm"]


def test_duplicates_and_unknown_kinds(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["streams"].append({"id": "cam1", "source": "b.mp4"})
    assert problems(tmp_path, data) == [("", "streams: duplicate id cam1")]
    data["streams"].pop()
    data["stages"][2]["kind"] = "recorder"
    assert problems(tmp_path, data) == [("stages[2].kind", "unknown stage kind 'recorder'; did you mean record? known: alert, analyze, decode, infer, record, track, web (or module:Class)")]


THREE_PLACES = """\
mode: replay
batching: {max_size: 8}
streams: [{id: cam1, source: video.mp4}]
stages:
  - {name: decode, kind: decode}
  - {name: infer, kind: infer, options: {detector: {type: coco_ssd, score_treshold: 0.2}}}
  - {name: record, kind: recrod}
"""


def test_every_problem_is_reported_at_once_in_document_order(tmp_path: Path) -> None:
    # A top-level problem no longer hides those of the stages (their kinds and options are checked on their own).
    got = problems(tmp_path, THREE_PLACES)
    assert [p for p, _ in got] == ["batching", "stages[1].options.detector.score_treshold", "stages[2].kind"]
    assert got[0][1] == "unknown key (not part of the schema; check its spelling)"  # nothing close to `batching`
    assert got[1][1] == "unknown key (did you mean score_threshold?)"
    assert got[2][1].startswith("unknown stage kind 'recrod'; did you mean record?")
    # In the order of the document, not of the schema; a stage's own problems come once, though the top level has them too.
    text = THREE_PLACES.replace("{name: record, kind: recrod}", "{name: Record, kind: record, batch: {max_size: 0}}").replace("batching", "stage")
    text = text.replace("mode: replay\n", "") + "mode: fast\n"
    got = problems(tmp_path, text)
    assert [p for p, _ in got] == ["stage", "stages[1].options.detector.score_treshold", "stages[2].name", "stages[2].batch.max_size", "mode"], got
    assert got[0][1] == "unknown key (did you mean stages?)"


@pytest.mark.parametrize(
    ("where", "key", "hint"),
    [
        ((), "stage", "stages"),
        (("stages", 1), "batching", "batch"),
        (("stages", 1, "options", "detector"), "score_treshold", "score_threshold"),
        (("stages", 2, "options", "streams", "cam1", "zones", "lawn"), "pointz", "points"),
        (("stages", 2, "options", "streams", "cam1", "rules", 0), "min_dwel_s", "min_dwell_s"),
        (("stages", 3, "options", "sinks", "file"), "snapshot_dir", "snapshots_dir"),
        (("stages", 2, "options", "streams", "cam1", "rules", 0), "qqqq", None),
    ],
)
def test_unknown_keys_get_the_nearest_known_one(tmp_path: Path, where: tuple[str | int, ...], key: str, hint: str | None) -> None:
    data = {
        "streams": [{"id": "cam1", "source": "video.mp4"}],
        "stages": [
            {"name": "decode", "kind": "decode"},
            {"name": "infer", "kind": "infer", "options": {"detector": {"type": "coco_ssd"}}},
            {"name": "analyze", "kind": "analyze", "options": {"streams": {"cam1": {
                "frame_size": [640, 480],
                "zones": {"lawn": {"points": [[0, 300], [639, 300], [639, 479], [0, 479]]}},
                "rules": [{"name": "on-the-lawn", "type": "zone_intrusion", "zone": "lawn"}],
            }}}},
            {"name": "alert", "kind": "alert", "options": {"sinks": {"file": {"type": "jsonl", "path": "alerts.jsonl"}}}},
        ],
    }  # fmt: skip
    node: Any = data
    for part in where:
        node = node[part]
    node[key] = 1
    # The path is the document's (no `zone_intrusion` or `jsonl`: the union members pydantic names).
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in (*where, key)).lstrip(".")
    msg = f"unknown key (did you mean {hint}?)" if hint else "unknown key (not part of the schema; check its spelling)"
    assert problems(tmp_path, data) == [(path, msg)]


def test_only_stage_checks_its_own_stage_alone_even_when_the_top_level_is_wrong(tmp_path: Path) -> None:
    # A record process checks the source (the first stage decides the processes) and itself: it does not import
    # the infer stage's modules to check their options, whatever else is wrong.
    cfg = write(tmp_path, THREE_PLACES.replace("kind: recrod", "kind: record, options: {out_dri: x}"))
    code = (
        "import sys\nfrom pipeline.config import ConfigError, load_config\n"
        f"try:\n    load_config({str(cfg)!r}, only_stage='record')\nexcept ConfigError as exc:\n    print(exc.problems)\n"
        "print(sorted(m for m in sys.modules if m.startswith('stages.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    got, mods = out.stdout.splitlines()
    assert got == repr([("batching", "unknown key (not part of the schema; check its spelling)"), ("stages[2].options.out_dri", "unknown key (did you mean out_dir?)")])
    assert "stages.record" in mods and "stages.infer" not in mods, mods


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("mode: replay\nstreams: [\n", "", "line 3, column 1: not valid YAML"),
        ("- just\n- a list\n", "", "must be a YAML mapping"),
        ("mode: fast\nstreams: [{id: a, source: x.mp4}]\n", "mode", "'replay' or 'live'"),
        ("streams: [{id: 'bad id', source: x.mp4}]\n", "streams[0].id", "letters, digits"),
        ("streams: [{id: a, source: x.mp4, resize: [4, 4]}]\n", "streams[0].resize", "between 16 and 16384"),
        ("streams: [{id: a, source: x.mp4}]\nstages: [{name: decode, kind: decode, output: 'tcp://nohost'}]\n",
         "stages[0].output", "HOST:PORT"),
        ("streams: [{id: a, source: x.mp4}]\nstages: [{name: infer, kind: infer}]\n", "", "first stage must be a source"),
        ("streams: []\n", "streams", "at least 1 item"),
        ("max_streams: 2\nstreams: [{id: a, source: x.mp4}, {id: b, source: x.mp4}, {id: c, source: x.mp4}]\n", "",
         "3 streams, more than max_streams (2)"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, text: str, path: str, fragment: str) -> None:
    got = problems(tmp_path, text)
    assert any(p == path and fragment in m for p, m in got), got


def test_check_command_exit_status_and_message(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD)
    gone = run_vidpipe("check", str(good))  # its source, video.mp4 beside it, is not there yet
    assert gone.returncode == 2 and f"streams[0].source: no such file or folder: {tmp_path / 'video.mp4'}" in gone.stderr, gone.stderr
    (tmp_path / "video.mp4").write_bytes(b"")
    ok = run_vidpipe("check", str(good))
    assert ok.returncode == 0 and "ok (replay mode, 1 streams, stages: decode -> infer -> record)" in ok.stdout
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["stages"][1]["batch"] = {"max_size": "eight"}
    bad = run_vidpipe("check", str(write(tmp_path, data)))
    assert bad.returncode == 2
    assert "stages[1].batch.max_size: Input should be a valid integer" in bad.stderr
    missing = run_vidpipe("check", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "file not found" in missing.stderr


def test_run_refuses_a_bad_config_and_starts_nothing(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["stages"][2]["options"]["out_dri"] = "x"
    result = run_vidpipe("run", str(write(tmp_path, data)), timeout=30)
    assert result.returncode == 2
    assert "stages[2].options.out_dri: unknown key" in result.stderr
    assert "started" not in result.stderr
