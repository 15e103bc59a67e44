"""Operating the real platform (tests/platform_stack.py): one trace across the services, metrics
scraped by Prometheus, calls spread over backend replicas, Triton down."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import grpc
import pytest

from likeness_client import JobFailedError
from likeness_client.proto.likeness.v1 import gateway_pb2 as gw
from tests.platform_stack import *  # noqa: F401,F403 (constants and helpers; the fixtures: conftest.py)


# -------------------------------------------------------------------------- traces and metrics


def test_one_trace_from_gateway_through_services_to_triton(stack, client, photo_id):
    job_id = client.submit(photo=photo_id, script="Traced.", resolution=128)
    assert client.wait(job_id, timeout_s=180).state == gw.JOB_STATE_SUCCEEDED
    wanted, deadline = {"gateway", "tts", "expression", "render"}, time.monotonic() + 15
    while True:  # (spans reach the file in batches)
        names = {(s["service"], s["name"].split(" ")[0]) for s in job_spans(stack, job_id)}
        if {svc for svc, _ in names} >= wanted and ("expression", "triton.infer") in names \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {svc for svc, _ in names} >= {"gateway", "tts", "expression", "render"}, sorted(names)
    assert ("tts", "triton.infer") in names and ("expression", "triton.infer") in names, sorted(names)


def test_failed_calls_have_error_spans(stack, client):
    cat = client.upload(ROOT / "assets/photos/cat.png", kind="photo")  # (no face: PrepareRig fails)
    with pytest.raises(JobFailedError):
        client.wait(client.submit(photo=cat, script="Meow.", resolution=128), timeout_s=120)
    with pytest.raises(grpc.RpcError):
        client.submit(photo=cat, script="   ")  # (INVALID_ARGUMENT at the gateway)

    def seen() -> tuple[bool, bool]:  # (spans reach the file in batches: wait for them)
        failed = [s for s in spans(stack) if s["status"] == "ERROR"]
        return (any(s["service"] == "render" and "PrepareRig" in s["name"] for s in failed),
                any(s["service"] == "gateway" and "SubmitVideo" in s["name"] for s in failed))

    deadline = time.monotonic() + 15
    while seen() != (True, True) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seen() == (True, True)


def test_metrics_are_exposed_and_scraped_by_prometheus(stack, client, photo_id, tmp_path):
    job = client.wait(client.submit(photo=photo_id, script="Counted.", resolution=128), timeout_s=180)
    assert job.state == gw.JOB_STATE_SUCCEEDED  # (what the counters below count, whatever ran before)
    texts = {name: urllib.request.urlopen(s.metrics_url, timeout=5).read().decode()
             for name, s in stack.services.items()}
    assert all("likeness_grpc_requests_total" in t for t in texts.values())
    assert 'likeness_jobs_total{status="succeeded"}' in texts["gateway"]
    assert "likeness_stage_duration_seconds_bucket" in texts["gateway"]
    assert "likeness_job_queue_depth" in texts["gateway"]
    frames = [line for line in texts["render"].splitlines() if line.startswith("likeness_frames_rendered_total")]
    assert frames and float(frames[0].split()[-1]) > 0
    triton = urllib.request.urlopen(stack.triton.metrics_url, timeout=5).read().decode()
    assert 'nv_inference_request_success{model="tts_piper"' in triton

    prometheus = "/usr/bin/prometheus"
    assert os.path.exists(prometheus), "run scripts/install-deploy-tools.sh (Debian prometheus)"
    from services.devtools.ports import free_port

    targets = [s.metrics_url.split("//")[1].split("/")[0] for s in stack.services.values()]
    targets.append(stack.triton.metrics_url.split("//")[1].split("/")[0])
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: likeness\n"
                      f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n")
    port = free_port()
    proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = f"http://127.0.0.1:{port}/api/v1/query?query=sum(likeness_grpc_requests_total)%20by%20(service)"
        wanted = {f"likeness.v1.{name}Service" for name in ("Gateway", "Tts", "Expression", "Render")}
        deadline, services = time.monotonic() + 90, set()
        while time.monotonic() < deadline and not wanted <= services:
            time.sleep(1)
            try:
                result = json.loads(urllib.request.urlopen(query, timeout=5).read())["data"]["result"]
            except OSError:
                continue
            services = {r["metric"].get("service") for r in result}
        assert wanted <= services, services
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_gateway_channel_spreads_calls_over_every_backend_replica(stack):
    """The channel the gateway opens to a backend (`dns:///tts-pods:50052` in Kubernetes, every pod of
    a headless Service) balances per call: a second tts process gets its share of the calls at once."""
    from services.common.infra.grpc_client import open_channel
    from likeness_client.proto.likeness.v1 import tts_pb2, tts_pb2_grpc

    replicas = [stack.services["tts"], stack.start_replica("tts")]
    with open_channel("ipv4:" + ",".join(r.address for r in replicas)) as channel:
        tts = tts_pb2_grpc.TtsServiceStub(channel)
        assert tts.Synthesize(tts_pb2.SynthesizeRequest(text="Hello.", seed=9), timeout=60).audio.data
        time.sleep(0.5)  # (the first call opens a connection to each; until both are up, calls go to those that are)
        before = [requests_served(r, "Synthesize", "likeness.v1.TtsService") for r in replicas]
        for i in range(4):
            assert tts.Synthesize(tts_pb2.SynthesizeRequest(text=f"Call {i}.", seed=i), timeout=60).audio.data
    served = [requests_served(r, "Synthesize", "likeness.v1.TtsService") - b for r, b in zip(replicas, before)]
    assert served == [2, 2], served  # alternating (pick_first, gRPC's default: 4 + 0)


# ------------------------------------------------------------------------------------- Triton down


def test_triton_unavailable_fails_the_job_clearly(stack, client, photo_id):
    stack.triton.stop()
    try:
        started = time.monotonic()
        with pytest.raises(JobFailedError) as info:
            client.wait(client.submit(photo=photo_id, script="Triton is down.", resolution=256), timeout_s=180)
        job = info.value.job
        assert job.error.code == grpc.StatusCode.UNAVAILABLE.value[0], job.error
        assert "Triton" in job.error.message and time.monotonic() - started < 120
    finally:
        assert "triton" in stack.revive()  # (on its port: the services find it again; the next test may need it)
    job = client.wait(client.submit(photo=photo_id, script="Back again.", resolution=128), timeout_s=180)
    assert job.state == gw.JOB_STATE_SUCCEEDED
