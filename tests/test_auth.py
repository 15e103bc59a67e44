"""API keys, ownership and TLS on a real gateway process (with a real S3 server; no job runs here,
so the stack starts without Triton or the model services).

Two principals, "studio" and "ads": neither sees, watches, cancels, deletes or reuses the other's
jobs and uploads; calls without a known key are UNAUTHENTICATED; health checks need no key; the
gateway serves TLS with a certificate made here by the openssl program.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from likeness_client import LikenessClient
from services.devtools.ports import free_ports
from likeness_client.proto.likeness.v1 import gateway_pb2 as gw, gateway_pb2_grpc
from services.gateway.auth import ApiKeys, AuthConfigError, parse_keys
from services.devtools.platform import LocalPlatform

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "photos" / "grace_hopper.jpg"
KEYS = {"studio": "studio-key-0123456789", "ads": "ads-key-abcdefghijklmnop", "ops": "ops-key-0123456789abc"}


def make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "gateway.crt", folder / "gateway.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth")
    keys_file = folder / "api-keys"
    keys_file.write_text("# principal:key\n" + "".join(f"{p}:{k}\n" for p, k in KEYS.items()))
    cert, key = make_certificate(folder)
    health_port = free_ports(1)[0]
    env = {"LIKENESS_API_KEYS_FILE": str(keys_file), "LIKENESS_TLS_CERT_FILE": str(cert),
           "LIKENESS_TLS_KEY_FILE": str(key), "LIKENESS_HEALTH_PORT": str(health_port),
           "LIKENESS_MAX_CONCURRENT_JOBS": "0", "LIKENESS_MAX_JOBS_PER_PRINCIPAL": "2",  # jobs stay queued
           "LIKENESS_ADMIN_PRINCIPALS": "ops"}
    with LocalPlatform(env=env, only=("gateway",)) as stack:
        stack.keys_file, stack.cert, stack.health_port = keys_file, cert, health_port
        yield stack


def client_for(stack, principal: str | None, key: str | None = None) -> LikenessClient:
    return LikenessClient(stack.gateway_address, timeout_s=20, tls_ca=stack.cert,
                          api_key=key if key is not None else KEYS.get(principal, ""))


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_calls_without_a_known_key_are_unauthenticated(secured):
    with client_for(secured, None, key="") as anonymous:
        with pytest.raises(grpc.RpcError) as caught:
            anonymous.voices()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer" in caught.value.details()
        assert code_of(lambda: anonymous.upload(PHOTO, kind="photo")) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: list(anonymous.watch("0" * 32, timeout_s=5))) == grpc.StatusCode.UNAUTHENTICATED
    with client_for(secured, None, key="not-a-key-of-anyone-here") as stranger:
        with pytest.raises(grpc.RpcError) as caught:
            stranger.voices()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "unknown API key" in caught.value.details()
    with client_for(secured, "studio") as studio:
        assert studio.voices()


def test_refusals_are_counted_for_prometheus(secured):
    with client_for(secured, None, key="") as anonymous, client_for(secured, None, key="x" * 20) as stranger:
        for client in (anonymous, stranger):
            code_of(client.voices)
    text = urllib.request.urlopen(secured.services["gateway"].metrics_url, timeout=10).read().decode()
    counts = {reason: float(re.search(rf'likeness_auth_failures_total{{reason="{reason}"}} (\S+)', text).group(1))
              for reason in ("missing", "unknown_key")}
    assert counts["missing"] >= 1 and counts["unknown_key"] >= 1, counts


def test_health_checks_need_no_key(secured):
    credentials = grpc.ssl_channel_credentials(secured.cert.read_bytes())
    request = health_pb2.HealthCheckRequest(service="likeness.v1.GatewayService")
    with grpc.secure_channel(secured.gateway_address, credentials) as channel:
        assert health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_the_plaintext_health_port_serves_health_checks_and_nothing_else(secured):
    with grpc.insecure_channel(f"127.0.0.1:{secured.health_port}") as channel:  # as the kubelet's probe
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="likeness.v1.GatewayService"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            gateway_pb2_grpc.GatewayServiceStub(channel).ListVoices(gw.ListVoicesRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_plaintext_clients_cannot_talk_to_the_tls_gateway(secured):
    with LikenessClient(secured.gateway_address, timeout_s=5, api_key=KEYS["studio"], tls_ca="") as plain:
        with pytest.raises(ConnectionError):  # the handshake never completes: no connection opens
            plain.check_reachable(timeout_s=2)
        assert code_of(plain.voices) == grpc.StatusCode.DEADLINE_EXCEEDED  # calls wait, within their timeout


def test_each_principal_sees_only_its_own_jobs_and_uploads(secured):
    with client_for(secured, "studio") as studio, client_for(secured, "ads") as ads:
        photo = studio.upload(PHOTO, kind="photo")
        job_id = studio.submit(photo=photo, script="Hello there.", client_request_id="same-id")
        assert studio.get(job_id).job_id == job_id
        assert job_id in [j.job_id for j in studio.stub.ListJobs(gw.ListJobsRequest(), timeout=10).jobs]

        # The other principal: as if the job and the photo did not exist.
        assert code_of(lambda: ads.get(job_id)) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: ads.cancel(job_id)) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: ads.delete_job(job_id)) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: list(ads.watch(job_id, timeout_s=5))) == grpc.StatusCode.NOT_FOUND
        assert job_id not in [j.job_id for j in ads.stub.ListJobs(gw.ListJobsRequest(), timeout=10).jobs]
        with pytest.raises(grpc.RpcError) as caught:
            ads.submit(photo=photo, script="Hello there.")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "upload it first" in caught.value.details()
        assert code_of(lambda: ads.delete_asset(photo)) == grpc.StatusCode.NOT_FOUND
        # client_request_id is per principal: the same id from another principal is another job.
        ads_photo = ads.upload_object(PHOTO, kind="photo")
        assert ads_photo.asset_id == photo and not ads_photo.existing  # "existing" is per principal too
        ads_job = ads.submit(photo=photo, script="Hello there.", client_request_id="same-id")
        assert ads_job != job_id

        # Deleting an upload drops the caller's claim; the bytes stay while the other still has it.
        assert studio.delete_asset(photo) == [f"asset-owners/{photo}/studio"]
        storage = secured.storage()
        assert storage.exists(f"assets/{photo}")
        assert code_of(lambda: studio.submit(photo=photo, script="Again.")) == grpc.StatusCode.INVALID_ARGUMENT
        # The last claim takes the bytes, once no queued or running job needs them.
        assert ads.cancel(ads_job).state == gw.JOB_STATE_CANCELLED
        with pytest.raises(grpc.RpcError) as caught:  # studio's queued job still reads the photo
            ads.delete_asset(photo)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "another principal's job" in caught.value.details() and job_id not in caught.value.details()
        assert studio.cancel(job_id).state == gw.JOB_STATE_CANCELLED
        deleted = ads.delete_asset(photo)
        assert f"assets/{photo}" in deleted and f"asset-owners/{photo}/ads" in deleted
        assert not storage.exists(f"assets/{photo}")


def test_a_principal_gets_its_share_of_the_queue(secured):
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    with client_for(secured, "studio") as studio, client_for(secured, "ads") as ads:
        photo = studio.upload(PHOTO, kind="photo")
        ads.upload(PHOTO, kind="photo")
        mine = [studio.submit(photo=photo, script="One."), studio.submit(photo=photo, script="Two.")]
        with pytest.raises(grpc.RpcError) as caught:
            studio.submit(photo=photo, script="Three.")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = rpc_status.from_call(caught.value).details
        quota = error_details_pb2.QuotaFailure()
        assert any(d.Unpack(quota) for d in details if d.Is(quota.DESCRIPTOR))
        assert quota.violations[0].subject == "principal:studio"
        theirs = ads.submit(photo=photo, script="Still room for us.")  # the queue itself is not full
        for client, job in [(studio, j) for j in mine] + [(ads, theirs)]:
            assert client.cancel(job).state == gw.JOB_STATE_CANCELLED
        studio.submit(photo=photo, script="Three, now.")  # cancelled jobs free their places
        for job in studio.stub.ListJobs(gw.ListJobsRequest(states=[gw.JOB_STATE_QUEUED]), timeout=10).jobs:
            studio.cancel(job.job_id)


def test_an_operator_sees_and_manages_every_principals_jobs_and_uploads(secured):
    with client_for(secured, "studio") as studio, client_for(secured, "ops") as ops:
        photo = studio.upload(PHOTO, kind="photo")
        job_id = studio.submit(photo=photo, script="Hello.")
        assert studio.get(job_id).owner == "studio"
        seen = ops.get(job_id)
        assert seen.owner == "studio" and seen.job_id == job_id
        assert job_id in [j.job_id for j in ops.stub.ListJobs(gw.ListJobsRequest(), timeout=10).jobs]
        assert ops.cancel(job_id).state == gw.JOB_STATE_CANCELLED
        deleted = ops.delete_asset(photo)  # the bytes and every principal's claim
        assert f"assets/{photo}" in deleted and f"asset-owners/{photo}/studio" in deleted
        assert secured.storage().list(f"asset-owners/{photo}/") == []
        assert ops.delete_job(job_id) == []  # a job cancelled while queued stored no objects; its row goes
        assert code_of(lambda: studio.get(job_id)) == grpc.StatusCode.NOT_FOUND


def test_cli_submit_sends_the_key_from_a_file_and_verifies_tls(secured, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("wrong-key-wrong-key-wrong\n")
    base = [sys.executable, "-m", "services.cli", "submit", "--server", secured.gateway_address,
            "--photo", str(PHOTO), "--script", "Hello.", "--out", str(tmp_path / "out.mp4")]
    run = subprocess.run([*base, "--api-key-file", str(key_file), "--tls-ca", str(secured.cert)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 1 and "UNAUTHENTICATED: unknown API key" in run.stderr, run.stderr
    missing = subprocess.run([*base, "--api-key-file", str(tmp_path / "none")], capture_output=True,
                             text=True, timeout=120, cwd=ROOT)
    assert missing.returncode == 2 and "api-key-file" in missing.stderr, missing.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_a_rotated_key_file_is_read_again_and_a_broken_one_keeps_the_old_keys(secured):
    old = secured.keys_file.read_text()
    try:
        secured.keys_file.write_text(old + "studio:studio-second-key-xyz123\n")
        with client_for(secured, "studio", key="studio-second-key-xyz123") as rotated:
            assert rotated.voices()
        secured.keys_file.write_text("this line has no principal\n")
        with client_for(secured, "studio") as studio:
            assert studio.voices()  # the previous keys stay in force
    finally:
        secured.keys_file.write_text(old)
    assert "API keys not reloaded" in secured.log_tail("gateway", 200)


@pytest.mark.parametrize("text, message", [
    ("", "no keys"),
    ("# only a comment\n", "no keys"),
    ("nocolon\n", "line 1: expected 'principal:key'"),
    ("studio:short\n", "line 1: the key must be at least 16"),
    ("bad principal:0123456789abcdef\n", "line 1: expected"),
    ("a:0123456789abcdef\nb:0123456789abcdef\n", "line 2: this key is already 'a''s"),
])
def test_key_file_errors_name_the_line(text, message):
    with pytest.raises(AuthConfigError, match=message):
        parse_keys(text)


def test_keys_map_to_principals_and_several_keys_may_share_one(tmp_path):
    path = tmp_path / "keys"
    path.write_text("studio:0123456789abcdef\nstudio:fedcba9876543210\nads:ads-0123456789abcd\n")
    keys = ApiKeys(path)
    assert keys.principal("0123456789abcdef") == keys.principal("fedcba9876543210") == "studio"
    assert keys.principal("ads-0123456789abcd") == "ads"
    assert keys.principal("0123456789abcdeX") is None


def test_gateway_refuses_to_start_with_a_missing_key_file(tmp_path):
    stack = LocalPlatform(env={"LIKENESS_API_KEYS_FILE": str(tmp_path / "nope")}, only=("gateway",),
                       start_timeout=60)
    with pytest.raises(RuntimeError, match="no such file"):
        stack.start()


def test_new_key_lines_parse_and_differ(tmp_path):
    lines = [subprocess.run([sys.executable, "-m", "services.cli", "new-key", "studio"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT).stdout.strip() for _ in range(2)]
    assert lines[0] != lines[1] and all(line.startswith("studio:") for line in lines)
    path = tmp_path / "keys"
    path.write_text("\n".join(lines) + "\n")
    keys = ApiKeys(path)
    assert keys.principal(lines[0].split(":", 1)[1]) == "studio"
    bad = subprocess.run([sys.executable, "-m", "services.cli", "new-key", "no spaces"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.startswith("error: principal:")


def test_cli_jobs_lists_the_callers_jobs_only(secured, tmp_path):
    with client_for(secured, "studio") as studio, client_for(secured, "ads") as ads:
        mine = studio.submit(photo=studio.upload(PHOTO, kind="photo"), script="Listed.")
        theirs = ads.submit(photo=ads.upload(PHOTO, kind="photo"), script="Not listed.")
    key_file = tmp_path / "key"
    key_file.write_text(KEYS["studio"] + "\n")
    base = [sys.executable, "-m", "services.cli", "jobs", "--server", secured.gateway_address,
            "--api-key-file", str(key_file), "--tls-ca", str(secured.cert)]
    run = subprocess.run([*base, "--state", "queued,running"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    rows = run.stdout.splitlines()
    assert rows[0].split()[:2] == ["JOB", "STATE"] and rows[1].split()[:2] == [mine, "queued"]
    assert theirs not in run.stdout
    listed = subprocess.run([*base, "--json", "--state", "queued"], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)  # one array, for scripts
    newest = records[0]
    assert (newest["job_id"], newest["state"], newest["error"], newest["video"]) == (mine, "queued", None, None)
    assert newest["created"].endswith("Z") and theirs not in {r["job_id"] for r in records}, records
    assert subprocess.run([*base, "--state", "succeeded"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT).stdout.splitlines()[1:] == []
    bad = subprocess.run([*base, "--state", "done"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "error: state: unknown state 'done'" in bad.stderr, bad.stderr
    none = subprocess.run([*base, "--limit", "0"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert none.returncode == 2 and "error: limit: must be at least 1" in none.stderr, none.stderr
    with client_for(secured, "studio") as studio, client_for(secured, "ads") as ads:
        studio.cancel(mine)
        ads.cancel(theirs)


def test_a_stack_whose_tls_comes_from_the_environment_becomes_healthy(tmp_path, monkeypatch):
    """`likeness serve` with LIKENESS_TLS_CERT_FILE / KEY_FILE in its environment: its health wait used to
    speak plaintext to the TLS port and never saw the gateway healthy; it now asks the plaintext health
    port, and a TLS client gets answers on the gateway's port."""
    cert, key = make_certificate(tmp_path)
    monkeypatch.setenv("LIKENESS_TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("LIKENESS_TLS_KEY_FILE", str(key))
    with LocalPlatform(only=("gateway",), start_timeout=60) as stack:
        with LikenessClient(stack.gateway_address, timeout_s=30, api_key="", tls_ca=str(cert)) as client:
            assert "joe" in {v.name for v in client.voices()}
        with grpc.insecure_channel(stack.gateway_address) as plain:  # the gRPC port itself is TLS only
            with pytest.raises(grpc.RpcError):
                gateway_pb2_grpc.GatewayServiceStub(plain).ListVoices(gw.ListVoicesRequest(), timeout=3)
