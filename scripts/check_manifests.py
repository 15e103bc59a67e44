#!/usr/bin/env python3
"""The project's own rules over rendered Kubernetes manifests (what schema validation cannot see).

    .venv-deploy/bin/python scripts/check_manifests.py                 # every overlay under deploy/k8s/overlays
    .venv-deploy/bin/python scripts/check_manifests.py deploy/k8s/overlays/prod-gpu rendered.yaml -

A target is a kustomization directory (rendered with `kubectl kustomize`), a YAML file, or `-` (stdin).
Rules, per target:
  selector      every Service / PodDisruptionBudget / NetworkPolicy selector matches some workload's pod
                template labels (and each Deployment's selector matches its own template)
  resources     every container has cpu+memory requests and limits
  probes        every container of a long-running workload has a readiness and a liveness probe
  gpu           a container asking for a GPU runs on a GPU pool (nodeSelector or required node affinity)
                with a toleration for that pool's or the GPU's NoSchedule taint; GPU request == limit
  exposure      only the public Services (--public-service, default: gateway) are LoadBalancer/NodePort/
                externalIPs or an Ingress/Gateway-API route backend
  hpa           every HorizontalPodAutoscaler targets an existing workload; minReplicas <= maxReplicas
  monitor       every ServiceMonitor selects at least one Service, and each endpoint's port is a named
                port of every Service it selects
  netpol-port   every named port in a NetworkPolicy exists on the pods it selects
  statefulset   every StatefulSet's serviceName is a headless Service selecting its pods (its pods' DNS names)
  labels        every object and pod template carries app.kubernetes.io/name, app.kubernetes.io/component
                and app.kubernetes.io/part-of=likeness
Exit status: 0 clean, 1 rule violations (one line each), 2 usage or tool errors.
Needs PyYAML (installed in .venv-deploy by scripts/install-deploy-tools.sh). Env: LIKENESS_KUBECTL (path to
kubectl; default: kubectl on PATH, then .venv-deploy/bin/kubectl).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import yaml
except ImportError:  # the main venv has no PyYAML: this runs in .venv-deploy
    print("error: PyYAML missing: run scripts/install-deploy-tools.sh and use .venv-deploy/bin/python",
          file=sys.stderr)
    sys.exit(2)

REPO = Path(__file__).resolve().parent.parent
OVERLAYS = REPO / "deploy" / "k8s" / "overlays"

Doc = dict[str, Any]

# Kinds whose pods run until stopped: they need probes. Jobs run to completion and do not.
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
WORKLOAD_KINDS = LONG_RUNNING | {"Job", "CronJob"}
ROUTE_KINDS = {"HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute", "UDPRoute"}
PART_OF = "likeness"


@dataclass(frozen=True)
class Problem:
    kind: str
    name: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}: {self.message} [{self.rule}]"


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    namespace: str
    pod_labels: dict[str, str]
    pod_spec: dict[str, Any]


# --- loading -----------------------------------------------------------------------------------------

def find_kubectl() -> str:
    candidates = [os.environ.get("LIKENESS_KUBECTL"), shutil.which("kubectl"),
                  str(REPO / ".venv-deploy" / "bin" / "kubectl")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("kubectl not found: run scripts/install-deploy-tools.sh (or set LIKENESS_KUBECTL)")


def render_kustomization(directory: Path, kubectl: str | None = None) -> str:
    result = subprocess.run([kubectl or find_kubectl(), "kustomize", str(directory)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return result.stdout


def load_documents(text: str) -> list[Doc]:
    """The non-empty YAML documents of a multi-document stream (List kinds flattened)."""
    docs: list[Doc] = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        if not isinstance(doc, dict):
            raise ValueError(f"not a Kubernetes object: {doc!r:.80}")
        if doc.get("kind") == "List":
            docs.extend(item for item in doc.get("items") or [] if item)
        else:
            docs.append(doc)
    return docs


# --- label selectors ---------------------------------------------------------------------------------

def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: matchLabels AND matchExpressions; {} matches everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def equality_selector(match_labels: dict[str, str] | None) -> dict[str, Any] | None:
    """A Service's plain `selector: {k: v}` as a LabelSelector (None when the Service has none)."""
    return None if match_labels is None else {"matchLabels": match_labels}


def describe(selector: dict[str, Any] | None) -> str:
    if selector is None:
        return "<none>"
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    parts += [f"{e.get('key')} {e.get('operator')} {e.get('values', '')}"
              for e in selector.get("matchExpressions") or []]
    return ", ".join(parts) or "{} (everything)"


# --- the model -------------------------------------------------------------------------------------

def name_of(doc: Doc) -> str:
    return (doc.get("metadata") or {}).get("name", "<unnamed>")


def namespace_of(doc: Doc) -> str:
    return (doc.get("metadata") or {}).get("namespace") or "default"


def workloads(docs: Iterable[Doc]) -> list[Workload]:
    found = []
    for doc in docs:
        kind = doc.get("kind")
        if kind not in WORKLOAD_KINDS:
            continue
        spec = doc.get("spec") or {}
        if kind == "CronJob":
            spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
        template = spec.get("template") or {}
        labels = ((template.get("metadata") or {}).get("labels")) or {}
        found.append(Workload(kind, name_of(doc), namespace_of(doc), dict(labels), template.get("spec") or {}))
    return found


def containers(pod_spec: dict[str, Any], *, init: bool = True) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("containers") or []
    if init:
        yield from pod_spec.get("initContainers") or []


def selected(selector: dict[str, Any] | None, namespace: str, pods: list[Workload]) -> list[Workload]:
    return [w for w in pods if w.namespace == namespace and selector_matches(selector, w.pod_labels)]


# --- rules -------------------------------------------------------------------------------------------

def check_selectors(docs: list[Doc], pods: list[Workload]) -> Iterator[Problem]:
    for doc in docs:
        kind, name, ns, spec = doc.get("kind"), name_of(doc), namespace_of(doc), doc.get("spec") or {}
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}:
            own = next(w for w in pods if (w.kind, w.name, w.namespace) == (kind, name, ns))
            if not selector_matches(spec.get("selector"), own.pod_labels):
                yield Problem(kind, name, "selector",
                              f"selector ({describe(spec.get('selector'))}) does not match its own pod template labels")
        elif kind == "Service":
            if spec.get("type") == "ExternalName" or spec.get("selector") is None:
                continue  # manually managed endpoints: nothing to match
            sel = equality_selector(spec.get("selector"))
            if not selected(sel, ns, pods):
                yield Problem(kind, name, "selector", f"selector ({describe(sel)}) matches no pod template in {ns}")
        elif kind == "PodDisruptionBudget":
            sel = spec.get("selector")
            if sel is None:
                yield Problem(kind, name, "selector", "has no selector (a null selector protects nothing)")
            elif not selected(sel, ns, pods):
                yield Problem(kind, name, "selector", f"selector ({describe(sel)}) matches no pod template in {ns}")
        elif kind == "NetworkPolicy":
            sel = spec.get("podSelector")
            if not selected(sel, ns, pods):
                yield Problem(kind, name, "selector", f"podSelector ({describe(sel)}) matches no pod template in {ns}")
            for direction, peers_key in (("ingress", "from"), ("egress", "to")):
                for rule in spec.get(direction) or []:
                    for peer in rule.get(peers_key) or []:
                        # A peer with a namespaceSelector selects pods in other namespaces: not ours to see.
                        if "podSelector" in peer and "namespaceSelector" not in peer \
                                and not selected(peer["podSelector"], ns, pods):
                            yield Problem(kind, name, "selector",
                                          f"{direction} peer podSelector ({describe(peer['podSelector'])}) "
                                          f"matches no pod template in {ns}")


def check_containers(pods: list[Workload]) -> Iterator[Problem]:
    for w in pods:
        for c in containers(w.pod_spec):
            resources = c.get("resources") or {}
            for section in ("requests", "limits"):
                missing = [r for r in ("cpu", "memory") if r not in (resources.get(section) or {})]
                if missing:
                    yield Problem(w.kind, w.name, "resources",
                                  f"container {c.get('name')} has no {section} for {', '.join(missing)}")
        if w.kind in LONG_RUNNING:
            for c in containers(w.pod_spec, init=False):
                for probe in ("readinessProbe", "livenessProbe"):
                    if not c.get(probe):
                        yield Problem(w.kind, w.name, "probes", f"container {c.get('name')} has no {probe}")


def _gpu_resources(container: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    names = {k for k in (*requests, *limits) if k.endswith("/gpu")}
    return {n: (requests.get(n), limits.get(n)) for n in names}


def _gpu_placements(pod_spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, value) node-label pairs this pod is pinned to that name a GPU pool."""
    pairs = [(k, str(v)) for k, v in (pod_spec.get("nodeSelector") or {}).items()]
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or []:
        for expr in term.get("matchExpressions") or []:
            if expr.get("operator") == "In":
                pairs += [(expr.get("key", ""), str(v)) for v in expr.get("values") or []]
    return [(k, v) for k, v in pairs if "gpu" in k.lower() or "gpu" in v.lower()]


def _tolerates(toleration: dict[str, Any], key: str, value: str | None) -> bool:
    if toleration.get("effect") not in (None, "", "NoSchedule"):
        return False
    if toleration.get("operator") == "Exists":
        return toleration.get("key") in (None, "", key)  # an empty key with Exists tolerates everything
    return toleration.get("key") == key and (value is None or toleration.get("value") == value)


def check_gpu(pods: list[Workload]) -> Iterator[Problem]:
    for w in pods:
        gpu_containers = {c.get("name"): _gpu_resources(c) for c in containers(w.pod_spec)}
        gpu_containers = {n: r for n, r in gpu_containers.items() if r}
        if not gpu_containers:
            continue
        for cname, resources in gpu_containers.items():
            for resource, (request, limit) in resources.items():
                if request is not None and limit is not None and str(request) != str(limit):
                    yield Problem(w.kind, w.name, "gpu",
                                  f"container {cname} {resource} request {request} != limit {limit}")
        placements = _gpu_placements(w.pod_spec)
        if not placements:
            yield Problem(w.kind, w.name, "gpu", f"requests a GPU ({', '.join(gpu_containers)}) but has no "
                                                 "nodeSelector/required node affinity to a GPU pool")
        tolerations = w.pod_spec.get("tolerations") or []
        gpu_names = {r for resources in gpu_containers.values() for r in resources}
        taints = [(k, v) for k, v in placements] + [(r, None) for r in gpu_names]
        if not any(_tolerates(t, key, value) for t in tolerations for key, value in taints):
            wanted = ", ".join(f"{k}={v}" if v else k for k, v in taints)
            yield Problem(w.kind, w.name, "gpu",
                          f"requests a GPU but tolerates no NoSchedule taint of its pool ({wanted})")


def check_exposure(docs: list[Doc], public: set[str]) -> Iterator[Problem]:
    for doc in docs:
        kind, name, spec = doc.get("kind"), name_of(doc), doc.get("spec") or {}
        if kind == "Service":
            exposed = spec.get("type") in {"LoadBalancer", "NodePort"} or spec.get("externalIPs")
            if exposed and name not in public:
                how = spec.get("type") if spec.get("type") in {"LoadBalancer", "NodePort"} else "externalIPs"
                yield Problem(kind, name, "exposure", f"is exposed outside the cluster ({how}); "
                                                      f"only {sorted(public)} may be")
        elif kind == "Ingress":
            backends = []
            if (spec.get("defaultBackend") or {}).get("service"):
                backends.append(spec["defaultBackend"]["service"].get("name"))
            for rule in spec.get("rules") or []:
                for path in ((rule.get("http") or {}).get("paths")) or []:
                    backends.append(((path.get("backend") or {}).get("service") or {}).get("name"))
            for backend in backends:
                if backend not in public:
                    yield Problem(kind, name, "exposure", f"routes outside traffic to Service {backend}; "
                                                          f"only {sorted(public)} may be exposed")
        elif kind in ROUTE_KINDS:
            for rule in spec.get("rules") or []:
                for ref in rule.get("backendRefs") or []:
                    if ref.get("kind", "Service") == "Service" and ref.get("name") not in public:
                        yield Problem(kind, name, "exposure", f"routes outside traffic to Service {ref.get('name')}; "
                                                              f"only {sorted(public)} may be exposed")


def check_hpas(docs: list[Doc], pods: list[Workload]) -> Iterator[Problem]:
    for doc in docs:
        if doc.get("kind") != "HorizontalPodAutoscaler":
            continue
        spec, name, ns = doc.get("spec") or {}, name_of(doc), namespace_of(doc)
        ref = spec.get("scaleTargetRef") or {}
        if not any((w.kind, w.name, w.namespace) == (ref.get("kind"), ref.get("name"), ns) for w in pods):
            yield Problem("HorizontalPodAutoscaler", name, "hpa",
                          f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} does not exist in {ns}")
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
        if high is None or low > high:
            yield Problem("HorizontalPodAutoscaler", name, "hpa", f"minReplicas {low} > maxReplicas {high}")


def check_service_monitors(docs: list[Doc]) -> Iterator[Problem]:
    services = [d for d in docs if d.get("kind") == "Service"]
    for doc in docs:
        if doc.get("kind") != "ServiceMonitor":
            continue
        spec, name = doc.get("spec") or {}, name_of(doc)
        ns_sel = spec.get("namespaceSelector") or {}
        if ns_sel.get("any"):
            namespaces = None
        else:
            namespaces = set(ns_sel.get("matchNames") or [namespace_of(doc)])
        matched = [s for s in services
                   if (namespaces is None or namespace_of(s) in namespaces)
                   and selector_matches(spec.get("selector"), (s.get("metadata") or {}).get("labels") or {})]
        if not matched:
            yield Problem("ServiceMonitor", name, "monitor",
                          f"selector ({describe(spec.get('selector'))}) matches no Service")
            continue
        for endpoint in spec.get("endpoints") or []:
            port = endpoint.get("port")
            if port is None:
                yield Problem("ServiceMonitor", name, "monitor", "an endpoint has no named `port`")
                continue
            for svc in matched:
                names = {p.get("name") for p in (svc.get("spec") or {}).get("ports") or []}
                if port not in names:
                    yield Problem("ServiceMonitor", name, "monitor",
                                  f"endpoint port {port!r} is not a port name of Service {name_of(svc)} "
                                  f"(has {sorted(n for n in names if n)})")


def check_netpol_ports(docs: list[Doc], pods: list[Workload]) -> Iterator[Problem]:
    for doc in docs:
        if doc.get("kind") != "NetworkPolicy":
            continue
        spec, name, ns = doc.get("spec") or {}, name_of(doc), namespace_of(doc)
        targets = selected(spec.get("podSelector"), ns, pods)
        for rule in spec.get("ingress") or []:
            for port in rule.get("ports") or []:
                if not isinstance(port.get("port"), str):
                    continue
                for w in targets:
                    names = {p.get("name") for c in containers(w.pod_spec, init=False) for p in c.get("ports") or []}
                    if port["port"] not in names:
                        yield Problem("NetworkPolicy", name, "netpol-port",
                                      f"named port {port['port']!r} does not exist on {w.kind}/{w.name}")


def check_statefulsets(docs: list[Doc], pods: list[Workload]) -> Iterator[Problem]:
    services = {(name_of(d), namespace_of(d)): d.get("spec") or {} for d in docs if d.get("kind") == "Service"}
    for doc in docs:
        if doc.get("kind") != "StatefulSet":
            continue
        name, ns = name_of(doc), namespace_of(doc)
        governing = (doc.get("spec") or {}).get("serviceName")
        service = services.get((governing, ns))
        own = next(w for w in pods if (w.kind, w.name, w.namespace) == ("StatefulSet", name, ns))
        if service is None:
            yield Problem("StatefulSet", name, "statefulset", f"serviceName {governing!r} is not a Service in {ns}")
        elif service.get("clusterIP") != "None":
            yield Problem("StatefulSet", name, "statefulset", f"serviceName {governing!r} is not headless")
        elif not selector_matches(equality_selector(service.get("selector")), own.pod_labels):
            yield Problem("StatefulSet", name, "statefulset", f"Service {governing} does not select its pods")


def check_labels(docs: list[Doc], pods: list[Workload]) -> Iterator[Problem]:
    def missing(labels: dict[str, str]) -> list[str]:
        wanted = [k for k in ("app.kubernetes.io/name", "app.kubernetes.io/component") if not labels.get(k)]
        if labels.get("app.kubernetes.io/part-of") != PART_OF:
            wanted.append(f"app.kubernetes.io/part-of={PART_OF}")
        return wanted

    for doc in docs:
        absent = missing((doc.get("metadata") or {}).get("labels") or {})
        if absent:
            yield Problem(doc.get("kind", "?"), name_of(doc), "labels", f"lacks labels {', '.join(absent)}")
    for w in pods:
        absent = missing(w.pod_labels)
        if absent:
            yield Problem(w.kind, w.name, "labels", f"pod template lacks labels {', '.join(absent)}")


def check(docs: list[Doc], public_services: Iterable[str] = ("gateway",)) -> list[Problem]:
    """Every rule over one rendered set of manifests."""
    pods = workloads(docs)
    problems: list[Problem] = []
    problems += check_selectors(docs, pods)
    problems += check_containers(pods)
    problems += check_gpu(pods)
    problems += check_exposure(docs, set(public_services))
    problems += check_hpas(docs, pods)
    problems += check_service_monitors(docs)
    problems += check_netpol_ports(docs, pods)
    problems += check_statefulsets(docs, pods)
    problems += check_labels(docs, pods)
    return problems


# --- CLI ---------------------------------------------------------------------------------------------

def read_target(target: str) -> str:
    if target == "-":
        return sys.stdin.read()
    path = Path(target)
    if path.is_dir():
        return render_kustomization(path)
    return path.read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="kustomization dirs, YAML files or - (default: every overlay)")
    parser.add_argument("--public-service", action="append", dest="public",
                        help="a Service allowed outside the cluster (repeatable; default: gateway)")
    args = parser.parse_args(argv)
    targets = args.targets or [str(p) for p in sorted(OVERLAYS.iterdir()) if (p / "kustomization.yaml").is_file()]
    failed = False
    for target in targets:
        try:
            docs = load_documents(read_target(target))
        except (OSError, RuntimeError, ValueError, yaml.YAMLError, subprocess.TimeoutExpired) as exc:
            print(f"error: {target}: {exc}", file=sys.stderr)
            return 2
        problems = check(docs, args.public or ["gateway"])
        for problem in problems:
            print(f"{target}: {problem}")
        if problems:
            failed = True
        else:
            print(f"{target}: OK ({len(docs)} objects)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
