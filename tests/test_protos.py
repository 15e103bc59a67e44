"""The gRPC API: code generation, buf lint/breaking, and a real in-process server round trip
(InputError -> INVALID_ARGUMENT + BadRequest, health, reflection, metrics, graceful shutdown)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import REGISTRY

from services.devtools import protogen
from services.common.domain.errors import InputError

protogen.generate()  # the generated package must exist before the imports below
from services.common.infra.grpc_errors import (  # noqa: E402
    error_status, field_violations, input_error_status, resource_exhausted, retry_delay)
from services.common.infra.grpc_server import serve, start_metrics_server, stop_gracefully  # noqa: E402
from likeness_client.proto.likeness.v1 import (  # noqa: E402
    common_pb2, gateway_pb2, gateway_pb2_grpc)

REPO = Path(__file__).resolve().parents[1]
BUF = Path(sys.executable).with_name("buf")
GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
MODULES = ("common", "gateway", "tts", "expression", "render")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def buf(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    assert BUF.exists(), f"buf not found at {BUF}: pip install buf-bin==1.75.0"
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------------------- generation

def test_generate_into_temp_package_imports_and_is_idempotent(tmp_path: Path) -> None:
    protos = shutil.copytree(REPO / "protos", tmp_path / "protos")
    out = tmp_path / "gen" / "apipkg"
    assert protogen.generate(protos, out, "apipkg") is True
    for name in MODULES:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            text = (out / "likeness" / "v1" / f"{name}{suffix}").read_text()
            assert "from likeness." not in text  # absolute protoc imports were rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.py")}
    started = time.perf_counter()
    assert protogen.generate(protos, out, "apipkg") is False
    assert time.perf_counter() - started < 0.5
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*.py")}

    # The package imports without sys.path tricks beyond its root, and messages round-trip.
    script = textwrap.dedent("""
        import importlib
        for name in %r:
            importlib.import_module(f"apipkg.likeness.v1.{name}_pb2")
            importlib.import_module(f"apipkg.likeness.v1.{name}_pb2_grpc")
        from apipkg.likeness.v1 import gateway_pb2, render_pb2_grpc
        req = gateway_pb2.SubmitVideoRequest(client_request_id="r1", script="hi", seed=0)
        back = gateway_pb2.SubmitVideoRequest.FromString(req.SerializeToString())
        assert back.HasField("seed") and back.WhichOneof("speech") == "script", back
        assert hasattr(render_pb2_grpc, "RenderServiceStub")
        print("ok")
    """ % (MODULES,))
    env = {**os.environ, "PYTHONPATH": str(out.parent)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr

    # A changed proto regenerates; a removed proto's modules disappear.
    gateway = protos / "likeness" / "v1" / "gateway.proto"
    gateway.write_text(gateway.read_text().replace(
        "message GetJobRequest {\n  string job_id = 1;\n",
        "message GetJobRequest {\n  string job_id = 1;\n  bool include_outputs = 2;\n"))
    assert protogen.generate(protos, out, "apipkg") is True
    assert "include_outputs" in (out / "likeness" / "v1" / "gateway_pb2.pyi").read_text()
    (protos / "likeness" / "v1" / "render.proto").unlink()
    assert protogen.generate(protos, out, "apipkg") is True
    assert not (out / "likeness" / "v1" / "render_pb2.py").exists()


def test_repository_generated_code_is_current() -> None:
    assert protogen.is_current()
    assert protogen.main([]) == 0  # the `python -m services.devtools.protogen` entry point


def test_the_one_copy_is_the_client_package_s_and_an_old_copy_is_removed(tmp_path: Path) -> None:
    assert protogen.OUT_DIR == REPO / "clients" / "python" / "likeness_client" / "proto"
    assert protogen.PACKAGE == "likeness_client.proto" and gateway_pb2.__name__.startswith("likeness_client.proto.")
    old = tmp_path / "services" / "common" / "proto_gen"  # what an older protogen left in a checkout
    assert protogen.generate(REPO / "protos", old, "services.common.proto_gen") is True
    assert protogen.remove_old_copy(old) is True and not old.exists()
    mine = tmp_path / "not_generated"
    (mine / "likeness").mkdir(parents=True)
    assert protogen.remove_old_copy(mine) is False and mine.exists()  # no stamp: not the generator's


def test_generation_reports_protoc_errors(tmp_path: Path) -> None:
    bad = tmp_path / "protos" / "likeness" / "v1"
    bad.mkdir(parents=True)
    (bad / "broken.proto").write_text('syntax = "proto3";\npackage likeness.v1;\nmessage X { Nope y = 1; }\n')
    with pytest.raises(protogen.ProtogenError):
        protogen.generate(tmp_path / "protos", tmp_path / "out", "out")


# ---------------------------------------------------------------------------- buf

def test_buf_lint_passes() -> None:
    done = buf("lint", "protos")
    assert done.returncode == 0, done.stdout + done.stderr
    done = buf("format", "--diff", "--exit-code", "protos")
    assert done.returncode == 0, "protos are not buf-formatted:\n" + done.stdout


def test_buf_breaking_against_main() -> None:
    listed = subprocess.run(["git", "ls-tree", "-r", "--name-only", "main", "--", "protos"], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode != 0 or ".proto" not in listed.stdout:
        pytest.skip("branch main has no protos/*.proto yet: nothing to be compatible with")
    done = buf("breaking", "protos", "--against", ".git#branch=main,subdir=protos")
    assert done.returncode == 0, done.stdout + done.stderr


def test_buf_breaking_flags_incompatible_changes(tmp_path: Path) -> None:
    """The breaking gate is real: renumbering a field fails it, adding a field does not."""
    changed = shutil.copytree(REPO / "protos", tmp_path / "protos")
    common = changed / "likeness" / "v1" / "common.proto"
    original = common.read_text()
    common.write_text(original.replace("  string sha256 = 3;", "  string sha256 = 3;\n  string etag = 6;"))
    done = buf("breaking", str(changed), "--against", str(REPO / "protos"))
    assert done.returncode == 0, done.stdout + done.stderr
    common.write_text(original.replace("int64 size_bytes = 4;", "int64 size_bytes = 7;"))
    done = buf("breaking", str(changed), "--against", str(REPO / "protos"))
    assert done.returncode != 0 and "size_bytes" in done.stdout, done.stdout + done.stderr


# ---------------------------------------------------------------------------- error details

def test_status_message_is_wire_compatible_with_google_rpc_status() -> None:
    status = input_error_status(InputError("photo", "no face found"))
    assert isinstance(status, common_pb2.Status)
    rpc = status_pb2.Status.FromString(status.SerializeToString())
    assert rpc.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert rpc.details[0].Is(error_details_pb2.BadRequest.DESCRIPTOR)
    assert field_violations(status) == [("photo", "no face found")]
    assert field_violations(rpc) == [("photo", "no face found")]
    plain = error_status(grpc.StatusCode.UNAVAILABLE, "render down")
    assert plain.code == grpc.StatusCode.UNAVAILABLE.value[0] and field_violations(plain) == []


# ---------------------------------------------------------------------------- live server

class TinyGateway(gateway_pb2_grpc.GatewayServiceServicer):
    """Just enough behaviour to exercise every handler shape."""

    def SubmitVideo(self, request, context):  # noqa: N802 (gRPC method name)
        if not request.script.strip():
            raise InputError("script", "must not be empty")
        return gateway_pb2.SubmitVideoResponse(job_id="job-1")

    def GetJob(self, request, context):  # noqa: N802
        time.sleep(float(request.job_id or 0))  # job_id = seconds to take
        return gateway_pb2.GetJobResponse(job=gateway_pb2.Job(job_id=request.job_id))

    def WatchJob(self, request, context):  # noqa: N802
        if request.job_id == "endless":
            while True:
                yield gateway_pb2.WatchJobResponse(stage=gateway_pb2.STAGE_RENDER)
                time.sleep(0.02)
        yield gateway_pb2.WatchJobResponse(stage=gateway_pb2.STAGE_TTS, stage_fraction=0.5)
        if request.job_id == "unknown":
            raise InputError("job_id", "no such job")
        yield gateway_pb2.WatchJobResponse(terminal=True, job=gateway_pb2.Job(
            job_id=request.job_id, state=gateway_pb2.JOB_STATE_SUCCEEDED))

    def UploadAsset(self, request_iterator, context):  # noqa: N802
        first = next(request_iterator)
        if first.WhichOneof("payload") != "header":
            raise InputError("header", "the first message must be the header")
        size = sum(len(r.chunk) for r in request_iterator)
        return gateway_pb2.UploadAssetResponse(asset_id="a1", object=common_pb2.ObjectRef(size_bytes=size))

    def CancelJob(self, request, context):  # noqa: N802
        resource_exhausted(context, "job queue full", retry_after_s=1.5, subject="jobs")

    def ListJobs(self, request, context):  # noqa: N802
        raise RuntimeError("unexpected bug")


@pytest.fixture(scope="module")
def gateway():
    port = free_port()
    server = serve([(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, TinyGateway())],
                   port=port, service_names=[GATEWAY], max_workers=4, host="127.0.0.1",
                   handle_sigterm=False)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=10)
    yield channel
    channel.close()
    server.stop(0)


def calls(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("likeness_grpc_requests_total",
                                     {"service": GATEWAY, "method": method, "code": code}) or 0.0


def observed(method: str) -> float:
    return REGISTRY.get_sample_value("likeness_grpc_request_duration_seconds_count",
                                     {"service": GATEWAY, "method": method}) or 0.0


def test_input_error_becomes_invalid_argument_with_field(gateway) -> None:
    stub = gateway_pb2_grpc.GatewayServiceStub(gateway)
    before, timed = calls("SubmitVideo", "INVALID_ARGUMENT"), observed("SubmitVideo")
    with pytest.raises(grpc.RpcError) as caught:
        stub.SubmitVideo(gateway_pb2.SubmitVideoRequest(script="  "), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == [("script", "must not be empty")]
    assert calls("SubmitVideo", "INVALID_ARGUMENT") == before + 1
    assert observed("SubmitVideo") == timed + 1

    ok_before = calls("SubmitVideo", "OK")
    assert stub.SubmitVideo(gateway_pb2.SubmitVideoRequest(script="Hello"), timeout=10).job_id == "job-1"
    assert calls("SubmitVideo", "OK") == ok_before + 1


def test_streaming_handlers_map_errors_and_are_counted(gateway) -> None:
    stub = gateway_pb2_grpc.GatewayServiceStub(gateway)
    ok_before, bad_before = calls("WatchJob", "OK"), calls("WatchJob", "INVALID_ARGUMENT")
    events = list(stub.WatchJob(gateway_pb2.WatchJobRequest(job_id="j"), timeout=10))
    assert [e.terminal for e in events] == [False, True]
    assert events[-1].job.state == gateway_pb2.JOB_STATE_SUCCEEDED

    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for event in stub.WatchJob(gateway_pb2.WatchJobRequest(job_id="unknown"), timeout=10):
            received.append(event)
    assert len(received) == 1  # the event before the error still arrived
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == [("job_id", "no such job")]
    assert calls("WatchJob", "OK") == ok_before + 1
    assert calls("WatchJob", "INVALID_ARGUMENT") == bad_before + 1

    # Client streaming: chunks are summed; a missing header is the client's fault.
    chunks = [gateway_pb2.UploadAssetRequest(header=gateway_pb2.UploadAssetHeader(filename="a.jpg"))]
    chunks += [gateway_pb2.UploadAssetRequest(chunk=b"x" * 1000)] * 3
    assert stub.UploadAsset(iter(chunks), timeout=10).object.size_bytes == 3000
    with pytest.raises(grpc.RpcError) as caught:
        stub.UploadAsset(iter(chunks[1:]), timeout=10)
    assert field_violations(caught.value) == [("header", "the first message must be the header")]


def test_resource_exhausted_and_unhandled_errors(gateway) -> None:
    stub = gateway_pb2_grpc.GatewayServiceStub(gateway)
    with pytest.raises(grpc.RpcError) as caught:
        stub.CancelJob(gateway_pb2.CancelJobRequest(job_id="j"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(caught.value) == pytest.approx(1.5)
    assert calls("CancelJob", "RESOURCE_EXHAUSTED") >= 1

    before = calls("ListJobs", "UNKNOWN")
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListJobs(gateway_pb2.ListJobsRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    assert field_violations(caught.value) == [] and retry_delay(caught.value) is None
    assert calls("ListJobs", "UNKNOWN") == before + 1


def wait_for(predicate, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_expired_and_cancelled_calls_are_counted(gateway) -> None:
    stub = gateway_pb2_grpc.GatewayServiceStub(gateway)
    expired = calls("GetJob", "DEADLINE_EXCEEDED")
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetJob(gateway_pb2.GetJobRequest(job_id="0.4"), timeout=0.1)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: calls("GetJob", "DEADLINE_EXCEEDED") == expired + 1)

    cancelled = calls("WatchJob", "CANCELLED")
    events = stub.WatchJob(gateway_pb2.WatchJobRequest(job_id="endless"), timeout=10)
    next(events), next(events)
    events.cancel()
    assert wait_for(lambda: calls("WatchJob", "CANCELLED") == cancelled + 1)


def test_health_reports_serving(gateway) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(gateway)
    for name in ("", GATEWAY):
        response = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(health_pb2.HealthCheckRequest(service="likeness.v1.NoSuchService"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_describes_the_api(gateway) -> None:
    """What grpcurl does: list services, then fetch their descriptors over the wire."""
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)

    stub = reflection_pb2_grpc.ServerReflectionStub(gateway)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=10)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {GATEWAY, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names

    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(gateway))
    service = pool.FindServiceByName(GATEWAY)
    assert {m.name for m in service.methods} == {
        "UploadAsset", "SubmitVideo", "GetJob", "WatchJob", "CancelJob", "ListJobs", "ListVoices", "StreamVideo",
        "DeleteJob", "DeleteAsset", "RetryJob", "LiveVideo"}
    job = pool.FindMessageTypeByName("likeness.v1.Job")
    assert job.fields_by_name["error"].message_type.full_name == "likeness.v1.Status"


def test_metrics_endpoint_exposes_grpc_counters(gateway) -> None:
    stub = gateway_pb2_grpc.GatewayServiceStub(gateway)
    stub.GetJob(gateway_pb2.GetJobRequest(job_id="0"), timeout=10)
    port = start_metrics_server(0, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert f'likeness_grpc_requests_total{{code="OK",method="GetJob",service="{GATEWAY}"}}' in body
    assert "likeness_grpc_request_duration_seconds_bucket" in body


def test_graceful_stop_drains_health_then_finishes_inflight_calls() -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    server = serve([(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, TinyGateway())],
                   port=port, service_names=[GATEWAY], host="127.0.0.1", handle_sigterm=False)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub, health = gateway_pb2_grpc.GatewayServiceStub(channel), health_pb2_grpc.HealthStub(channel)
        inflight = stub.GetJob.future(gateway_pb2.GetJobRequest(job_id="1.5"), timeout=10)
        time.sleep(0.1)
        stopped = stop_gracefully(server, grace_s=5, drain_s=0.5)
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        # Inside the drain window the server still answers, but says NOT_SERVING.
        assert wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service=GATEWAY),
                                             timeout=5).status == not_serving, timeout_s=0.5)
        assert not inflight.done()  # outlives the drain: finishes within the grace period
        assert inflight.result().job.job_id == "1.5"
        assert stopped.wait(5)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetJob(gateway_pb2.GetJobRequest(job_id="0"), timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


SIGTERM_SERVER = """
import sys, time
from services.common.infra.grpc_server import serve
from likeness_client.proto.likeness.v1 import gateway_pb2, gateway_pb2_grpc

class Slow(gateway_pb2_grpc.GatewayServiceServicer):
    def GetJob(self, request, context):
        time.sleep(1.0)
        return gateway_pb2.GetJobResponse(job=gateway_pb2.Job(job_id=request.job_id))

server = serve([(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, Slow())],
               port=int(sys.argv[1]), service_names=["likeness.v1.GatewayService"], host="127.0.0.1")
print("ready", flush=True)
server.wait_for_termination()
print("stopped", flush=True)
"""


def test_sigterm_stops_gracefully_in_a_real_process() -> None:
    port = free_port()
    env = {**os.environ, "LIKENESS_SHUTDOWN_DRAIN_S": "0.5", "LIKENESS_SHUTDOWN_GRACE_S": "5"}
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SERVER, str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            inflight = stub.GetJob.future(gateway_pb2.GetJobRequest(job_id="slow"), timeout=10)
            time.sleep(0.3)  # the call is running
            proc.send_signal(signal.SIGTERM)
            assert inflight.result().job.job_id == "slow"
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read().strip() == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_concurrent_calls_are_all_counted(gateway) -> None:
    stub = gateway_pb2_grpc.GatewayServiceStub(gateway)
    before = calls("GetJob", "OK")
    threads = [threading.Thread(target=stub.GetJob, args=(gateway_pb2.GetJobRequest(job_id="0.05"),),
                                kwargs={"timeout": 10}) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls("GetJob", "OK") == before + 8
