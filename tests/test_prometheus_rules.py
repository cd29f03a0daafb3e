"""deploy/prometheus/ stays valid: promtool checks the rules and the scrape config and runs the rules' unit
tests, and the alerts use only metrics the pipeline exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.helpers.tools import exposed_names, run_tool

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"

# Metric names as Prometheus stores them (counters with `_total`, histograms as _bucket/_sum/_count).
# Mirrors pipeline/metrics.py (StageMetrics, every stage process):
STAGE_METRICS = {
    "vidpipe_frames_in_total",
    "vidpipe_frames_out_total",
    "vidpipe_frames_shed_total",
    "vidpipe_frames_failed_total",
    "vidpipe_messages_rejected_total",
    "vidpipe_processing_seconds_bucket",
    "vidpipe_processing_seconds_sum",
    "vidpipe_processing_seconds_count",
    "vidpipe_frame_age_seconds_bucket",
    "vidpipe_frame_age_seconds_sum",
    "vidpipe_frame_age_seconds_count",
    "vidpipe_batch_size_bucket",
    "vidpipe_batch_size_sum",
    "vidpipe_batch_size_count",
    "vidpipe_stream_up",
    "vidpipe_decode_errors_total",
    "vidpipe_streams_ended_total",
    "vidpipe_stream_last_seen_timestamp_seconds",
    "vidpipe_heartbeat_timestamp_seconds",
}
# ... pipeline/launcher.py (the launcher, on metrics.port_base):
LAUNCHER_METRICS = {
    "vidpipe_stage_restarts_total",
    "vidpipe_stage_up",
}
# ... and the alert stage:
ALERT_STAGE_METRICS = {
    "vidpipe_outbox_depth",
    "vidpipe_alert_delivery_failures_total",
    "vidpipe_alert_deliveries_total",
    "vidpipe_alert_rejected_total",
    "vidpipe_alerts_total",
    "vidpipe_alert_latency_seconds_bucket",
    "vidpipe_alert_latency_seconds_sum",
    "vidpipe_alert_latency_seconds_count",
}
KNOWN_METRICS = STAGE_METRICS | LAUNCHER_METRICS | ALERT_STAGE_METRICS
# Histogram family names: fine to name in an annotation's prose, never in an expression (no such series).
HISTOGRAMS = {m[: -len("_bucket")] for m in KNOWN_METRICS if m.endswith("_bucket")}

METRIC_NAME = re.compile(r"\bvidpipe_[a-z0-9_]+")

REQUIRED_ALERTS = {
    "VidpipeStreamDown",
    "VidpipeTargetDown",
    "VidpipeFpsCollapse",
    "VidpipeFramesShed",
    "VidpipeFrameAgeHigh",
    "VidpipeOutboxGrowing",
    "VidpipeAlertDeliveryFailing",
    "VidpipeStageRestarting",
}


def test_promtool_check_rules(promtool: str) -> None:
    run_tool([promtool, "check", "rules", str(PROM / "alerts.yml")], ROOT)


def test_promtool_test_rules(promtool: str) -> None:
    # rule_files in the test file are relative to the test file.
    run_tool([promtool, "test", "rules", str(PROM / "alerts_test.yml")], ROOT)


def test_promtool_check_config(promtool: str) -> None:
    # The config names its rule files relative to itself; run beside it anyway.
    out = run_tool([promtool, "check", "config", "prometheus.yml"], PROM)
    assert "alerts.yml" in out


def _rules() -> list[dict]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alerts_use_only_exported_metrics() -> None:
    used_in_exprs: set[str] = set()
    for rule in _rules():
        names = set(METRIC_NAME.findall(rule["expr"]))
        unknown = names - KNOWN_METRICS
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown metric(s) {sorted(unknown)}"
        used_in_exprs |= names
        for key, text in rule.get("annotations", {}).items():
            unknown = set(METRIC_NAME.findall(text)) - KNOWN_METRICS - HISTOGRAMS
            assert not unknown, f"{rule['alert']} annotation {key}: unknown metric(s) {sorted(unknown)}"
    # The regex found what the rules are about (guards against a pattern that matches nothing).
    assert {"vidpipe_stream_up", "vidpipe_frames_out_total", "vidpipe_stage_restarts_total", "vidpipe_outbox_depth"} <= used_in_exprs


def test_required_alerts_are_complete() -> None:
    alerts = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    assert REQUIRED_ALERTS <= set(alerts), f"missing: {sorted(REQUIRED_ALERTS - set(alerts))}"
    for name, rule in alerts.items():
        assert "for" in rule, name
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, name
        assert {"summary", "description", "runbook"} <= set(rule.get("annotations", {})), name
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if not case["exp_alerts"]}
    assert set(alerts) <= fired, f"no firing case for {sorted(set(alerts) - fired)}"
    assert set(alerts) <= quiet, f"no quiet case for {sorted(set(alerts) - quiet)}"


def test_metric_list_matches_the_code() -> None:
    """The hard-coded names above are still what StageMetrics and the launcher export (a rename there
    must be followed here and in alerts.yml). The alert stage's names are checked against alerts.yml only."""
    from pipeline.config import PipelineConfig
    from pipeline.launcher import Launcher
    from pipeline.metrics import StageMetrics

    stage = exposed_names(StageMetrics("decode").registry)
    assert STAGE_METRICS <= stage, f"not exported by StageMetrics: {sorted(STAGE_METRICS - stage)}"
    cfg = PipelineConfig.model_validate(
        {"streams": [{"id": "cam", "source": "x.mp4"}], "stages": [{"name": "decode", "kind": "decode"}], "metrics": {"port_base": None}}
    )
    launcher = exposed_names(Launcher(cfg, str(ROOT / "x.yaml"), env={}).registry)
    assert LAUNCHER_METRICS <= launcher, f"not exported by the launcher: {sorted(LAUNCHER_METRICS - launcher)}"


def test_scrape_targets_match_example_config() -> None:
    """prometheus.yml scrapes exactly the ports `vidpipe run deploy/config/example.yaml` serves."""
    from pipeline.config import load_config

    cfg = load_config(ROOT / "deploy" / "config" / "example.yaml")
    assert cfg.metrics.port_base is not None
    ports = {cfg.metrics.port_base} | {cfg.metrics_port(stage, stream) for stage, stream in cfg.process_names()}
    scrape = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"127.0.0.1:{p}" for p in ports}
    assert scrape["rule_files"] == ["alerts.yml"]
