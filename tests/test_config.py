"""Config validation: every error names the field path and the problem; `check` exits 2 and nothing starts."""

from __future__ import annotations

from pathlib import Path

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
    assert problems(tmp_path, data) == [("streams[0].fpss", "unknown key (not part of the schema; check its spelling)")]


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
    assert "greater than or equal to 10" in got["stages[1].options.detector.motion.history"]
    assert got["stages[1].options.detector.motion.colour"].startswith("unknown key")


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
