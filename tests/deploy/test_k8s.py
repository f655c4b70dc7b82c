"""deploy/k8s: every manifest validated offline against the Kubernetes JSON schemas (bundled in
kubernetes-validate; the Prometheus Operator CRDs against the strict subsets in schemas/), the
kustomizations composed (kustomize_lite; the real kustomize too when it is installed), and the
wiring an operator relies on checked: GPUs, probes, selectors, per-pod DNS, autoscaling metric,
alerts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import K8S, ROOT

from tests.deploy.kustomize_lite import build, load_docs, referenced_files

# the oldest Kubernetes these manifests are meant for, and the newest the schemas know
VERSIONS = ("1.28", kubernetes_validate.utils.latest_version())
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
               ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.json"}
# Series that vLLM exports (docs/design/metrics.md); what the alerts and autoscaler may read
VLLM_SERIES = {
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds",
    "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:request_success_total",
}
OTHER_SERIES = {"up", "http_requests_total"}  # Prometheus' own; vLLM's HTTP instrumentator


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def _kustomizations() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def _validate(doc: dict) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        schema = json.loads((Path(__file__).parent / "schemas" / CRD_SCHEMAS[key]).read_text())
        jsonschema.Draft202012Validator(schema).validate(doc)
        return
    for version in VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def _all_built() -> list[dict]:
    return [d for k in _kustomizations() for d in build(k)]


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"{len(hits)} {kind} {name or ''}"
    return hits[0]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return build(K8S / "base")


@pytest.fixture(scope="module")
def sts(base) -> dict:
    return _one(base, "StatefulSet", "vllm")


@pytest.fixture(scope="module")
def container(sts) -> dict:
    return _one_container(sts)


def _one_container(sts: dict) -> dict:
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return c


# -- schemas ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates(path):
    docs = load_docs(path)
    assert docs
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize("directory", _kustomizations(), ids=lambda p: str(p.relative_to(K8S)))
def test_built_kustomization_validates(directory):
    docs = build(directory)
    assert docs
    for doc in docs:
        _validate(doc)
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), "the same object twice"


def test_validation_is_real():
    """Unknown fields, wrong types and CRD mistakes are caught, offline."""
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
               "metadata": {"labels": {"a": "b"}},
               "spec": {"containers": [{"name": "c", "image": "i", "startupPorbe": {}}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(dep)
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "r"},
            "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": "10 min"}]}]}}
    with pytest.raises(jsonschema.ValidationError):
        _validate(rule)


# -- composition -----------------------------------------------------------------------------------

def test_every_manifest_is_referenced_by_a_kustomization():
    referenced = set().union(*(referenced_files(k) for k in _kustomizations()))
    orphans = [p for p in K8S.rglob("*.yaml") if p.resolve() not in referenced]
    assert not orphans, f"not in any kustomization.yaml: {orphans}"


def _kustomize_cmd() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.skipif(_kustomize_cmd() is None, reason="no kustomize or kubectl here: kustomize_lite "
                                                     "composed the manifests instead")
@pytest.mark.parametrize("directory", _kustomizations(), ids=lambda p: str(p.relative_to(K8S)))
def test_real_kustomize_agrees(directory):
    out = subprocess.run([*_kustomize_cmd(), str(directory)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    real = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
            for d in yaml.safe_load_all(out) if d}
    lite = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
            for d in build(directory)}
    assert real == lite


def test_overlay_shape(overlays):
    (mz,) = [o for o in overlays if o.name == "multi-zone"]
    docs = build(mz)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"llm"}
    sts = _one(docs, "StatefulSet")
    assert "replicas" not in sts["spec"]  # the autoscaler owns it: re-applying never scales down
    zone = sts["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert zone["topologyKey"] == "topology.kubernetes.io/zone"
    assert zone["whenUnsatisfiable"] == "DoNotSchedule" and zone["minDomains"] == 3
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 6)
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "deepseek-selfhosted"
               for d in docs if d["kind"] != "Namespace")


# -- the workload ----------------------------------------------------------------------------------

def test_gpu_and_server_flags(container):
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    args = container["args"]
    assert "--reasoning-parser=deepseek_r1" in args
    assert "--enable-auto-tool-choice" in args and "--tool-call-parser=deepseek_v3" in args
    assert container["command"] == ["vllm", "serve"] and args[0] == "$(MODEL)"
    env = {e["name"]: e for e in container["env"]}
    for a in args:
        for ref in re.findall(r"\$\(([A-Z_]+)\)", a):
            assert ref in env, f"{a} refers to an undefined variable"


def test_api_key_comes_from_a_secret(container):
    env = {e["name"]: e for e in container["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "vllm-api-key"
    assert "value" not in env["VLLM_API_KEY"]
    assert not any("api-key" in a for a in container["args"])


def test_probes(container):
    ports = {p["name"] for p in container["ports"]}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        assert probe["httpGet"]["path"] == "/health", kind
        assert probe["httpGet"]["port"] in ports, kind
    start = container["startupProbe"]
    # weights load (and download, the first time) before liveness may kill the pod
    assert start["periodSeconds"] * start["failureThreshold"] >= 30 * 60


def test_weights_volume(sts, container):
    volumes = {v["name"] for v in sts["spec"]["template"]["spec"].get("volumes", [])}
    claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert set(mounts) <= volumes | claims
    assert "weights" in claims
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HOME"].startswith(mounts["weights"])  # the cache is on the volume
    assert mounts.get("dshm") == "/dev/shm"


def test_autoscaler_owns_the_replica_count(base, sts):
    assert "replicas" not in sts["spec"]
    assert _one(base, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2


def test_per_pod_addresses(base, sts):
    headless = _one(base, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_selectors_match_the_pods(base, sts, container):
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for p in container["ports"]}

    def selects(sel: dict) -> bool:
        return bool(sel) and all(pod_labels.get(k) == v for k, v in sel.items())

    assert selects(sts["spec"]["selector"]["matchLabels"])
    for svc in (d for d in base if d["kind"] == "Service"):
        assert selects(svc["spec"]["selector"]), svc["metadata"]["name"]
        assert all(p["targetPort"] in ports for p in svc["spec"]["ports"])
    assert selects(_one(base, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    pm = _one(base, "PodMonitor")
    assert selects(pm["spec"]["selector"]["matchLabels"])
    assert all(e["port"] in ports for e in pm["spec"]["podMetricsEndpoints"])
    for tsc in sts["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert selects(tsc["labelSelector"]["matchLabels"])
    assert {t["topologyKey"] for t in sts["spec"]["template"]["spec"]["topologySpreadConstraints"]} \
        >= {"topology.kubernetes.io/zone"}


def test_pdb_never_blocks_on_a_stuck_replica(base):
    pdb = _one(base, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


# -- autoscaling and alerts ------------------------------------------------------------------------

def _adapter_rules() -> list[dict]:
    cm = _one(build(K8S / "prometheus-adapter"), "ConfigMap")
    return yaml.safe_load(cm["data"]["config.yaml"])["rules"]


def test_hpa_scales_on_queue_depth_through_the_adapter(base, sts):
    hpa = _one(base, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == (sts["kind"], sts["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"  # queue depth per replica, not CPU
    name = metric["pods"]["metric"]["name"]
    published = {r["name"]["as"]: r for r in _adapter_rules()}
    assert name in published
    rule = published[name]
    assert re.fullmatch(rule["name"]["matches"], "vllm:num_requests_waiting")
    assert rule["seriesQuery"].startswith("vllm:num_requests_waiting{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 600


def _series(expr: str) -> set[str]:
    """Metric names an expression reads (names followed by a selector or a range)."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names} - {"by", "without"}


def _balanced(expr: str) -> bool:
    expr = re.sub(r'"[^"]*"', '""', expr)
    pairs, stack = {")": "(", "}": "{", "]": "["}, []
    for ch in expr:
        if ch in "({[":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


def _rules(base) -> list[dict]:
    return [r for g in _one(base, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]


def test_alert_rules(base):
    rules = {r["alert"]: r for r in _rules(base)}
    ttft = rules["VLLMTimeToFirstTokenP99High"]["expr"]
    assert "histogram_quantile(0.99" in ttft and "vllm:time_to_first_token_seconds_bucket" in ttft
    assert re.search(r">\s*0\.5\s*$", ttft.strip())  # 500 ms
    assert "5xx" in rules["VLLMHighErrorRate"]["expr"]
    assert "up{" in rules["VLLMReplicaDown"]["expr"]
    assert rules["VLLMNoReplicaServing"]["labels"]["severity"] == "critical"
    for name, r in rules.items():
        assert _balanced(r["expr"]), name
        assert r["annotations"]["summary"] and r["labels"]["severity"] in ("warning", "critical")


def test_alerts_read_real_series_of_the_monitored_pods(base):
    pm = _one(base, "PodMonitor")
    (label,) = pm["spec"]["podTargetLabels"]
    prom_label = re.sub(r"[^a-zA-Z0-9_]", "_", label)
    value = _one(base, "StatefulSet")["spec"]["template"]["metadata"]["labels"][label]
    exprs = [r["expr"] for r in _rules(base)] + [r["seriesQuery"] for r in _adapter_rules()]
    for expr in exprs:
        unknown = _series(expr) - VLLM_SERIES - OTHER_SERIES
        assert not unknown, f"{unknown} in {expr}"
        assert f'{prom_label}="{value}"' in expr, f"not scoped to the vLLM pods: {expr}"


def test_replica_down_waits_out_the_startup_probe(base, container):
    start = container["startupProbe"]
    budget = start["periodSeconds"] * start["failureThreshold"]
    down = next(r for r in _rules(base) if r["alert"] == "VLLMReplicaDown")
    assert int(down["for"].rstrip("m")) * 60 > budget


def test_doctor_checks_the_series_the_deployment_reads(base):
    """The doctor warns when a server does not export what these alerts and the autoscaler read."""
    from deepseek_doctor.server import _REFERENCE_SERIES

    read = set().union(*(_series(r["expr"]) for r in _rules(base)),
                       *(_series(r["seriesQuery"]) for r in _adapter_rules()))
    checked = {re.sub(r"_bucket$", "", s) for s in _REFERENCE_SERIES["vllm"]}
    assert read & VLLM_SERIES <= checked


def test_docs_endpoint_examples_match_the_manifests(overlays):
    (mz,) = [o for o in overlays if o.name == "multi-zone"]
    docs = build(mz)
    sts = _one(docs, "StatefulSet")
    port = _one_container(sts)["ports"][0]["containerPort"]
    addr = (f"http://{sts['metadata']['name']}-0.{sts['spec']['serviceName']}."
            f"{sts['metadata']['namespace']}.svc:{port}/v1")
    text = (ROOT / "docs" / "operators.md").read_text()
    assert addr in text
    assert addr in (mz / "kustomization.yaml").read_text()


def test_gateway_overlay_finds_the_replicas_it_balances(overlays):
    """SGLang Model Gateway in front of the fleet: it discovers exactly the vLLM pods (selector,
    namespace, port), may watch them (RBAC), is probed on its own routes, and the plugin's one
    URL in the overlay's comment is the gateway's Service."""
    (gw,) = [o for o in overlays if o.name == "gateway"]
    docs = build(gw)
    sts = _one(docs, "StatefulSet", "vllm")
    dep = _one(docs, "Deployment", "smg")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    args = dict(a.removeprefix("--").split("=", 1) for a in c["args"] if "=" in a)
    key, _, value = args["selector"].partition("=")
    assert sts["spec"]["template"]["metadata"]["labels"][key] == value
    assert args["service-discovery-namespace"] == sts["metadata"]["namespace"] == "llm"
    assert int(args["service-discovery-port"]) == _one_container(sts)["ports"][0]["containerPort"]
    assert "--service-discovery" in c["args"] and args["policy"] == "cache_aware"
    role, binding = _one(docs, "Role", "smg-discovery"), _one(docs, "RoleBinding", "smg-discovery")
    assert {"list", "watch"} <= set(role["rules"][0]["verbs"]) and role["rules"][0]["resources"] == ["pods"]
    assert binding["subjects"][0]["name"] == dep["spec"]["template"]["spec"]["serviceAccountName"]
    probes = (c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"])
    assert probes == ("/liveness", "/readiness")
    svc = _one(docs, "Service", "smg")
    meta = svc["metadata"]
    url = f"http://{meta['name']}.{meta['namespace']}.svc:{svc['spec']['ports'][0]['port']}/v1"
    assert url in (gw / "kustomization.yaml").read_text()
    assert int(args["port"]) == c["ports"][0]["containerPort"]
