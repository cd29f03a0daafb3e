"""Secrets in configs: references resolved at load, errors that name the field, nothing secret written or named."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from pipeline.cli import _stream_ids, _write_private
from pipeline.config import ConfigError, parse_config, redacted
from pipeline.secrets import redact_url, resolve_secret, url_credentials


def _config(sinks: dict, source: str = "rtsp://cam.local/ch1") -> dict:
    return {
        "streams": [{"id": "cam", "source": source}],
        "stages": [
            {"name": "decode", "kind": "decode"},
            {"name": "alert", "kind": "alert", "options": {"outbox": "/tmp/vidpipe-test-outbox.db", "sinks": sinks}},
        ],
    }


def test_references_resolve_from_the_environment_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "tok-123")
    secret_file = tmp_path / "mqtt_password"
    secret_file.write_text("pw-456\n")
    assert resolve_secret("Bearer ${HOOK_TOKEN}") == "Bearer tok-123"
    assert resolve_secret("$${HOOK_TOKEN}") == "${HOOK_TOKEN}"  # the escape is a literal
    assert resolve_secret(f"file:{secret_file}") == "pw-456"  # one trailing newline dropped
    data = _config({
        "hook": {"type": "webhook", "url": "http://127.0.0.1:9/x", "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"}},
        "broker": {"type": "mqtt", "host": "127.0.0.1", "username": "vp", "password": f"file:{secret_file}"},
    })
    cfg = parse_config(data)
    from stages.alert.stage import AlertOptions

    opts = AlertOptions.model_validate(cfg.stages[1].options)
    assert opts.sinks["hook"].headers["Authorization"].get_secret_value() == "Bearer tok-123"  # type: ignore[union-attr]
    assert opts.sinks["broker"].password.get_secret_value() == "pw-456"  # type: ignore[union-attr]
    assert "tok-123" not in repr(opts) and "pw-456" not in repr(opts)


def test_a_missing_variable_or_file_is_a_load_error_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    data = _config({"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x", "headers": {"Authorization": "Bearer ${NOT_SET_ANYWHERE}"}}})
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "stages[1].options.sinks.hook" in str(err.value) and "NOT_SET_ANYWHERE is not set" in str(err.value)
    data = _config({"broker": {"type": "mqtt", "host": "h", "username": "u", "password": f"file:{tmp_path / 'absent'}"}})
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "password" in str(err.value) and "cannot read the secret file" in str(err.value)
    # A camera's credentials are resolved by its source process alone: the other stages never need them.
    cfg = parse_config(_config({}, source="rtsp://cam:${NOT_SET_ANYWHERE}@h/"))
    with pytest.raises(ValueError, match="NOT_SET_ANYWHERE is not set"):
        cfg.streams[0].resolved_source()


def test_the_written_config_keeps_references_and_hides_literal_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "tok-123")
    data = _config(
        {
            "hook": {"type": "webhook", "url": "https://user:hookpass@hooks.example/T0/B0/slack-secret",
                     "headers": {"Authorization": "Bearer ${HOOK_TOKEN}", "X-Api-Key": "literal-key"}},
            "broker": {"type": "mqtt", "host": "127.0.0.1", "username": "vp", "password": "mqtt-literal"},
        },
        source="rtsp://admin:campass@10.0.0.5/live?token=qtoken",
    )
    before = copy.deepcopy(data)
    out = redacted(data, parse_config(data))
    assert data == before  # the document the stages run from is untouched
    text = repr(out)
    for secret in ("hookpass", "slack-secret", "literal-key", "mqtt-literal", "campass", "qtoken", "tok-123"):
        assert secret not in text, secret
    sinks = out["stages"][1]["options"]["sinks"]
    assert sinks["hook"]["headers"]["Authorization"] == "Bearer ${HOOK_TOKEN}"  # a reference says where, not what
    assert sinks["broker"]["username"] == "vp" and sinks["broker"]["host"] == "127.0.0.1"
    assert out["streams"][0]["source"] == "rtsp://admin:***@10.0.0.5/live?***"
    path = tmp_path / "config.yaml"
    path.write_text("old")
    os.chmod(path, 0o644)
    _write_private(path, out)
    assert path.stat().st_mode & 0o777 == 0o600


def test_urls_lose_credentials_in_names_and_logs() -> None:
    assert _stream_ids(["rtsp://admin:campass@10.0.0.5:554/live/ch1?token=q", "/videos/a.avi"]) == ["10.0.0.5_live_ch1", "a"]
    assert redact_url("rtsp://admin:pw@10.0.0.1/ch1") == "rtsp://admin:***@10.0.0.1/ch1"
    assert redact_url("https://h/x?access_token=t") == "https://h/x?***"
    assert redact_url("/not/a/url") == "/not/a/url"
    assert url_credentials("http://u:p%40ss@h:8080/x") == ("http://h:8080/x", ("u", "p@ss"))
