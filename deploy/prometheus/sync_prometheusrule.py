"""Regenerate deploy/k8s/base/prometheusrule.yaml from deploy/prometheus/alerts.yaml.

alerts.yaml is the source of truth (promtool checks and unit-tests it); the PrometheusRule carries the
same `groups` for the Prometheus Operator. Run after editing alerts.yaml:
    python deploy/prometheus/sync_prometheusrule.py
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ALERTS = HERE / "alerts.yaml"
TARGET = HERE.parent / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# The alert rules of deploy/prometheus/alerts.yaml for the Prometheus Operator.
# Generated: edit alerts.yaml (it has promtool unit tests), then run
#   python deploy/prometheus/sync_prometheusrule.py
# tests/test_deploy.py fails when the two differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: likeness-alerts
  labels:
    app.kubernetes.io/name: likeness-alerts
    app.kubernetes.io/component: monitoring
spec:
"""


def render(alerts_text: str) -> str:
    """The PrometheusRule text: HEADER + alerts.yaml from `groups:` on, indented under spec (comments kept)."""
    body = alerts_text[alerts_text.index("groups:"):]
    return HEADER + "".join("  " + line if line.strip() else line for line in body.splitlines(True))


def main() -> None:
    TARGET.write_text(render(ALERTS.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
