"""The web stage's parts that need no browser: its options, the observer wiring, which recordings are playable, and
a port in use (tests/test_web.py drives the page in chromium)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.config import ConfigError, parse_config
from pipeline.metrics import StageMetrics
from pipeline.stage import StageContext
from stages.encode import open_video
from stages.web.app import finished
from stages.web.stage import WebOptions, WebStage


def _config(stages: list[dict[str, object]], tmp_path: Path) -> dict[str, object]:
    return {"mode": "live", "streams": [{"id": "cam", "source": "x.mp4"}], "stages": stages, "transport": {"run_dir": str(tmp_path / "run")}}


def test_an_observer_is_off_the_main_path_and_finds_its_publisher(tmp_path: Path) -> None:
    cfg = parse_config(_config([
        {"name": "decode", "kind": "decode"}, {"name": "infer", "kind": "infer", "publish": "auto"},
        {"name": "web", "kind": "web", "input_pattern": "sub"}, {"name": "record", "kind": "record"},
    ], tmp_path), "test")  # fmt: skip
    run = tmp_path / "run"
    assert cfg.output_endpoint("infer") == f">ipc://{run}/record.sock"  # not to the observer
    assert cfg.downstream("infer") == "record" and cfg.upstream("record") == ["infer"]
    assert cfg.publish_endpoint("infer") == f"@ipc://{run}/infer-publish.sock"
    assert cfg.input_endpoint("web") == f">ipc://{run}/infer-publish.sock"
    assert cfg.upstream("web") == ["infer"] and cfg.output_endpoint("web") is None and cfg.observers("infer") == ["web"]


def test_an_observer_without_a_publisher_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stages\[2\].input.*exactly one stage before it must set `publish` \(found: none\)"):
        parse_config(_config([
            {"name": "decode", "kind": "decode"}, {"name": "infer", "kind": "infer"}, {"name": "web", "kind": "web", "input_pattern": "sub"},
        ], tmp_path), "test")  # fmt: skip


def test_options_refuse_serving_beyond_loopback_without_a_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="reachable from other machines: set a token"):
        WebOptions(host="0.0.0.0")
    monkeypatch.setenv("WEB_TOKEN", "t")
    assert WebOptions(host="0.0.0.0", token="${WEB_TOKEN}").token.get_secret_value() == "t"  # type: ignore[union-attr, arg-type]
    assert WebOptions(host="::1").host == "::1" and WebOptions(host="localhost").token is None
    with pytest.raises(ValidationError, match="go together"):
        WebOptions(tls_certfile=str(tmp_path / "c.pem"))
    with pytest.raises(ValidationError, match="no such file"):
        WebOptions(tls_certfile=str(tmp_path / "c.pem"), tls_keyfile=str(tmp_path / "k.pem"))


def test_an_mp4_being_written_is_not_offered_for_playing(tmp_path: Path) -> None:
    path = tmp_path / "cam.mp4"
    out = open_video(str(path), "h264", 10.0, 64, 48)
    for i in range(40):
        out.write(np.full((48, 64, 3), i * 5, np.uint8))
    assert not finished(path)  # no index yet
    out.close()
    assert finished(path)
    (tmp_path / "cut.mp4").write_bytes(path.read_bytes()[:100])
    assert not finished(tmp_path / "cut.mp4")


def test_a_port_in_use_is_the_stages_error(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    stages = [{"name": "decode", "kind": "decode"}, {"name": "web", "kind": "web", "options": {"port": port}}]
    cfg = parse_config(_config(stages, tmp_path), "test")
    ctx = StageContext("web", cfg, cfg.stage("web"), WebOptions(port=port), StageMetrics("web"), logging.getLogger("web"))
    try:
        with pytest.raises(RuntimeError, match=f"web: cannot listen on 127.0.0.1:{port}"):
            WebStage(ctx)
    finally:
        taken.close()
