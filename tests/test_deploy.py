"""Offline checks of deploy/: kustomize renders, schemas, checkov, the project's manifest rules,
Prometheus alert rules (promtool), the Grafana dashboard, the prometheus-adapter rules and the Dockerfiles.

The tools come from scripts/install-deploy-tools.sh (promtool from Debian, kubectl, and kubernetes-validate,
checkov, hadolint and PyYAML in .venv-deploy). Nothing is skipped: a missing tool fails with that hint.
The main venv has no PyYAML, so YAML is read through .venv-deploy's python (YAML -> JSON).
"""
from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DEPLOY_VENV_BIN = REPO / ".venv-deploy" / "bin"
OVERLAYS = ("dev-cpu", "prod-gpu")
INSTALL_HINT = "run `bash scripts/install-deploy-tools.sh` first"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SERVICES = {"gateway": (50051, 9101), "tts": (50052, 9102), "expression": (50053, 9103), "render": (50054, 9104)}

# The metric names the platform fixes, plus Triton's own (documented) metrics and Prometheus' `up`.
LIKENESS_METRICS = {
    "likeness_grpc_requests_total", "likeness_grpc_request_duration_seconds", "likeness_jobs_total",
    "likeness_job_queue_depth", "likeness_jobs_in_flight", "likeness_stage_duration_seconds",
    "likeness_frames_rendered_total", "likeness_webhook_attempts_total", "likeness_auth_failures_total",
    "likeness_streams_in_flight", "likeness_streams_total", "likeness_stream_first_media_seconds",
    "likeness_live_idle_seconds_total", "likeness_live_interrupts_total",
}
HISTOGRAMS = {"likeness_grpc_request_duration_seconds", "likeness_stage_duration_seconds",
              "likeness_stream_first_media_seconds"}
TRITON_METRICS = {
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count", "nv_inference_exec_count",
    "nv_inference_request_duration_us", "nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count", "nv_gpu_utilization", "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes", "nv_gpu_power_usage", "nv_gpu_power_limit", "nv_energy_consumption",
    "nv_cpu_utilization", "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes",
}
ALLOWED_METRICS = (LIKENESS_METRICS | TRITON_METRICS | {"up"}
                   | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")})
# The env contract of the platform facts.
ENV_CONTRACT = {
    "LIKENESS_GATEWAY_ADDR", "LIKENESS_TTS_ADDR", "LIKENESS_EXPRESSION_ADDR", "LIKENESS_RENDER_ADDR",
    "LIKENESS_TRITON_URL", "LIKENESS_S3_ENDPOINT", "LIKENESS_S3_BUCKET", "LIKENESS_S3_SECURE",
    "LIKENESS_MAX_CONCURRENT_JOBS", "LIKENESS_MAX_QUEUED_JOBS", "OTEL_EXPORTER_OTLP_ENDPOINT",
}


# --- tools -------------------------------------------------------------------------------------------

def _tool(name: str) -> str:
    for candidate in (DEPLOY_VENV_BIN / name, shutil.which(name)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"{name} not found: {INSTALL_HINT}")


def _kubectl() -> str:
    """Same order as scripts/check_manifests.py: LIKENESS_KUBECTL, PATH, then .venv-deploy/bin."""
    for candidate in (os.environ.get("LIKENESS_KUBECTL"), shutil.which("kubectl"), str(DEPLOY_VENV_BIN / "kubectl")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"kubectl not found: {INSTALL_HINT}")


def _run(cmd: list[str], *, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _deploy_python() -> str:
    python = DEPLOY_VENV_BIN / "python"
    if not python.exists():
        pytest.fail(f".venv-deploy missing: {INSTALL_HINT}")
    return str(python)


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    """All non-empty documents of a YAML file, read by PyYAML in .venv-deploy."""
    code = ("import json, sys, yaml; "
            "json.dump([d for d in yaml.safe_load_all(open(sys.argv[1], encoding='utf-8')) if d], sys.stdout)")
    result = _run([_deploy_python(), "-c", code, str(path)])
    assert result.returncode == 0, f"cannot parse {path}: {result.stderr}"
    return json.loads(result.stdout)


def _as_yaml_stream(docs: list[dict[str, Any]]) -> str:
    """JSON documents are YAML: a stream every YAML tool here reads, written without PyYAML."""
    return "\n---\n".join(json.dumps(d) for d in docs) + "\n"


def _promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail(f"promtool not found: {INSTALL_HINT}")
    return found


# --- module fixtures: render once, lint once ---------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rendered")
    files = {}
    for overlay in OVERLAYS:
        result = _run([_kubectl(), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)])
        assert result.returncode == 0, f"kubectl kustomize {overlay}: {result.stderr}"
        files[overlay] = out / f"{overlay}.yaml"
        files[overlay].write_text(result.stdout, encoding="utf-8")
    return files


@pytest.fixture(scope="module")
def docs(rendered: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    return {overlay: _yaml_docs(path) for overlay, path in rendered.items()}


@pytest.fixture(scope="module")
def checkov_reports(rendered: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """checkov once per overlay (it is the slow one), JSON report."""
    checkov = _tool("checkov")
    reports = {}
    for overlay, path in rendered.items():
        result = _run([checkov, "-f", str(path), "--config-file", str(DEPLOY / ".checkov.yaml"),
                       "--skip-download", "-o", "json"], timeout=300)
        assert result.stdout.strip(), f"checkov printed nothing for {overlay}: {result.stderr[-2000:]}"
        report = json.loads(result.stdout)
        reports[overlay] = report[0] if isinstance(report, list) else report
    return reports


def _objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_spec_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def _pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def _workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments and StatefulSets by name (the names do not repeat across the two kinds)."""
    deployments, statefulsets = _objects(docs, "Deployment"), _objects(docs, "StatefulSet")
    assert not set(deployments) & set(statefulsets)
    return {**deployments, **statefulsets}


# --- kustomize + schemas -----------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_platform(docs: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = docs[overlay]
    deployments = _objects(objects, "Deployment")
    assert set(deployments) == {*SERVICES, "triton", "minio"}
    own_database = {"postgres"} if overlay == "dev-cpu" else set()  # prod-gpu: a managed PostgreSQL
    assert set(_objects(objects, "StatefulSet")) == own_database
    assert set(_objects(objects, "Service")) == {*SERVICES, "triton", "minio", *own_database,
                                                 *(f"{n}-pods" for n in ("tts", "expression", "render", "triton"))}
    assert set(_objects(objects, "PodDisruptionBudget")) == set(_workloads(objects))
    assert set(_objects(objects, "ServiceMonitor")) == {*SERVICES, "triton"}
    assert _objects(objects, "Namespace").keys() == {"likeness"}
    namespaced = [d for d in objects if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"likeness"}
    for name, deployment in deployments.items():
        image = _pod_spec(deployment)["containers"][0]["image"]
        if name != "minio":
            assert image == f"ghcr.io/likeness/likeness-{name}:0.1.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_validate_strict(docs: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path) -> None:
    builtin = [d for d in docs[overlay] if d["kind"] not in CRD_KINDS]
    path = tmp_path / f"{overlay}-builtin.yaml"
    path.write_text(_as_yaml_stream(builtin), encoding="utf-8")
    result = _run([_tool("kubernetes-validate"), "--strict", "-k", "1.33.0", str(path)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ERROR" not in output and "WARN" not in output, output
    assert output.count(" passed for resource ") == len(builtin), output


_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_SM_ENDPOINT_KEYS = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                     "honorTimestamps", "relabelings", "metricRelabelings", "params", "tlsConfig",
                     "bearerTokenSecret", "authorization", "basicAuth", "followRedirects"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitoring_crds_follow_their_schema(docs: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """kubernetes-validate has no schema for the Prometheus Operator's CRDs: check their shape here."""
    crds = [d for d in docs[overlay] if d["kind"] in CRD_KINDS]
    assert crds
    for doc in crds:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
        spec = doc["spec"]
        if doc["kind"] == "ServiceMonitor":
            assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels",
                                 "podTargetLabels", "sampleLimit"}, spec.keys()
            assert spec["selector"].get("matchLabels") or spec["selector"].get("matchExpressions")
            assert set(spec.get("namespaceSelector", {})) <= {"matchNames", "any"}
            assert spec["endpoints"]
            for endpoint in spec["endpoints"]:
                assert set(endpoint) <= _SM_ENDPOINT_KEYS, endpoint
                assert isinstance(endpoint["port"], str) and endpoint["path"].startswith("/")
                assert _DURATION.match(endpoint["interval"]) and _DURATION.match(endpoint["scrapeTimeout"])
        else:
            assert set(spec) == {"groups"}
            names = [g["name"] for g in spec["groups"]]
            assert len(names) == len(set(names)), "duplicate rule group names"
            for group in spec["groups"]:
                assert set(group) <= {"name", "interval", "rules", "limit"}
                for rule in group["rules"]:
                    assert set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
                    assert ("alert" in rule) != ("record" in rule)
                    assert isinstance(rule["expr"], str) and rule["expr"].strip()
                    assert "for" not in rule or _DURATION.match(rule["for"])
                    for key in ("labels", "annotations"):
                        assert all(isinstance(v, str) for v in rule.get(key, {}).values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_finds_nothing(checkov_reports: dict[str, dict[str, Any]], overlay: str) -> None:
    report = checkov_reports[overlay]
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, "checkov findings:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0
    # It really looked: every Deployment's checks ran and passed.
    assert summary["passed"] > 100 and summary["resource_count"] >= 20, summary


# --- the project's rules -----------------------------------------------------------------------------

def _check_manifests(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return _run([_deploy_python(), str(REPO / "scripts" / "check_manifests.py"), *args], stdin=stdin)


def test_check_manifests_passes_on_every_overlay() -> None:
    result = _check_manifests()
    assert result.returncode == 0, result.stdout + result.stderr
    for overlay in OVERLAYS:
        assert re.search(rf"overlays/{overlay}: OK \(\d+ objects\)", result.stdout), result.stdout


def _mutated(objects: list[dict[str, Any]], kind: str, name: str, mutate) -> str:
    copy = json.loads(json.dumps(objects))
    target = next(d for d in copy if d["kind"] == kind and d["metadata"]["name"] == name)
    mutate(target)
    return _as_yaml_stream(copy)


def test_check_manifests_flags_a_mismatched_selector(docs: dict[str, list[dict[str, Any]]]) -> None:
    def typo(pdb: dict[str, Any]) -> None:
        pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "rendr"

    result = _check_manifests("-", stdin=_mutated(docs["prod-gpu"], "PodDisruptionBudget", "render", typo))
    assert result.returncode == 1, result.stdout + result.stderr
    expected = "PodDisruptionBudget/render: selector (app.kubernetes.io/name=rendr) matches no pod template"
    assert expected in result.stdout, result.stdout
    assert result.stdout.count("[") == 1, f"only the typo should be flagged:\n{result.stdout}"


def _drop_tolerations(d: dict[str, Any]) -> None:
    del _pod_spec(d)["tolerations"]


def _drop_node_selector(d: dict[str, Any]) -> None:
    del _pod_spec(d)["nodeSelector"]


def _node_port(d: dict[str, Any]) -> None:
    d["spec"]["type"] = "NodePort"


def _rename_metrics_port(d: dict[str, Any]) -> None:
    d["spec"]["endpoints"][0]["port"] = "http-metrics"


def _retarget(d: dict[str, Any]) -> None:
    d["spec"]["scaleTargetRef"]["name"] = "renderer"


def _drop_limits(d: dict[str, Any]) -> None:
    del _pod_spec(d)["containers"][0]["resources"]["limits"]


def _drop_liveness(d: dict[str, Any]) -> None:
    del _pod_spec(d)["containers"][0]["livenessProbe"]


def _peer_typo(d: dict[str, Any]) -> None:
    d["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] = "gatway"


def _bad_named_port(d: dict[str, Any]) -> None:
    d["spec"]["ingress"][0]["ports"][0]["port"] = "grcp"


def _egress_peer_typo(d: dict[str, Any]) -> None:
    peer = next(peer for rule in d["spec"]["egress"] for peer in rule["to"]
                if peer.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "tts"})
    peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] = "tss"


@pytest.mark.parametrize(("kind", "name", "mutate", "expected"), [
    ("Deployment", "triton", _drop_tolerations, "Deployment/triton: requests a GPU but tolerates no NoSchedule taint"),
    ("Deployment", "triton", _drop_node_selector, "Deployment/triton: requests a GPU (triton) but has no nodeSelector"),
    ("Service", "tts", _node_port, "Service/tts: is exposed outside the cluster (NodePort)"),
    ("ServiceMonitor", "render", _rename_metrics_port, "ServiceMonitor/render: endpoint port 'http-metrics' is not"),
    ("HorizontalPodAutoscaler", "render", _retarget, "scaleTargetRef Deployment/renderer does not exist"),
    ("Deployment", "tts", _drop_limits, "Deployment/tts: container tts has no limits for cpu, memory"),
    ("Deployment", "expression", _drop_liveness, "Deployment/expression: container expression has no livenessProbe"),
    ("NetworkPolicy", "backends-from-gateway", _peer_typo, "ingress peer podSelector (app.kubernetes.io/name=gatway)"),
    ("NetworkPolicy", "gateway-public", _bad_named_port, "named port 'grcp' does not exist on Deployment/gateway"),
    ("NetworkPolicy", "gateway-egress", _egress_peer_typo, "egress peer podSelector (app.kubernetes.io/name=tss)"),
])
def test_check_manifests_flags_each_rule(docs: dict[str, list[dict[str, Any]]], kind: str, name: str,
                                         mutate, expected: str) -> None:
    result = _check_manifests("-", stdin=_mutated(docs["prod-gpu"], kind, name, mutate))
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout, result.stdout


def _governing_typo(d: dict[str, Any]) -> None:
    d["spec"]["serviceName"] = "postgre"


def _not_headless(d: dict[str, Any]) -> None:
    del d["spec"]["clusterIP"]


@pytest.mark.parametrize(("kind", "name", "mutate", "expected"), [
    ("StatefulSet", "postgres", _governing_typo, "StatefulSet/postgres: serviceName 'postgre' is not a Service"),
    ("Service", "postgres", _not_headless, "StatefulSet/postgres: serviceName 'postgres' is not headless"),
])
def test_check_manifests_flags_a_bad_statefulset_service(docs: dict[str, list[dict[str, Any]]], kind: str, name: str,
                                                         mutate, expected: str) -> None:
    result = _check_manifests("-", stdin=_mutated(docs["dev-cpu"], kind, name, mutate))
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout and result.stdout.count("[") == 1, result.stdout


# --- what each overlay must be -----------------------------------------------------------------------

def _gpus(deployment: dict[str, Any]) -> int:
    return sum(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
               for c in _pod_spec(deployment)["containers"])


def test_dev_cpu_is_small_and_gpu_free(docs: dict[str, list[dict[str, Any]]]) -> None:
    objects = docs["dev-cpu"]
    deployments = _objects(objects, "Deployment")
    # One replica each, but two gateways: the job database is shared, as in production.
    assert {n: d["spec"]["replicas"] for n, d in deployments.items()} == {**dict.fromkeys(deployments, 1), "gateway": 2}
    assert all(_gpus(d) == 0 and "nodeSelector" not in _pod_spec(d) for d in deployments.values())
    assert not _objects(objects, "HorizontalPodAutoscaler") and not _objects(objects, "PersistentVolumeClaim")
    data = next(v for v in _pod_spec(deployments["minio"])["volumes"] if v["name"] == "data")
    assert "emptyDir" in data and "persistentVolumeClaim" not in data
    assert "--allow-gpu-metrics=false" in _pod_spec(deployments["triton"])["containers"][0]["args"]
    total_cpu_requests = sum(_millicores(c["resources"]["requests"]["cpu"]) * w["spec"]["replicas"]
                             for w in _workloads(objects).values() for c in _pod_spec(w)["containers"])
    assert total_cpu_requests <= 2000, f"dev-cpu requests {total_cpu_requests}m CPU"
    assert _objects(objects, "Service")["gateway"]["spec"]["type"] == "ClusterIP"


def _millicores(value: str | int) -> int:
    text = str(value)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def _hpa_metric(metric: dict[str, Any]) -> tuple[str, str]:
    if metric["type"] == "Resource":
        return "Resource", metric["resource"]["name"]
    return metric["type"], metric[metric["type"].lower()]["metric"]["name"]


def test_prod_gpu_places_triton_on_gpus_and_scales(docs: dict[str, list[dict[str, Any]]]) -> None:
    objects = docs["prod-gpu"]
    deployments = _objects(objects, "Deployment")
    triton = _pod_spec(deployments["triton"])
    resources = triton["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert triton["nodeSelector"] == {"pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in triton["tolerations"]
    assert [n for n, d in deployments.items() if _gpus(d)] == ["triton"]
    for name in ("gateway", "tts", "expression"):
        assert _pod_spec(deployments[name])["nodeSelector"] == {"pool": "cpu"}
    assert _pod_spec(deployments["render"])["nodeSelector"] == {"pool": "cpu-heavy"}
    for name in (*SERVICES, "triton"):
        assert deployments[name]["spec"]["replicas"] >= 2, name
    hpas = _objects(objects, "HorizontalPodAutoscaler")
    assert set(hpas) == {*SERVICES, "triton"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["minReplicas"] <= deployments[name]["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    metrics = {n: {_hpa_metric(m) for m in h["spec"]["metrics"]} for n, h in hpas.items()}
    # The queue depth is global (every gateway pod reports the same count): External, divided by the replicas.
    queue = [m for m in hpas["gateway"]["spec"]["metrics"] if _hpa_metric(m)[1] == "likeness_job_queue_depth"]
    assert [m["type"] for m in queue] == ["External"], queue
    assert queue[0]["external"]["target"]["type"] == "AverageValue", "a global value: per-replica share of it"
    assert ("Pods", "triton_avg_queue_duration_us") in metrics["triton"]
    for name in ("tts", "expression", "render"):
        assert ("Resource", "cpu") in metrics[name]
    services = _objects(objects, "Service")
    assert [n for n, s in services.items() if s["spec"]["type"] != "ClusterIP"] == ["gateway"]
    assert services["gateway"]["spec"]["type"] == "LoadBalancer"


# --- the job database (PostgreSQL) and the gateway replicas that share it -------------------------------

def _env_var(container: dict[str, Any], name: str) -> dict[str, Any]:
    found = [e for e in container.get("env", []) if e["name"] == name]
    assert len(found) == 1, f"{container['name']}: {len(found)} definitions of {name}"
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_reads_its_database_url_from_a_secret(docs: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = docs[overlay]
    gateway = _pod_spec(_objects(objects, "Deployment")["gateway"])["containers"][0]
    url = _env_var(gateway, "LIKENESS_DATABASE_URL")
    assert "value" not in url, "a DSN carries a password: never a literal in the manifest"
    assert url["valueFrom"] == {"secretKeyRef": {"name": "likeness-database", "key": "url"}}, url
    assert int(_env_var(gateway, "LIKENESS_DATABASE_POOL_SIZE")["value"]) >= 1
    assert "LIKENESS_DATABASE_URL" not in _objects(objects, "ConfigMap")["likeness-config"]["data"]
    # Only the gateway holds the database's credentials.
    for name, workload in _workloads(objects).items():
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for c in _pod_spec(workload)["containers"]
                for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        refs |= {s["secretRef"]["name"] for c in _pod_spec(workload)["containers"]
                 for s in c.get("envFrom", []) if "secretRef" in s}
        if "likeness-database" in refs:
            assert name in {"gateway", "postgres"}, f"{name} reads likeness-database"


def test_dev_cpu_runs_postgres_on_a_volume_claim(docs: dict[str, list[dict[str, Any]]]) -> None:
    objects = docs["dev-cpu"]
    postgres = _objects(objects, "StatefulSet")["postgres"]
    spec, pod = postgres["spec"], _pod_spec(postgres)
    assert spec["replicas"] == 1, "one writer; more replicas would be separate, empty databases"
    container = pod["containers"][0]
    assert re.fullmatch(r"postgres:1[6-9](\.\d+)?-\w+", container["image"]), container["image"]  # pinned, not latest
    # Data on the claim template's volume, in a subdirectory initdb owns; the other writable paths are emptyDirs.
    claims = {c["metadata"]["name"]: c for c in spec["volumeClaimTemplates"]}
    assert set(claims) == {"data"}
    assert claims["data"]["spec"]["accessModes"] == ["ReadWriteOnce"] and claims["data"]["spec"]["resources"]["requests"]["storage"]
    assert claims["data"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "likeness"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/var/lib/postgresql/data"] == "data" and "data" not in {v["name"] for v in pod.get("volumes", [])}
    assert _env_var(container, "PGDATA")["value"].startswith("/var/lib/postgresql/data/")
    assert {"/var/run/postgresql", "/tmp"} <= set(mounts), "the root filesystem is read-only"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready", probe
    # The headless governing Service, and the gateway's DSN naming it, its port and the same password.
    service = _objects(objects, "Service")["postgres"]["spec"]
    assert spec["serviceName"] == "postgres" and service["clusterIP"] == "None"
    assert _matches({"matchLabels": service["selector"]}, _pod_spec_labels(postgres))
    secret = _objects(objects, "Secret")["likeness-database"]["stringData"]
    assert _env_var(container, "POSTGRES_PASSWORD")["valueFrom"]["secretKeyRef"] == {"name": "likeness-database",
                                                                                      "key": "password"}
    dsn = re.fullmatch(r"postgresql://(\w+):([^@]+)@([\w.-]+):(\d+)/(\w+)", secret["url"])
    assert dsn, secret["url"]
    user, password, host, port, database = dsn.groups()
    assert (user, database) == (_env_var(container, "POSTGRES_USER")["value"], _env_var(container, "POSTGRES_DB")["value"])
    assert password == secret["password"] and host == "postgres"
    assert int(port) in {p["port"] for p in service["ports"] if p["name"] == "postgres"}
    assert {p["containerPort"] for p in container["ports"] if p["name"] == "postgres"} == {5432}


def test_prod_gpu_runs_no_postgres(docs: dict[str, list[dict[str, Any]]]) -> None:
    objects = docs["prod-gpu"]
    assert not _objects(objects, "StatefulSet")
    images = [c["image"] for w in _workloads(objects).values() for c in _pod_spec(w)["containers"]]
    assert not [i for i in images if "postgres" in i], images
    assert "postgres" not in _objects(objects, "Service")
    # The managed database's Secret is created beforehand: rendering it would overwrite it on every apply.
    assert "likeness-database" not in _objects(objects, "Secret")


INTERNAL_TOKEN = {"secretKeyRef": {"name": "likeness-internal", "key": "token"}}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_backends_answer_only_the_gateway_s_internal_token(docs: dict[str, list[dict[str, Any]]],
                                                               overlay: str) -> None:
    """prod-gpu: the gateway (which sends it) and tts, expression and render (which demand it) read
    LIKENESS_INTERNAL_TOKEN from one Secret key, so reaching a backend's port is not enough to use it. The
    Secret is created beforehand, never rendered (an apply would overwrite it). dev-cpu leaves it unset."""
    objects = docs[overlay]
    assert "LIKENESS_INTERNAL_TOKEN" not in _objects(objects, "ConfigMap")["likeness-config"]["data"]
    assert "likeness-internal" not in _objects(objects, "Secret")
    readers: dict[str, dict[str, Any]] = {}
    for name, workload in _workloads(objects).items():
        for container in _pod_spec(workload)["containers"]:
            if any(e["name"] == "LIKENESS_INTERNAL_TOKEN" for e in container.get("env", [])):
                readers[f"{name}/{container['name']}"] = _env_var(container, "LIKENESS_INTERNAL_TOKEN")
            refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
                    if "secretKeyRef" in e.get("valueFrom", {})}
            refs |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
            if "likeness-internal" in refs:
                assert name in SERVICES, f"{name} reads likeness-internal"
    if overlay == "dev-cpu":
        assert not readers, readers
        return
    assert set(readers) == {f"{n}/{n}" for n in SERVICES}, readers
    for where, variable in readers.items():
        assert "value" not in variable, f"{where}: the token is a secret, never a literal in the manifest"
        # Not optional: without the Secret the backends would run unguarded (and the gateway without it fail).
        assert variable["valueFrom"] == INTERNAL_TOKEN, (where, variable)
    assert len({json.dumps(v, sort_keys=True) for v in readers.values()}) == 1, "one token, one Secret key"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_runs_replicated_under_a_disruption_budget(docs: dict[str, list[dict[str, Any]]],
                                                               overlay: str) -> None:
    objects = docs[overlay]
    gateway = _objects(objects, "Deployment")["gateway"]
    replicas = gateway["spec"]["replicas"]
    assert replicas >= 2
    budgets = [b for b in _objects(objects, "PodDisruptionBudget").values()
               if _matches(b["spec"]["selector"], _pod_spec_labels(gateway))]
    assert len(budgets) == 1, budgets
    budget = budgets[0]["spec"]
    # A drain keeps at least one gateway serving.
    assert budget.get("minAvailable", 0) >= 1 or budget.get("maxUnavailable") == 1, budget
    hpa = _objects(objects, "HorizontalPodAutoscaler").get("gateway")
    if hpa:
        assert hpa["spec"]["minReplicas"] >= 2


def test_only_the_gateway_reaches_postgres(docs: dict[str, list[dict[str, Any]]]) -> None:
    objects = docs["dev-cpu"]
    policies = list(_objects(objects, "NetworkPolicy").values())
    workloads = _workloads(objects)
    postgres = workloads["postgres"]
    sources = {n: ("likeness", _pod_spec_labels(w)) for n, w in workloads.items()}
    sources |= {"outsider": ("default", {"app.kubernetes.io/name": "curl"}),
                "gateway-elsewhere": ("default", _pod_spec_labels(workloads["gateway"])),
                "prometheus": ("monitoring", {"app.kubernetes.io/name": "prometheus"})}
    reached = {n for n, source in sources.items() if _allowed(policies, postgres, source, "postgres")}
    assert reached == {"gateway"}, reached
    # And through no other port either: every rule admitting anyone to postgres names the port.
    for policy in policies:
        if _matches(policy["spec"]["podSelector"], _pod_spec_labels(postgres)):
            for rule in policy["spec"].get("ingress", []):
                assert [p["port"] for p in rule["ports"]] == ["postgres"], policy["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_security_and_config(docs: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = docs[overlay]
    deployments = _objects(objects, "Deployment")
    for name, (grpc_port, metrics_port) in SERVICES.items():
        container = _pod_spec(deployments[name])["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        probe_port = int(env.get("LIKENESS_HEALTH_PORT") or grpc_port)  # a TLS gateway: plaintext health port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": probe_port}, (name, probe)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": grpc_port, "metrics": metrics_port,
                         **({"health": probe_port} if probe_port != grpc_port else {})}, name
        assert env["LIKENESS_GRPC_PORT"] == str(grpc_port) and env["LIKENESS_METRICS_PORT"] == str(metrics_port)
    triton = _pod_spec(deployments["triton"])["containers"][0]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = triton["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "models need minutes to load"
    for name, deployment in _workloads(objects).items():
        pod = _pod_spec(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsUser"] >= 10000 and pod["serviceAccountName"] == name, name
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
    config = _objects(objects, "ConfigMap")["likeness-config"]["data"]
    assert ENV_CONTRACT <= set(config), ENV_CONTRACT - set(config)
    # The services bind loopback unless told: in a pod they must listen on the pod's address (probes, peers).
    assert config["LIKENESS_BIND_HOST"] == "0.0.0.0"
    services = _objects(objects, "Service")
    for key in ("LIKENESS_GATEWAY_ADDR", "LIKENESS_TTS_ADDR", "LIKENESS_EXPRESSION_ADDR", "LIKENESS_RENDER_ADDR",
                "LIKENESS_TRITON_URL", "LIKENESS_S3_ENDPOINT"):
        host, port = config[key].removeprefix("dns:///").rsplit(":", 1)
        ports = {p["port"]: p["name"] for p in services[host]["spec"]["ports"]}
        assert ports.get(int(port)) in {"grpc", "s3"}, f"{key}={config[key]} is not a gRPC/S3 port of Service {host}"
    # Internal gRPC calls balance per call over every pod: round-robin channels (dns:///) on headless
    # Services, whose DNS names the pods themselves, so the port must be the container's own.
    for key in ("LIKENESS_TTS_ADDR", "LIKENESS_EXPRESSION_ADDR", "LIKENESS_RENDER_ADDR", "LIKENESS_TRITON_URL"):
        assert config[key].startswith("dns:///"), f"{key}={config[key]}: one connection pins one pod"
        host, port = config[key].removeprefix("dns:///").rsplit(":", 1)
        service = services[host]["spec"]
        assert service.get("clusterIP") == "None", f"{host} is not headless"
        pods = [d for d in deployments.values()
                if _matches({"matchLabels": service["selector"]}, _pod_spec_labels(d))]
        assert len(pods) == 1, f"{host} selects {len(pods)} Deployments"
        grpc_ports = {p["containerPort"] for c in _pod_spec(pods[0])["containers"] for p in c.get("ports", [])
                      if p["name"] == "grpc"}
        assert grpc_ports == {int(port)}, f"{key}: pods listen on {grpc_ports}"
    secret = _objects(objects, "Secret")["likeness-s3"]
    assert set(secret["stringData"]) == {"LIKENESS_S3_ACCESS_KEY", "LIKENESS_S3_SECRET_KEY"}


# --- NetworkPolicy reachability ----------------------------------------------------------------------

def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _allowed(policies: list[dict[str, Any]], dest: dict[str, Any], source: tuple[str, dict[str, str]],
             port_name: str) -> bool:
    """Can `source` (namespace, pod labels) reach `dest`'s named port under these ingress policies?"""
    dest_labels = dest["spec"]["template"]["metadata"]["labels"]
    source_ns, source_labels = source
    selecting = [p for p in policies if _matches(p["spec"]["podSelector"], dest_labels)]
    assert selecting, "every pod must be selected (default deny)"
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port_name not in ports:
                continue
            peers = rule.get("from")
            if peers is None:
                return True
            for peer in peers:
                ns_ok = (_matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": source_ns})
                         if "namespaceSelector" in peer else source_ns == "likeness")
                pod_ok = _matches(peer["podSelector"], source_labels) if "podSelector" in peer else True
                if ns_ok and pod_ok:
                    return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_pipeline(docs: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = docs[overlay]
    policies = list(_objects(objects, "NetworkPolicy").values())
    deployments = _workloads(objects)
    pods = {n: ("likeness", d["spec"]["template"]["metadata"]["labels"]) for n, d in deployments.items()}
    outsider = ("default", {"app.kubernetes.io/name": "curl"})
    prometheus = ("monitoring", {"app.kubernetes.io/name": "prometheus"})
    data_port = {**dict.fromkeys(SERVICES, "grpc"), "triton": "grpc", "minio": "s3", "postgres": "postgres"}
    expected_callers = {
        "gateway": {"outsider", *deployments},  # public: anyone
        "tts": {"gateway"}, "expression": {"gateway"}, "render": {"gateway"},
        "triton": {"tts", "expression", "render"},
        "minio": {"gateway", "tts", "expression", "render"},
        **({"postgres": {"gateway"}} if "postgres" in deployments else {}),
    }
    assert set(expected_callers) == set(deployments), "every workload's callers are spelled out"
    for dest, callers in expected_callers.items():
        sources = {**pods, "outsider": outsider, "prometheus": prometheus}
        reached = {s for s, src in sources.items() if _allowed(policies, deployments[dest], src, data_port[dest])}
        assert reached == callers | ({"prometheus"} if dest == "gateway" else set()), (dest, reached)
    for dest in (*SERVICES, "triton"):
        assert _allowed(policies, deployments[dest], prometheus, "metrics"), f"Prometheus cannot scrape {dest}"
        assert not _allowed(policies, deployments[dest], outsider, "metrics"), f"{dest} metrics are public"
        assert not _allowed(policies, deployments[dest], pods["gateway"], "metrics"), f"{dest} metrics open to gateway"


# --- the gateway's egress (webhook URLs come from tenants: no SSRF into the cluster) -------------------

# Where the gateway must never connect on tenants' behalf: private (RFC 1918), link-local (cloud metadata),
# CGNAT (RFC 6598) and loopback.
NON_PUBLIC = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10", "127.0.0.0/8")
KUBE_DNS = ("kube-system", {"k8s-app": "kube-dns"})
DATABASE_PORT = 5432

Destination = tuple[str, dict[str, str]] | str  # (namespace, pod labels), or an IP address outside the cluster


def _egress_policies(policies: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in policies
            if "Egress" in p["spec"].get("policyTypes", []) and _matches(p["spec"]["podSelector"], labels)]


def _peer_admits(peer: dict[str, Any], dest: Destination) -> bool:
    if isinstance(dest, str):
        if "ipBlock" not in peer:
            return False
        ip, block = ipaddress.ip_address(dest), peer["ipBlock"]
        return (ip in ipaddress.ip_network(block["cidr"])
                and not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])))
    if "ipBlock" in peer:
        return False  # ipBlocks and pod IPs: implementation-defined, nothing here counts on it
    namespace, labels = dest
    ns_ok = (_matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
             if "namespaceSelector" in peer else namespace == "likeness")
    return ns_ok and (_matches(peer["podSelector"], labels) if "podSelector" in peer else True)


def _egress_allowed(policies: list[dict[str, Any]], source_labels: dict[str, str], dest: Destination,
                    port: int, protocol: str = "TCP") -> bool:
    """May a pod with `source_labels` open `dest`:`port` under these egress policies (none: anything)?"""
    selecting = _egress_policies(policies, source_labels)
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("egress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports):
                continue
            peers = rule.get("to")
            if peers is None or any(_peer_admits(peer, dest) for peer in peers):
                return True
    return False


def _container_port(workload: dict[str, Any], name: str) -> int:
    found = {p["containerPort"] for c in _pod_spec(workload)["containers"] for p in c.get("ports", [])
             if p["name"] == name}
    assert len(found) == 1, (workload["metadata"]["name"], name, found)
    return found.pop()


def _gateway_egress(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    policies = list(_objects(objects, "NetworkPolicy").values())
    egress = _egress_policies(policies, _pod_spec_labels(_objects(objects, "Deployment")["gateway"]))
    assert [p["metadata"]["name"] for p in egress] == ["gateway-egress"], "the gateway's egress is one policy"
    return policies, egress[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_egress_opens_only_what_it_calls(docs: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = docs[overlay]
    policies, policy = _gateway_egress(objects)
    workloads = _workloads(objects)
    assert [n for n, w in workloads.items() if _matches(policy["spec"]["podSelector"], _pod_spec_labels(w))] \
        == ["gateway"], "gateway-egress selects the gateway only"
    assert policy["spec"]["policyTypes"] == ["Egress"]
    for rule in policy["spec"]["egress"]:
        # A rule without peers or ports opens every destination or every port of them.
        assert rule.get("to") and rule.get("ports"), rule
        assert all(isinstance(p["port"], int) for p in rule["ports"]), f"egress by port number: {rule}"
    allowed = functools.partial(_egress_allowed, policies, _pod_spec_labels(workloads["gateway"]))
    pods = {n: ("likeness", _pod_spec_labels(w)) for n, w in workloads.items()}

    assert allowed(KUBE_DNS, 53, "UDP") and allowed(KUBE_DNS, 53, "TCP"), "DNS"
    assert not allowed(("kube-system", {"k8s-app": "metrics-server"}), 443), "kube-system beyond DNS"
    # The pipeline: each backend on its own gRPC port, as its Deployment declares it; nothing else of theirs.
    for name in ("tts", "expression", "render"):
        grpc = _container_port(workloads[name], "grpc")
        assert grpc == SERVICES[name][0]
        assert allowed(pods[name], grpc), f"gateway -> {name}:{grpc}"
        assert not allowed(pods[name], _container_port(workloads[name], "metrics")), f"{name} metrics"
    assert not allowed(pods["tts"], SERVICES["expression"][0]), "each backend on its own port only"
    assert not allowed(pods["triton"], _container_port(workloads["triton"], "grpc")), "the gateway calls no Triton"
    assert allowed(pods["minio"], _container_port(workloads["minio"], "s3")), "gateway -> minio"
    # The job database: dev-cpu's own PostgreSQL pods, prod-gpu's managed one by address (a placeholder).
    rules = policy["spec"]["egress"]
    database_rules = [r for r in rules if any(p["port"] == DATABASE_PORT for p in r["ports"])]
    assert len(database_rules) == 1 and database_rules[0]["ports"] == [{"port": DATABASE_PORT, "protocol": "TCP"}]
    if "postgres" in workloads:
        assert _container_port(workloads["postgres"], "postgres") == DATABASE_PORT
        assert allowed(pods["postgres"], DATABASE_PORT), "gateway -> postgres"
        assert not allowed(pods["minio"], DATABASE_PORT)
    else:
        for peer in database_rules[0]["to"]:
            network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
            assert network.prefixlen >= 8, f"the database rule opens {network}"
            assert allowed(str(network.network_address), DATABASE_PORT)
    assert not allowed("8.8.8.8", DATABASE_PORT), "the database port is not open to the internet"
    # Webhooks: https to public addresses; nothing else, and nothing private on any port but the database's.
    assert allowed("93.184.216.34", 443) and allowed("8.8.8.8", 443)
    for port in (80, 8080, 8443, 22):
        assert not allowed("93.184.216.34", port), port
    for cidr in NON_PUBLIC:
        network = ipaddress.ip_network(cidr)
        for address in (network.network_address + 1, network.network_address + network.num_addresses // 2,
                        network.broadcast_address - 1):
            for port in (443, 80, 8080, 53, 9000, 50052):
                assert not allowed(str(address), port), f"{address}:{port}"
    assert not allowed("169.254.169.254", 80) and not allowed("169.254.169.254", 443), "cloud metadata"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_reaches_the_internet_on_https_only(docs: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    _, policy = _gateway_egress(docs[overlay])
    blocks = [(rule, peer["ipBlock"]) for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]
    internet = [(rule, block) for rule, block in blocks if block["cidr"] == "0.0.0.0/0"]
    assert len(internet) == 1, internet
    rule, block = internet[0]
    assert rule["ports"] == [{"port": 443, "protocol": "TCP"}] and len(rule["to"]) == 1, rule
    excepted = [ipaddress.ip_network(c) for c in block.get("except", [])]
    for cidr in NON_PUBLIC:
        assert any(ipaddress.ip_network(cidr).subnet_of(e) for e in excepted), f"{cidr} not excepted"
    # Any other ipBlock is the managed database's (prod-gpu), on its port only.
    for other_rule, other in blocks:
        if other is not block:
            assert other_rule["ports"] == [{"port": DATABASE_PORT, "protocol": "TCP"}], other_rule
            assert ipaddress.ip_network(other["cidr"]).prefixlen > 0, other


# --- Prometheus rules ----------------------------------------------------------------------------------

def test_promtool_checks_and_unit_tests_the_alerts() -> None:
    promtool = _promtool()
    check = _run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yaml")])
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    rules = int(re.search(r"SUCCESS: (\d+) rules found", check.stdout).group(1))
    assert rules >= 10
    unit = _run([promtool, "test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yaml")])
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    alerts = {r["alert"] for g in _yaml_docs(DEPLOY / "prometheus" / "alerts.yaml")[0]["groups"] for r in g["rules"]}
    tests = _yaml_docs(DEPLOY / "prometheus" / "alerts_test.yaml")[0]["tests"]
    fired = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests for case in t["alert_rule_test"] if not case["exp_alerts"]}
    assert alerts == fired, f"alerts without a firing test: {alerts - fired}"
    assert alerts == quiet, f"alerts without a must-not-fire test: {alerts - quiet}"


def test_prometheusrule_carries_the_alerts_file(docs: dict[str, list[dict[str, Any]]]) -> None:
    source = _yaml_docs(DEPLOY / "prometheus" / "alerts.yaml")[0]["groups"]
    for overlay in OVERLAYS:
        rule = _objects(docs[overlay], "PrometheusRule")["likeness-alerts"]
        assert rule["spec"]["groups"] == source, "run `python deploy/prometheus/sync_prometheusrule.py`"


# --- Grafana dashboard + prometheus-adapter ------------------------------------------------------------

_PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan", "Inf", "NaN",
}
_GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$namespace": "likeness",
                 "$service": "likeness.v1.GatewayService"}


def _substitute(expr: str) -> str:
    for name, value in sorted(_GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name[1:] + "}", value).replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (selectors, not functions, keywords, labels or numbers)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)                                  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)                                 # range / subquery windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)       # numbers
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        following = text[match.end():].lstrip()
        if following.startswith("(") or match.group() in _PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, service) (rate(likeness_grpc_request_duration_seconds_bucket'
            '{service=~"a|b", code!="OK"}[5m]))) / on (pod) group_left up > 1e-9 unless absent(nv_gpu_utilization)')
    assert promql_metric_names(expr) == {"likeness_grpc_request_duration_seconds_bucket", "up", "nv_gpu_utilization"}


def _dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "likeness-dashboard.json").read_text(encoding="utf-8"))


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _promtool_parses(exprs: list[str], tmp_path: Path) -> None:
    """Every expression parses (promtool check rules on recording rules built from them)."""
    rules = {"groups": [{"name": "parse", "rules": [{"record": f"parse:expr_{i}", "expr": e}
                                                    for i, e in enumerate(exprs)]}]}
    path = tmp_path / "parse-rules.json"
    path.write_text(json.dumps(rules), encoding="utf-8")
    result = _run([_promtool(), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout, result.stdout


def test_dashboard_queries_parse_and_use_only_platform_metrics(tmp_path: Path) -> None:
    dashboard = _dashboard()
    exprs = [_substitute(e) for e in _dashboard_exprs(dashboard)]
    assert len(exprs) >= 20
    used: set[str] = set()
    for expr in exprs:
        names = promql_metric_names(expr)
        assert names, expr
        assert names <= ALLOWED_METRICS, f"unknown metrics {names - ALLOWED_METRICS} in {expr}"
        used |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["definition"]).group(1)
            assert promql_metric_names(_substitute(inner)) <= ALLOWED_METRICS
    covered = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert LIKENESS_METRICS <= covered, f"dashboard misses {LIKENESS_METRICS - covered}"
    for triton in ("nv_inference_request_success", "nv_inference_queue_duration_us", "nv_gpu_utilization"):
        assert triton in used
    _promtool_parses(exprs, tmp_path)


def test_dashboard_layout_is_sound() -> None:
    dashboard = _dashboard()
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and all(p.get("title") for p in panels)
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]


def test_adapter_rules_serve_every_hpa_custom_metric(docs: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """Pods metrics come from the adapter's custom rules (custom.metrics.k8s.io), External ones from its
    external rules (external.metrics.k8s.io): each HPA metric has its rule, and every query parses."""
    rules = _yaml_docs(DEPLOY / "prometheus" / "adapter-rules.yaml")[0]["rules"]
    hpa_metrics = [m for h in _objects(docs["prod-gpu"], "HorizontalPodAutoscaler").values() for m in h["spec"]["metrics"]]
    queries = []
    for kind, section, matchers in (("Pods", "custom", 'namespace="likeness",pod=~"triton-.*"'),
                                    ("External", "external", 'namespace="likeness"')):
        served = {r["name"]["as"]: r for r in rules[section]}
        wanted = {m[kind.lower()]["metric"]["name"] for m in hpa_metrics if m["type"] == kind}
        assert wanted and wanted <= set(served), f"no prometheus-adapter {section} rule for {wanted - set(served)}"
        for rule in served.values():
            series = re.match(r"[a-zA-Z_:][\w:]*", rule["seriesQuery"]).group()
            assert series in ALLOWED_METRICS, series
            if section == "external":  # one value per namespace, not per pod: no pod label to map
                assert set(rule["resources"]["overrides"]) == {"namespace"}, rule
                assert "<<.GroupBy>>" not in rule["metricsQuery"], "the HPA sums every series an external metric returns"
            query = (rule["metricsQuery"].replace("<<.Series>>", series)
                     .replace("<<.LabelMatchers>>", matchers)
                     .replace("<<.GroupBy>>", "pod"))
            assert promql_metric_names(query) <= ALLOWED_METRICS, query
            queries.append(query)
    _promtool_parses(queries, tmp_path)


# --- Dockerfiles -------------------------------------------------------------------------------------------

def test_dockerfiles_lint_clean_and_match_the_deployments(docs: dict[str, list[dict[str, Any]]]) -> None:
    hadolint = _tool("hadolint")
    dockerfiles = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
    assert {p.stem for p in dockerfiles} == {"base", *SERVICES, "triton"}
    result = _run([hadolint, "--no-color", *map(str, dockerfiles)])
    assert result.returncode == 0, result.stdout + result.stderr
    deployments = _objects(docs["prod-gpu"], "Deployment")
    for name, (grpc_port, metrics_port) in SERVICES.items():
        text = (DEPLOY / "docker" / f"{name}.Dockerfile").read_text(encoding="utf-8")
        assert re.search(rf"^EXPOSE {grpc_port} {metrics_port}$", text, re.M), name
        assert f'"services.{name}.server"' in text
        container = _pod_spec(deployments[name])["containers"][0]
        assert "command" not in container and "args" not in container, "the image's CMD starts the service"
    triton = (DEPLOY / "docker" / "triton.Dockerfile").read_text(encoding="utf-8")
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in triton and "COPY model_repository /models" in triton
    assert "--model-repository=/models" in _pod_spec(deployments["triton"])["containers"][0]["args"]
    for path in dockerfiles:
        user = re.findall(r"^USER (\S+)", path.read_text(encoding="utf-8"), re.M)
        assert path.stem in SERVICES or user == ["10001:10001"], f"{path.name} must end as the non-root user"
    # The base image installs requirements.txt minus the dev/test-only packages it names: the gateway's
    # PostgreSQL driver and pool must survive that filter.
    base = (DEPLOY / "docker" / "base.Dockerfile").read_text(encoding="utf-8")
    excluded = re.search(r"grep -v -E '(\^\(.*?\)==)' requirements\.txt", base).group(1)
    requirements = [line for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
                    if line and not line.startswith("#")]
    installed = [line for line in requirements if not re.match(excluded, line)]
    for package in ("psycopg[binary]==", "psycopg-pool=="):
        assert any(line.startswith(package) for line in installed), f"the images do not install {package}"
    # the tests' identity instrument stays out: its model package holds dlib's non-commercial 68-point predictor
    for package in ("dlib-bin==", "face-recognition-models=="):
        assert not any(line.startswith(package) for line in installed), f"the images install {package}"
    assert "|dlib-bin|face-recognition-models)==" in triton, "the Triton image installs the identity instrument"
    assert "pip install --no-cache-dir -c constraints.txt -r /tmp/requirements-runtime.txt" in base
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", "tests"} <= set(ignored) and "services" not in ignored


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_public_gateway_checks_api_keys_and_serves_tls(docs: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """prod-gpu exposes the gateway through a LoadBalancer: there it needs keys and serves TLS, from
    mounted Secrets (components/auth-tls); dev-cpu stays open on the cluster network."""
    pod = _pod_spec(_objects(docs[overlay], "Deployment")["gateway"])
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    if overlay == "dev-cpu":
        assert "LIKENESS_API_KEYS_FILE" not in env and "LIKENESS_TLS_CERT_FILE" not in env
        return
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    for variable, secret in (("LIKENESS_API_KEYS_FILE", "likeness-api-keys"),
                             ("LIKENESS_TLS_CERT_FILE", "likeness-gateway-tls"),
                             ("LIKENESS_TLS_KEY_FILE", "likeness-gateway-tls")):
        folder = str(Path(env[variable]).parent)
        assert secrets[mounts[folder]] == secret, variable
    assert int(env["LIKENESS_HEALTH_PORT"]) != int(env["LIKENESS_GRPC_PORT"])
