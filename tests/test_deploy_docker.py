"""deploy/docker/ and deploy/grafana/ stay consistent with the code: the Grafana dashboard queries only metrics
the pipeline registers, the compose file runs every stage of its pipeline config (and nothing else) and wires
it over TCP by service name, Prometheus scrapes exactly the stage services, the Dockerfiles install the way
CI does (tests/run.sh), and the health check they declare passes against a real stage.

Images are not built here (no Docker engine); `docker compose config`, promtool and amtool run when found.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.procs import free_ports, run_vidpipe, stop, vidpipe
from tests.helpers.tools import exposed_names, run_tool

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "deploy" / "docker"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "vidpipe.json"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_GPU = DOCKER / "compose.gpu.yaml"
PIPELINE = DOCKER / "pipeline.yaml"
PROM_CONFIG = DOCKER / "prometheus.yml"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
METRICS_PORT = 9100
CONFIG_IN_IMAGE = "/config/pipeline.yaml"
KEYS_IN_IMAGE = "/keys"  # transport.curve_keys of pipeline.yaml: compose's keys volume

METRIC_NAME = re.compile(r"\bvidpipe_[a-z0-9_]+")
# A metric as the code declares it: Counter(f"{PREFIX}_frames_in", ...), possibly over several lines.
DECLARED = re.compile(r"\b(Counter|Gauge|Histogram|Summary|Info)\(\s*f?[\"']\{PREFIX\}_([a-z0-9_]+)[\"']")


# -- what the code registers --------------------------------------------------------------------------------


def _series_names(kind: str, name: str) -> set[str]:
    """The names Prometheus stores for a metric (prometheus_client appends _total to counters)."""
    if kind == "Counter":
        return {f"{name}_total"}
    if kind == "Histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if kind == "Summary":
        return {name, f"{name}_sum", f"{name}_count"}
    if kind == "Info":  # the family, and its one series: vidpipe_build_info
        return {name, f"{name}_info"}
    return {name}


def _declared_metrics() -> tuple[set[str], set[str]]:
    """(series names, histogram family names) of every vidpipe_* metric declared in pipeline/ and stages/."""
    series: set[str] = set()
    families: set[str] = set()
    for path in sorted([*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "stages").rglob("*.py")]):
        for kind, suffix in DECLARED.findall(path.read_text()):
            series |= _series_names(kind, f"vidpipe_{suffix}")
            if kind == "Histogram":
                families.add(f"vidpipe_{suffix}")
    return series, families


@pytest.fixture(scope="module")
def known_metrics() -> tuple[set[str], set[str]]:
    series, families = _declared_metrics()
    # The source scan finds what the registries really hold (a guard against a pattern that misses some).
    from prometheus_client import CollectorRegistry

    from pipeline.config import PipelineConfig
    from pipeline.launcher import Launcher
    from pipeline.metrics import StageMetrics
    from stages.alert.delivery import DeliveryMetrics

    stage = StageMetrics("decode")
    registered = exposed_names(stage.registry)
    cfg = PipelineConfig.model_validate(
        {"streams": [{"id": "cam", "source": "x.mp4"}], "stages": [{"name": "decode", "kind": "decode"}], "metrics": {"port_base": None}}
    )
    registered |= exposed_names(Launcher(cfg, str(ROOT / "x.yaml"), env={}).registry)
    reg = CollectorRegistry()
    DeliveryMetrics(reg, "alert")
    registered |= exposed_names(reg)
    # process_* come from prometheus_client's ProcessCollector (CPU and memory of each stage), not from our source.
    registered = {n for n in registered if not n.startswith("process_")}
    assert registered <= series, f"registered but not found in the source scan: {sorted(registered - series)}"
    assert {"vidpipe_detections_total", "vidpipe_alerts_total", "vidpipe_tracks", "vidpipe_zone_occupancy"} <= series
    return series, families


# -- Grafana ---------------------------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    out = [(f"panel {p['title']!r}", t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable {var['name']}", q))
    return out


def test_dashboard_panels_have_targets() -> None:
    dash = _dashboard()
    assert dash["uid"] == "vidpipe" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        assert p.get("targets"), f"panel {p['title']!r} has no targets"
        for t in p["targets"]:
            assert t.get("expr", "").strip() and t.get("refId"), f"panel {p['title']!r}: a target without expr/refId"
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
    refs = [(p["title"], t["refId"]) for p in dash["panels"] for t in p["targets"]]
    assert len(refs) == len(set(refs)), "refIds must be unique within a panel"


def test_dashboard_variables() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("stream", "stage"):
        var = variables[name]
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert var["type"] == "query" and re.fullmatch(rf"label_values\(vidpipe_[a-z_]+, {name}\)", q), q
    # Every panel that filters by a variable names it in its expression ($stream / $stage).
    used = " ".join(e for _, e in _exprs(_dashboard()))
    assert '=~"$stream"' in used and '=~"$stage"' in used


def test_dashboard_uses_only_registered_metrics(known_metrics: tuple[set[str], set[str]]) -> None:
    series, families = known_metrics
    used: set[str] = set()
    for where, expr in _exprs(_dashboard()):
        names = set(METRIC_NAME.findall(expr))
        unknown = names - series
        assert not unknown, f"{where}: metric(s) not registered by the code: {sorted(unknown)}"
        assert not names & families, f"{where}: a histogram is queried by its family name, not _bucket/_sum/_count"
        used |= names
    required = {
        "vidpipe_frames_out_total", "vidpipe_stream_up", "vidpipe_frames_shed_total", "vidpipe_frame_age_seconds_bucket",
        "vidpipe_batch_size_bucket", "vidpipe_detections_total", "vidpipe_alerts_total", "vidpipe_outbox_depth",
        "vidpipe_stage_up", "vidpipe_stage_restarts_total",
    }
    assert required <= used, f"the dashboard lacks {sorted(required - used)}"


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """Each panel query is valid PromQL: promtool checks them as recording rules, with Grafana's variables filled in."""
    fill = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", '"$stream"': '".*"', '"$stage"': '".*"'}
    rules = []
    for i, (where, expr) in enumerate(_exprs(_dashboard())):
        if expr.startswith("label_values("):
            continue
        for k, v in fill.items():
            expr = expr.replace(k, v)
        assert "$" not in expr, f"{where}: unfilled variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_tool([promtool, "check", "rules", "dashboard_rules.yml"], tmp_path)


def test_grafana_provisioning_matches_compose() -> None:
    compose = _compose()
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", source["url"]).groups()  # type: ignore[union-attr]
    assert host in compose["services"] and f"{port}:{port}" in compose["services"][host]["ports"]
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "vidpipe.yml").read_text())
    (provider,) = prov["providers"]
    mounts = dict(_bind_mounts(compose["services"]["grafana"]))
    assert mounts[provider["options"]["path"]] == (GRAFANA / "dashboards").resolve()
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA / "provisioning").resolve()


# -- compose -----------------------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _bind_mounts(service: dict[str, Any], base: Path = DOCKER) -> list[tuple[str, Path]]:
    """(target, resolved host path) of a service's bind mounts (named volumes left out)."""
    out = []
    for v in service.get("volumes", []):
        src, target = v.split(":")[:2]
        if src.startswith((".", "/")):
            out.append((target, (base / src).resolve()))
    return out


def _stage_services(compose: dict[str, Any]) -> dict[str, list[str]]:
    return {
        name: [str(a) for a in svc["command"]]
        for name, svc in compose["services"].items()
        if isinstance(svc.get("command"), list) and svc["command"][:1] == ["stage"]
    }


def _option(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


def _keys_command() -> list[str]:
    """The command of compose's keys service, as it makes the keys for every stage of pipeline.yaml."""
    (cmd,) = [[str(a) for a in svc["command"]] for svc in _compose()["services"].values() if svc.get("command", [None])[0] == "keys"]
    return cmd


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The keys volume as compose's keys service fills it: its command, run here with this folder for /keys."""
    folder = tmp_path_factory.mktemp("keys") / "keys"
    cmd = [{KEYS_IN_IMAGE: str(folder), CONFIG_IN_IMAGE: str(PIPELINE)}.get(a, a) for a in _keys_command()]
    proc = run_vidpipe(*cmd)
    assert proc.returncode == 0, proc.stderr
    return folder


def _with_keys(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """pipeline.yaml's data with the keys folder of this machine in place of the container's /keys."""
    assert data["transport"]["curve_keys"] == KEYS_IN_IMAGE
    return {**data, "transport": {**data["transport"], "curve_keys": str(folder)}}


@pytest.fixture(scope="module")
def pipeline_cfg(keys_dir: Path):  # type: ignore[no-untyped-def]
    from pipeline.config import parse_config

    return parse_config(_with_keys(yaml.safe_load(PIPELINE.read_text()), keys_dir), str(PIPELINE))


def test_vidpipe_check_passes(keys_dir: Path, tmp_path: Path) -> None:
    """With the keys the keys service makes (the container's /keys is a folder here; a check opens no source)."""
    copy = tmp_path / "pipeline.yaml"
    data = _with_keys(yaml.safe_load(PIPELINE.read_text()), keys_dir)
    for s in data["streams"]:  # the copy is elsewhere: its relative sources from where the original is
        s["source"] = str((PIPELINE.parent / s["source"]).resolve())
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = run_vidpipe("check", str(copy))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok (live mode" in proc.stdout
    if not Path(KEYS_IN_IMAGE).exists():  # as in a container without the keys volume: refused, naming the folder
        proc = run_vidpipe("check", str(PIPELINE))
        assert proc.returncode == 2 and f"transport.curve_keys: {KEYS_IN_IMAGE} is not a folder" in proc.stderr


def test_compose_runs_every_stage_process_once(pipeline_cfg) -> None:  # type: ignore[no-untyped-def]
    from pipeline.cli import _pick_stage

    compose = _compose()
    services = _stage_services(compose)
    assert services, "no `vidpipe stage` services in compose.yaml"
    processes: dict[tuple[str, str | None], str] = {}
    for name, cmd in services.items():
        svc = compose["services"][name]
        assert _option(cmd, "--config") == CONFIG_IN_IMAGE, name
        assert _option(cmd, "--metrics-port") == str(METRICS_PORT), name
        stage = _pick_stage(pipeline_cfg, cmd[1])  # raises for a stage pipeline.yaml does not have
        stream = _option(cmd, "--stream")
        if pipeline_cfg.stage(stage).kind == "decode":
            assert stream in [s.id for s in pipeline_cfg.streams], f"{name}: decode needs --stream with a stream of pipeline.yaml"
        else:
            assert stream is None, f"{name}: only decode takes --stream"
        key = (stage, stream)
        assert key not in processes, f"{name} and {processes.get(key)} both run {key}"
        processes[key] = name
        # The config the command names is this folder's pipeline.yaml, mounted where the command looks.
        assert dict(_bind_mounts(svc)).get(CONFIG_IN_IMAGE) == PIPELINE.resolve(), f"{name}: pipeline.yaml not mounted at {CONFIG_IN_IMAGE}"
        assert svc["image"].startswith("vidpipe:"), name
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        assert f"127.0.0.1:{METRICS_PORT}/healthz" in " ".join(svc["healthcheck"]["test"]), name
    assert set(processes) == set(pipeline_cfg.process_names()), (
        f"stage processes without a service: {sorted(set(pipeline_cfg.process_names()) - set(processes), key=str)}"
    )


def test_compose_wiring_over_tcp(pipeline_cfg) -> None:  # type: ignore[no-untyped-def]
    """Each stage sends to a service that runs the next stage and binds the port it connects to."""
    from pipeline.transport import parse_endpoint

    services = _stage_services(_compose())
    service_of = {(c[1], _option(c, "--stream")): n for n, c in services.items()}
    assert pipeline_cfg.metrics.host == "0.0.0.0", "stages must listen on all interfaces for Prometheus to reach them"
    for i, st in enumerate(pipeline_cfg.stages[:-1]):
        nxt = pipeline_cfg.stages[i + 1]
        bind, addr = parse_endpoint(pipeline_cfg.output_endpoint(st.name), "push")
        assert not bind and addr.startswith("tcp://"), f"{st.name} output {addr}: expected a tcp connect"
        host, port = addr[len("tcp://"):].rsplit(":", 1)
        assert service_of.get((nxt.name, None)) == host, f"{st.name} sends to {host}, but {nxt.name} runs in {service_of.get((nxt.name, None))}"
        in_bind, in_addr = parse_endpoint(pipeline_cfg.input_endpoint(nxt.name), nxt.input_pattern)
        assert in_bind and in_addr in (f"tcp://*:{port}", f"tcp://0.0.0.0:{port}"), f"{nxt.name} input {in_addr} != port {port}"


def test_compose_paths_and_dependencies() -> None:
    compose = _compose()
    services = compose["services"]
    one_shot = {n for n, svc in services.items() if svc.get("restart") == "no"}
    for name, svc in services.items():
        for target, src in _bind_mounts(svc):
            assert src.exists(), f"{name}: {src} (mounted at {target}) does not exist"
        if name in one_shot:  # it ends: services wait for it to complete, not to be healthy
            assert svc.get("healthcheck") == {"disable": True}, f"{name}: a one-shot service with a health check"
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        deps = svc.get("depends_on", {})
        for dep, how in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith((".", "/")):
                assert src in compose.get("volumes", {}), f"{name}: named volume {src} not declared"
    published = {p.split(":")[0] for svc in services.values() for p in svc.get("ports", [])}
    assert {"3000", "9090", "9093", "1883"} <= published
    prom = dict(_bind_mounts(services["prometheus"]))
    assert prom["/etc/prometheus/prometheus.yml"] == PROM_CONFIG.resolve()
    assert prom["/etc/prometheus/alerts.yml"] == (ROOT / "deploy" / "prometheus" / "alerts.yml").resolve()
    gpu = yaml.safe_load(COMPOSE_GPU.read_text())
    assert set(gpu["services"]) <= set(_stage_services(compose)), "compose.gpu.yaml overrides a service compose.yaml lacks"


def _named_mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """target -> (named volume, read-only) of a service's named-volume mounts."""
    out = {}
    for v in service.get("volumes", []):
        src, target, *mode = v.split(":")
        if not src.startswith((".", "/")):
            out[target] = (src, mode == ["ro"])
    return out


def test_compose_keys_service_and_mounts() -> None:
    """One keys service makes the pairs of every stage into a volume (and keeps them on a later start: its
    --if-missing is tested in tests/test_curve.py); every stage mounts that volume read-only where
    transport.curve_keys says and starts once the keys service has ended with 0."""
    compose = _compose()
    services = compose["services"]
    (keys,) = [n for n, svc in services.items() if svc.get("command", [None])[0] == "keys"]
    assert _keys_command() == ["keys", KEYS_IN_IMAGE, "--if-missing", "--config", CONFIG_IN_IMAGE]
    assert yaml.safe_load(PIPELINE.read_text())["transport"]["curve_keys"] == KEYS_IN_IMAGE
    svc = services[keys]
    assert svc["image"] == "vidpipe:cpu" and svc.get("restart") == "no", f"{keys}: a one-shot of the image"
    assert dict(_bind_mounts(svc)).get(CONFIG_IN_IMAGE) == PIPELINE.resolve(), f"{keys}: makes keys for the stages of pipeline.yaml"
    volume, read_only = _named_mounts(svc)[KEYS_IN_IMAGE]
    assert not read_only and volume in compose["volumes"], f"{keys}: writes the named volume at {KEYS_IN_IMAGE}"
    for name in _stage_services(compose):
        stage = services[name]
        assert _named_mounts(stage).get(KEYS_IN_IMAGE) == (volume, True), f"{name}: {volume} not mounted read-only at {KEYS_IN_IMAGE}"
        assert stage["depends_on"].get(keys) == {"condition": "service_completed_successfully"}, f"{name}: starts before the keys exist"
    gpu = yaml.safe_load(COMPOSE_GPU.read_text())
    assert not any("volumes" in s for s in gpu["services"].values()), "compose.gpu.yaml would replace the keys mount"


def test_compose_keys_service_run_twice(tmp_path: Path, keys_dir: Path) -> None:
    """Its command at a second `compose up`: it succeeds, and keeps every key the stages already use."""
    before = {p.name: p.read_bytes() for p in keys_dir.iterdir()}
    assert sorted(before) == sorted(f"{s['name']}{ext}" for s in yaml.safe_load(PIPELINE.read_text())["stages"] for ext in (".key", ".key_secret"))
    cmd = [{KEYS_IN_IMAGE: str(keys_dir), CONFIG_IN_IMAGE: str(PIPELINE)}.get(a, a) for a in _keys_command()]
    again = run_vidpipe(*cmd)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in keys_dir.iterdir()} == before


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_keys_folder(dockerfile: Path) -> None:
    """The image has an empty /keys of its user (a new compose volume takes that owner, so the keys service can
    write it); the build checks the compose config with throwaway keys and removes them in the same layer."""
    runtime = _stages_of(dockerfile)[-1]
    user = [ln.split()[1] for ln in runtime if ln.startswith("USER ")][-1].split(":")[0]
    made = [ln for ln in runtime if ln.startswith("RUN ") and re.search(rf"\bmkdir -p [^&]*{KEYS_IN_IMAGE}\b", ln)]
    assert made and re.search(rf"\bchown (vidpipe|{user})(:\S+)? [^&]*{KEYS_IN_IMAGE}\b", made[0]), f"{dockerfile.name}: {KEYS_IN_IMAGE} of the user"
    assert re.search(rf"useradd [^&]*--uid {user}\b", made[0]), f"{dockerfile.name}: the chown is not to USER {user}"
    for ln in runtime:
        if ln.startswith("RUN ") and re.search(rf"vidpipe keys {KEYS_IN_IMAGE}\b", ln):
            assert re.search(rf"vidpipe check {CONFIG_IN_IMAGE} && rm -r {KEYS_IN_IMAGE}\b", ln), f"{dockerfile.name}: keys left in the image: {ln}"


def test_mqtt_sink_reaches_the_broker_service(pipeline_cfg) -> None:  # type: ignore[no-untyped-def]
    services = _compose()["services"]
    alert = next(s for s in pipeline_cfg.stages if s.kind == "alert")
    mqtt = [sink for sink in alert.options["sinks"].values() if sink["type"] == "mqtt"]
    assert mqtt, "the alert stage has no mqtt sink"
    for sink in mqtt:
        assert sink["host"] in services and "mosquitto" in services[sink["host"]]["image"]
    conf = (DOCKER / "mosquitto.conf").read_text()
    assert re.search(r"^listener 1883\b", conf, re.MULTILINE) and re.search(r"^allow_anonymous true", conf, re.MULTILINE)


def test_prometheus_scrapes_every_stage_service() -> None:
    compose = _compose()
    scrape = yaml.safe_load(PROM_CONFIG.read_text())
    assert scrape["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: {t for sc in job["static_configs"] for t in sc["targets"]} for job in scrape["scrape_configs"]}
    assert jobs["vidpipe"] == {f"{name}:{METRICS_PORT}" for name in _stage_services(compose)}
    for targets in jobs.values():
        for t in targets:
            host = t.rsplit(":", 1)[0]
            assert host == "localhost" or host in compose["services"], f"scrape target {t} names no service"
    (am,) = [t for a in scrape["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]]
    assert am.rsplit(":", 1)[0] in compose["services"]


def test_promtool_check_compose_config(promtool: str, tmp_path: Path) -> None:
    # In the container prometheus.yml and alerts.yml lie side by side in /etc/prometheus: the same here.
    shutil.copy(PROM_CONFIG, tmp_path / "prometheus.yml")
    shutil.copy(ROOT / "deploy" / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    out = run_tool([promtool, "check", "config", "prometheus.yml"], tmp_path)
    assert "alerts.yml" in out


def test_amtool_check_config() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool not found (Debian: apt-get install prometheus-alertmanager)")
    run_tool([amtool, "check-config", "alertmanager.yml"], DOCKER)


def test_docker_compose_config(tmp_path: Path) -> None:
    """`docker compose config` validates both files; without the compose plugin, docker-compose 1.29 (Debian's
    docker-compose) does, on a copy without the top-level `name` it predates, resolving paths from this folder."""
    v2 = shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0
    for extra in ([], ["-f", "compose.gpu.yaml"]):
        if v2:
            run_tool(["docker", "compose", "-f", "compose.yaml", *extra, "config", "--quiet"], DOCKER)
        elif shutil.which("docker-compose"):
            text = COMPOSE.read_text()
            assert re.search(r"^name: vidpipe$", text, re.MULTILINE)
            (tmp_path / "compose.yaml").write_text(re.sub(r"^name: .*\n", "", text, flags=re.MULTILINE))
            cmd = ["docker-compose", "--project-directory", str(DOCKER), "-f", str(tmp_path / "compose.yaml"), *extra, "config", "--quiet"]
            run_tool(cmd, DOCKER)
        else:
            pytest.skip("neither the docker compose plugin nor docker-compose is installed (the tests above check the structure)")


# -- Dockerfiles ---------------------------------------------------------------------------------------------------


def _stages_of(dockerfile: Path) -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped), split by FROM."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    stages: list[list[str]] = [[]]
    for ln in lines:
        if ln.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(ln)
    return stages


def _args(dockerfile: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=\"?([^\"\n]*)\"?$", dockerfile.read_text(), re.MULTILINE))


def _expand(line: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), line)


def _ci_torch_pin() -> str:
    m = re.search(r"pip install -q (torch==[0-9.]+)", (ROOT / "tests" / "run.sh").read_text())
    assert m, "tests/run.sh no longer pins torch"
    return m.group(1)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_like_ci(dockerfile: Path) -> None:
    args = _args(dockerfile)
    stages = _stages_of(dockerfile)
    assert len(stages) >= 3, "multi-stage: a builder and a runtime"
    builder, runtime = stages[1], stages[-1]
    assert re.search(r"^FROM \S+ AS builder$", builder[0]), builder[0]
    assert any(re.search(r"pip wheel .*--no-deps .* \.$", ln) for ln in builder), "the builder must build a wheel of the project"
    runs = [_expand(ln, args) for ln in runtime if ln.startswith("RUN ")]
    torch_at = [i for i, ln in enumerate(runs) if f'pip install "{_ci_torch_pin()}"' in ln]
    project_at = [i for i, ln in enumerate(runs) if re.search(r"pip install \"\$\(ls /wheels/vidpipe-\*\.whl\)", ln)]
    assert torch_at, f"{dockerfile.name}: no `pip install {_ci_torch_pin()}` (the pin of tests/run.sh)"
    assert project_at, f"{dockerfile.name}: the project's wheel is not installed"
    assert torch_at[0] < project_at[0], "torch must be installed first (a bare torch requirement pulls a CUDA build)"
    assert any("COPY --from=builder /wheels" in ln for ln in runtime)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runtime(dockerfile: Path) -> None:
    runtime = _stages_of(dockerfile)[-1]
    users = [ln.split()[1] for ln in runtime if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile.name}: no non-root USER"
    health = [ln for ln in runtime if ln.startswith("HEALTHCHECK ")]
    assert health and "/healthz" in health[-1] and "urllib.request" in health[-1], f"{dockerfile.name}: no /healthz HEALTHCHECK"
    assert f"'VIDPIPE_HEALTH_PORT', '{METRICS_PORT}'" in health[-1], "the health check's default port is compose's --metrics-port"
    assert any(re.search(rf"\bVIDPIPE_HEALTH_PORT={METRICS_PORT}\b", ln) for ln in runtime if ln.startswith("ENV "))
    assert 'ENTRYPOINT ["vidpipe"]' in runtime
    exposed = " ".join(ln for ln in runtime if ln.startswith("EXPOSE "))
    assert str(METRICS_PORT) in exposed.split()
    copies = {ln.split()[-1]: ln.split()[1:-1] for ln in runtime if ln.startswith("COPY ") and "--from" not in ln}
    assert copies.get(CONFIG_IN_IMAGE) == ["deploy/docker/pipeline.yaml"]
    assert copies.get("/sample_videos") == ["sample_videos"] and copies.get("/deploy/config") == ["deploy/config"]


def test_cuda_dockerfile_base_and_index() -> None:
    dockerfile = DOCKER / "Dockerfile.cuda"
    args = _args(dockerfile)
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-runtime-ubuntu\d+\.\d+", args["CUDA_IMAGE"])
    cuda_minor = re.match(r"nvidia/cuda:12\.(\d+)", args["CUDA_IMAGE"]).group(1)  # type: ignore[union-attr]
    assert args["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/cu12{cuda_minor}", "torch's CUDA build must match the base image"
    runtime = _stages_of(dockerfile)[-1]
    assert _expand(runtime[0], args).startswith("FROM nvidia/cuda:")
    assert any("python3.11" in ln for ln in runtime if ln.startswith("RUN "))


def test_image_paths_resolve(keys_dir: Path) -> None:
    """In the image the configs' relative sources (relative to the config's folder) land on the copied videos."""
    from pipeline.config import parse_config

    runtime = _stages_of(DOCKER / "Dockerfile")[-1]
    copies = {ln.split()[1]: ln.split()[-1] for ln in runtime if ln.startswith("COPY ") and "--from" not in ln}
    for repo_path, image_path in ((PIPELINE, CONFIG_IN_IMAGE), *((p, f"/deploy/config/{p.name}") for p in (ROOT / "deploy" / "config").glob("*.yaml"))):
        data = yaml.safe_load(repo_path.read_text())
        if (data.get("transport") or {}).get("curve_keys"):
            data = _with_keys(data, keys_dir)
        cfg = parse_config(data, str(repo_path))
        for s in cfg.streams:
            if not isinstance(s.source, str) or "://" in s.source or os.path.isabs(s.source):
                continue
            in_image = posixpath.normpath(posixpath.join(posixpath.dirname(image_path), s.source))
            rel = posixpath.relpath(in_image, copies["sample_videos"])
            assert not rel.startswith(".."), f"{repo_path.name}: {s.source} is {in_image} in the image, outside {copies['sample_videos']}"
            assert (ROOT / "sample_videos" / rel).is_file(), f"{repo_path.name}: {s.source} -> sample_videos/{rel} missing"


def test_dockerignore_keeps_what_the_images_copy() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    for must in (".git", "out/", "build/", "tests/"):
        assert must in ignore, f".dockerignore should exclude {must}"
    build = pytest.importorskip("docker.utils.build", reason="the docker Python package applies .dockerignore rules")
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    kept = set(build.exclude_paths(str(ROOT), patterns))
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    needed = [p for p in tracked if p.split("/")[0] in ("pipeline", "stages", "sample_videos") or p.startswith("deploy/config/")]
    needed += ["pyproject.toml", "README.md", "deploy/docker/pipeline.yaml"]
    missing = [p for p in needed if p not in kept]
    assert not missing, f".dockerignore drops files the images need: {missing[:10]}"
    assert not any(p.startswith(("tests/", ".git/", "build/")) for p in kept)


# -- the health check against a real stage ----------------------------------------------------------------------


def test_healthcheck_passes_against_a_stage(tmp_path: Path, keys_dir: Path) -> None:
    """The HEALTHCHECK of the Dockerfile and compose's healthcheck exit 0 against a running stage of
    pipeline.yaml (record: no model to load), and not while nothing serves the port."""
    data = yaml.safe_load(PIPELINE.read_text())
    in_port, metrics_port = free_ports(2)
    record = next(s for s in data["stages"] if s["name"] == "record")
    record["input"] = f"@tcp://127.0.0.1:{in_port}"  # the same stage, on a free port of this host
    record["options"]["out_dir"] = str(tmp_path / "out")  # relative paths are relative to the working directory
    cfg_path = tmp_path / "pipeline.yaml"
    cfg_path.write_text(yaml.safe_dump(_with_keys(data, keys_dir)))  # a keyed stage, as in compose

    docker_cmd = json.loads(re.search(r"HEALTHCHECK .*?CMD (\[.*\])", re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())).group(1))  # type: ignore[union-attr]
    compose_cmd = _compose()["services"]["record"]["healthcheck"]["test"][1:]
    assert docker_cmd[0] == compose_cmd[0] == "python"
    checks = [
        ([sys.executable, *docker_cmd[1:]], {"VIDPIPE_HEALTH_PORT": str(metrics_port)}),
        ([sys.executable, *(a.replace(f":{METRICS_PORT}/", f":{metrics_port}/") for a in compose_cmd[1:])], {}),
    ]

    def run_checks() -> list[int]:
        return [subprocess.run(cmd, check=False, env={**os.environ, **env}, capture_output=True, timeout=30).returncode for cmd, env in checks]

    assert run_checks() == [1, 1], "a health check passed with nothing serving"
    proc = vidpipe("stage", "record", "--config", str(cfg_path), "--metrics-port", str(metrics_port), log_path=tmp_path / "record.log")
    try:
        deadline = time.monotonic() + 60
        while (codes := run_checks()) != [0, 0]:
            assert proc.poll() is None, (tmp_path / "record.log").read_text()
            assert time.monotonic() < deadline, f"health checks {codes}:\n" + (tmp_path / "record.log").read_text()
            time.sleep(0.5)
    finally:
        stop(proc, signal.SIGTERM)
