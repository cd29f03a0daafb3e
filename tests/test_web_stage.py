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
from stages.web.recordings import finished
from stages.web.stage import WebOptions, WebStage
from tests.helpers.procs import free_ports, wait_for


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


def _segments(tmp_path: Path, t0: float) -> None:
    """10 s of a live stream at 10 fps through the record stage: five closed segments of 2 s."""
    from pipeline.analytics import Analytics
    from pipeline.protocol import Frame, StreamStart
    from stages.record import RecordOptions, RecordStage
    from tests.helpers.alerts import make_alert

    cfg = parse_config({"mode": "live", "streams": [{"id": "cam", "source": "rtsp://h/x"}],
                        "stages": [{"name": "decode", "kind": "decode"}, {"name": "record", "kind": "record"}]})  # fmt: skip
    # With the segments' JSONL beside their videos: the recordings are the videos only.
    ctx = StageContext("record", cfg, cfg.stages[1], RecordOptions(out_dir=str(tmp_path), segment_s=2.0), StageMetrics("record"), logging.getLogger("t"))
    rec = RecordStage(ctx)
    ctx.streams.begin(rec, "cam", StreamStart(1, live=True, fps=10.0))
    for seq in range(100):
        image = np.full((48, 64, 3), seq * 2, np.uint8)  # each frame its own grey: the clip's frames can be told apart
        frame = Frame("cam", seq, seq / 10, t0 + seq / 10, 64, 48, image)
        if seq == 55:
            frame.analytics = Analytics(alerts=[make_alert(seq, stream="cam")])
        rec.process([frame])
    rec.close()


def test_a_moment_is_found_in_its_segment_and_clips_are_cut_without_re_encoding(tmp_path: Path) -> None:
    import av

    from stages.web.recordings import export_clip, list_recordings, moment

    t0 = 1_800_000_000.0
    _segments(tmp_path, t0)
    recs = list_recordings(tmp_path)
    assert len(recs) == 5 and all(r.complete and r.stream == "cam" and r.frames == 20 and r.path.suffix == ".mp4" for r in recs)
    assert len(list(tmp_path.glob("cam-*.jsonl"))) == 5
    assert [r.alerts for r in sorted(recs, key=lambda r: r.start_ts or 0)] == [0, 0, 1, 0, 0]
    found = moment(recs, "cam", t0 + 5.5)
    assert found is not None and found[0].start_ts == pytest.approx(t0 + 4.0) and found[1] == pytest.approx(1.5)
    assert moment(recs, "cam", t0 + 100) is None and moment(recs, "other", t0 + 5.5) is None
    # 3.0 s to 6.5 s: from the keyframe at 2.0 s (a segment's first frame; keyframes every 2 s) across two segments.
    n = export_clip(recs, "cam", t0 + 3.0, t0 + 6.5, tmp_path / "clip.mp4")
    with av.open(str(tmp_path / "clip.mp4")) as c:
        greys = [int(np.median(f.to_ndarray(format="gray"))) for f in c.decode(video=0)]
    assert n == len(greys) == 46  # frames 20..65
    assert abs(greys[0] - 40) <= 3 and abs(greys[-1] - 130) <= 3
    with pytest.raises(ValueError, match="no recorded segment"):
        export_clip(recs, "cam", t0 + 50, t0 + 60, tmp_path / "none.mp4")


def test_the_token_comes_from_the_environment_or_a_file_never_the_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"write the token's place, not the token"):
        WebOptions(token="hunter2")
    (tmp_path / "token").write_text("from-a-file\n")
    assert WebOptions(token=f"file:{tmp_path / 'token'}").token.get_secret_value() == "from-a-file"  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="WEB_TOKEN is not set"):
        WebOptions(token="${WEB_TOKEN}")


def test_https_with_the_configured_certificate_and_the_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import requests

    from tests.helpers.certs import make_pki

    pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("WEB_TOKEN", "tok")
    (port,) = free_ports(1)
    opts = WebOptions(port=port, token="${WEB_TOKEN}", tls_certfile=str(pki.server_cert), tls_keyfile=str(pki.server_key))
    cfg = parse_config(_config([{"name": "decode", "kind": "decode"}, {"name": "web", "kind": "web", "options": {"port": port}}], tmp_path), "test")
    stage = WebStage(StageContext("web", cfg, cfg.stage("web"), opts, StageMetrics("web"), logging.getLogger("web")))
    try:
        url = f"https://127.0.0.1:{port}/api/streams"
        wait_for(lambda: requests.get(f"https://127.0.0.1:{port}/healthz", verify=str(pki.ca), timeout=2).ok, 10, what="https")
        assert requests.get(url, verify=str(pki.ca), timeout=5).status_code == 401
        assert requests.get(url, verify=str(pki.ca), headers={"Authorization": "Bearer tok"}, timeout=5).json() == []
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, timeout=5)  # not trusted without the CA: it is the configured certificate that answers
    finally:
        stage.close()
