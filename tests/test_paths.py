"""A config's relative paths resolve one way (pipeline/paths.py): what a stage reads beside the config file, what it
writes where the pipeline runs (in a replay, under --out), whatever the working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from pipeline.cli import build_replay_config
from pipeline.config import load_config
from stages.alert.stage import AlertOptions
from stages.infer.options import InferOptions
from stages.record import RecordOptions
from stages.track.stage import TrackOptions
from stages.web.stage import WebOptions

CONFIG = {
    "mode": "live",
    "streams": [{"id": "gate", "source": "clips/gate.mp4"}, {"id": "cam", "source": "rtsp://127.0.0.1/cam"}],
    "stages": [
        {"name": "decode", "kind": "decode"},
        {"name": "infer", "kind": "infer", "options": {"detector": {"type": "custom", "path": "models/det.onnx", "layout": "yolo",
                                                                    "class_map": ["person"], "input_size": [320, 320]}}},  # fmt: skip
        {"name": "track", "kind": "track", "options": {"motion_weights": "models/motion.pt"}},
        {"name": "alert", "kind": "alert", "options": {"outbox": "alerts/outbox.db", "sinks": {
            "broker": {"type": "mqtt", "host": "127.0.0.1", "topic": "t", "tls": {"ca_file": "certs/ca.pem"}, "username": "vidpipe", "password": "file:secrets/mqtt.txt"},
            "file": {"type": "jsonl", "path": "alerts/alerts.jsonl"}}}},  # fmt: skip
        {"name": "record", "kind": "record", "options": {"out_dir": "recordings"}},
        {"name": "web", "kind": "web", "input_pattern": "sub", "options": {"tls_certfile": "certs/web.pem", "tls_keyfile": "KEY"}},
    ],
}


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "mqtt.txt").write_text("broker-pass\n")
    for name in ("models/det.onnx", "certs/ca.pem", "certs/web.pem"):  # checked to be there when the config loads
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(b"")
    (tmp_path / "web.key").write_bytes(b"")  # named absolutely
    data = yaml.safe_load(yaml.safe_dump(CONFIG))
    data["stages"][1]["publish"] = "auto"
    data["stages"][5]["options"]["tls_keyfile"] = str(tmp_path / "web.key")
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the config's folder nor the repository
    return folder


def test_inputs_are_found_beside_the_config_and_outputs_where_it_runs(setup: Path) -> None:
    cfg = load_config(Path(os.path.relpath(setup / "pipeline.yaml")))  # named relative to the working directory too
    opts = {st.name: st.options for st in cfg.stages}
    assert cfg.streams[0].source == str(setup / "clips" / "gate.mp4")
    assert cfg.streams[1].source == "rtsp://127.0.0.1/cam"
    infer = InferOptions.model_validate(opts["infer"])
    assert infer.detector.path == str(setup / "models" / "det.onnx")  # type: ignore[union-attr]
    assert TrackOptions.model_validate(opts["track"]).motion_weights == str(setup / "models" / "motion.pt")
    alert = AlertOptions.model_validate(opts["alert"])
    broker = alert.sinks["broker"]
    assert broker.tls.ca_file == str(setup / "certs" / "ca.pem")  # type: ignore[union-attr]
    assert broker.password.get_secret_value() == "broker-pass"  # type: ignore[union-attr]  # file:secrets/mqtt.txt beside the config
    web = WebOptions.model_validate(opts["web"])
    assert web.tls_certfile == str(setup / "certs" / "web.pem") and web.tls_keyfile == str(setup.parent / "web.key")  # absolute: as written
    # What the stages write stays relative: to the working directory of `vidpipe run`.
    assert alert.outbox == "alerts/outbox.db" and alert.sinks["file"].path == "alerts/alerts.jsonl"  # type: ignore[union-attr]
    assert RecordOptions.model_validate(opts["record"]).out_dir == "recordings"


def test_a_replay_writes_under_out_and_its_config_copy_names_the_inputs_absolutely(setup: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    data, shareable = build_replay_config([], str(setup / "pipeline.yaml"), str(out), str(tmp_path / "run"))
    stages = {st["name"]: st["options"] for st in data["stages"] if "options" in st}
    assert stages["record"]["out_dir"] == str(out)
    assert stages["alert"]["outbox"] == str(out / "alerts" / "outbox.db")
    assert stages["alert"]["sinks"]["file"]["path"] == str(out / "alerts" / "alerts.jsonl")
    # The copy beside the results: inputs absolute (it runs from anywhere), outputs as written (under the next --out).
    written = {st["name"]: st.get("options", {}) for st in shareable["stages"]}
    assert written["infer"]["detector"]["path"] == str(setup / "models" / "det.onnx")
    assert written["alert"]["sinks"]["broker"]["password"] == f"file:{setup / 'secrets' / 'mqtt.txt'}"
    assert written["alert"]["outbox"] == "alerts/outbox.db" and written["record"]["out_dir"] == "recordings"
    assert shareable["streams"][0]["source"] == str(setup / "clips" / "gate.mp4")


def test_check_names_the_path_it_looked_for(setup: Path) -> None:
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(setup / "pipeline.yaml", sources=True)
    assert ("streams[0].source", f"no such file or folder: {setup / 'clips' / 'gate.mp4'}") in err.value.problems
