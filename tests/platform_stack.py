"""The platform for real, shared by the test_platform_* files: a Triton server, an S3 server, PostgreSQL and
the four gRPC services as separate processes on loopback (services.devtools.platform.LocalPlatform), one
stack for the session, driven through the public client. Every test leaves it as it found it (a test that
stops a part starts it again), so the files and their tests run in any order.
"""
from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from likeness_client import LikenessClient
from services.common.infra.grpc_errors import field_violations
from services.devtools.platform import LocalPlatform
from tests.test_webhooks import LOOPBACK_ALLOWED

__all__ = ["ROOT", "PHOTO", "SCRIPT", "LONG_SCRIPT", "WEBHOOK_SECRET", "wait_state", "spans", "job_spans",
           "violations_of", "requests_served"]
# (the fixtures, stack, client and photo_id, are registered once by tests/conftest.py: one stack)

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "photos" / "grace_hopper.jpg"
SCRIPT = "Maybe Bob will pay me back. Please bring the big map."
LONG_SCRIPT = " ".join(["People bring maps and books to the big market by the bay."] * 6)
WEBHOOK_SECRET = "platform-test-secret"


@pytest.fixture(scope="session")
def stack():
    trace_file = Path(tempfile.mkdtemp(prefix="likeness-traces-")) / "spans.jsonl"
    env = {"LIKENESS_TRACE_FILE": str(trace_file), "LIKENESS_MAX_CONCURRENT_JOBS": "1",
           "LIKENESS_MAX_QUEUED_JOBS": "2", "LIKENESS_WEBHOOK_SECRET": WEBHOOK_SECRET, "LIKENESS_MAX_STREAMS": "1",
           **LOOPBACK_ALLOWED}  # (the webhook receivers here are http:// on loopback)
    with LocalPlatform(env=env) as running:
        running.trace_file = trace_file
        yield running


@pytest.fixture(scope="session")
def client(stack):
    with LikenessClient(stack.gateway_address, timeout_s=30) as c:
        yield c


@pytest.fixture(scope="session")
def photo_id(client):
    return client.upload(PHOTO, kind="photo")


def wait_state(client, job_id, states, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(job_id)
        if job.state in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {client.get(job_id)}")


def spans(stack) -> list[dict]:
    return [json.loads(line) for line in stack.trace_file.read_text().splitlines() if line.strip()]


def job_spans(stack, job_id: str) -> list[dict]:
    """Every span of the trace of the gateway's "job" span for job_id (one attempt)."""
    records = spans(stack)
    traces = {s["trace_id"] for s in records if s["name"] == "job" and s["attributes"].get("job.id") == job_id}
    return [s for s in records if s["trace_id"] in traces]


def violations_of(call) -> tuple[grpc.StatusCode, list[tuple[str, str]]]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), field_violations(info.value)


def requests_served(service, method: str, grpc_service: str, code: str = "OK") -> float:
    text = urllib.request.urlopen(service.metrics_url, timeout=5).read().decode()
    wanted = f'likeness_grpc_requests_total{{code="{code}",method="{method}",service="{grpc_service}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(wanted))
