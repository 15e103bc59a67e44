"""Three gateway replicas on one PostgreSQL, one S3 server and the services (real processes): they share
one queue, run each stage of each job once, answer for each other's jobs, take over a killed replica's
job, ride out a database restart and deliver each webhook once through a rolling restart; with API keys,
one principal's job limit holds across them."""
from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psycopg
import pytest

from likeness_client import LikenessClient
from likeness_client.proto.likeness.v1 import gateway_pb2 as gw, gateway_pb2_grpc
from services.common.infra import grpc_errors
from services.devtools.platform import LocalPlatform
from tests.test_webhooks import LOOPBACK_ALLOWED, Receiver

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "photos" / "grace_hopper.jpg"
INTERNAL_TOKEN = "internal-" + "7" * 24
TERMINAL = {gw.JOB_STATE_SUCCEEDED, gw.JOB_STATE_FAILED, gw.JOB_STATE_CANCELLED}
KEYS = {"studio": "studio-key-0123456789", "ads": "ads-key-abcdefghijklmnop", "news": "news-key-0123456789abc"}
PER_PRINCIPAL = 3


@pytest.fixture(scope="module")
def stack():
    env = {"LIKENESS_MAX_CONCURRENT_JOBS": "1", "LIKENESS_MAX_QUEUED_JOBS": "64", "LIKENESS_JOB_LEASE_S": "3",
           "LIKENESS_WEBHOOK_BACKOFF_S": "0.2", "LIKENESS_SHUTDOWN_DRAIN_S": "0.2", **LOOPBACK_ALLOWED,
           "LIKENESS_INTERNAL_TOKEN": INTERNAL_TOKEN}  # (every job below passes the backends' check)
    with LocalPlatform(env=env, gateways=3) as running:
        yield running


@pytest.fixture(scope="module")
def clients(stack):
    made = [LikenessClient(g.address, timeout_s=60, api_key="", tls_ca="") for g in gateways(stack)]
    yield made
    for client in made:
        client.close()


def gateways(stack):
    return [stack.services["gateway"], *stack.replicas]


def served(stack, method: str, service: str, grpc_service: str) -> float:
    """Calls of a method by any status: a render stream the gateway closes once it has the end
    message can count as CANCELLED, and no job here is cancelled."""
    text = urllib.request.urlopen(stack.services[service].metrics_url, timeout=5).read().decode()
    prefix = "likeness_grpc_requests_total{"
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
               and f'method="{method}"' in line and f'service="{grpc_service}"' in line)


def wait_all(client, job_ids, timeout_s=300.0) -> dict[str, gw.Job]:
    deadline, jobs = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        jobs = {j: client.get(j) for j in job_ids}
        if all(job.state in TERMINAL for job in jobs.values()):
            return jobs
        time.sleep(0.5)
    raise AssertionError({j: gw.JobState.Name(job.state) for j, job in jobs.items()})


def row(stack, job_id: str) -> dict:
    with psycopg.connect(stack.pg.dsn()) as conn:
        holder, attempts = conn.execute("SELECT holder, attempts FROM jobs WHERE job_id = %s", (job_id,)).fetchone()
    return {"holder": holder, "attempts": attempts}


def replica_holding(stack, holder: str):
    return next(g for g in gateways(stack) if holder in Path(g.log_path).read_text(errors="replace"))


def test_thirty_jobs_round_robin_run_each_stage_once(stack, clients):
    photo = clients[0].upload(PHOTO, kind="photo")
    stages = [("Synthesize", "tts", "likeness.v1.TtsService"), ("Animate", "expression",
              "likeness.v1.ExpressionService"), ("RenderVideo", "render", "likeness.v1.RenderService")]
    before = {m: served(stack, m, s, g) for m, s, g in stages}
    ids = [clients[i % 3].submit(photo=photo, script=f"Job {i}.", resolution=256, seed=i) for i in range(30)]
    jobs = wait_all(clients[1], ids)
    assert {gw.JobState.Name(j.state) for j in jobs.values()} == {"JOB_STATE_SUCCEEDED"}
    ran = {m: served(stack, m, s, g) - before[m] for m, s, g in stages}
    assert ran == {"Synthesize": 30, "Animate": 30, "RenderVideo": 30}  # each stage of each job once
    with psycopg.connect(stack.pg.dsn()) as conn:
        attempts = conn.execute("SELECT attempts, count(*) FROM jobs WHERE job_id = ANY(%s) GROUP BY attempts",
                                (ids,)).fetchall()
    assert attempts == [(1, 30)]
    for i, job_id in enumerate(ids):  # any replica answers for any job
        assert clients[(i + 1) % 3].get(job_id).state == gw.JOB_STATE_SUCCEEDED
    for client in clients:
        assert set(ids) <= {j.job_id for j in client.jobs()}
    watched = list(clients[2].stub.WatchJob(gw.WatchJobRequest(job_id=ids[0]), timeout=10))
    assert watched[-1].terminal


def test_a_killed_replicas_job_is_finished_by_another(stack, clients):
    photo = clients[0].upload(PHOTO, kind="photo")
    script = " ".join(["The replica that runs me is about to be killed, and another one finishes me."] * 3)
    job_id = clients[0].submit(photo=photo, script=script, resolution=256)
    deadline = time.monotonic() + 60
    while clients[0].get(job_id).state != gw.JOB_STATE_RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    holder = row(stack, job_id)["holder"]
    victim = replica_holding(stack, holder)
    stack.kill_service(victim, signal.SIGKILL)
    survivor = next(c for c, g in zip(clients, gateways(stack)) if g is not victim)
    job = survivor.wait(job_id, timeout_s=300)
    assert job.state == gw.JOB_STATE_SUCCEEDED
    after = row(stack, job_id)
    assert after["attempts"] == 2 and after["holder"] == ""
    stack.start_service("gateway", victim)  # (back for the next tests)


def test_a_database_restart_loses_no_job(stack, clients):
    photo = clients[0].upload(PHOTO, kind="photo")
    job_id = clients[1].submit(photo=photo, script="The database restarts while I run.", resolution=256)
    deadline = time.monotonic() + 60
    while clients[1].get(job_id).state != gw.JOB_STATE_RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stack.pg.kill()
    try:
        with pytest.raises(grpc.RpcError) as caught, grpc.insecure_channel(gateways(stack)[2].address) as channel:
            # (a raw channel: the client's own retries on UNAVAILABLE would wait out the outage)
            gateway_pb2_grpc.GatewayServiceStub(channel).GetJob(gw.GetJobRequest(job_id=job_id), timeout=15)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
        assert "127.0.0.1" not in caught.value.details()
        time.sleep(2.0)
    finally:
        stack.pg.start()
    job = clients[2].wait(job_id, timeout_s=300)
    assert job.state == gw.JOB_STATE_SUCCEEDED
    assert all(g.proc.poll() is None for g in gateways(stack))  # no replica crashed


def test_each_webhook_is_delivered_once_through_a_rolling_restart(stack, clients):
    receiver = Receiver()
    try:
        photo = clients[0].upload(PHOTO, kind="photo")
        ids = [clients[i % 3].submit(photo=photo, script=f"Webhook {i}.", resolution=256,
                                     webhook_url=receiver.url) for i in range(9)]
        for replica in gateways(stack):  # a rolling update: one replica at a time, SIGTERM then back
            os.killpg(replica.proc.pid, signal.SIGTERM)
            replica.proc.wait(timeout=60)
            stack.start_service("gateway", replica)
        wait_all(clients[0], ids)
        deadline = time.monotonic() + 60
        while len({h["likeness-delivery"] for h, _, _ in receiver.received}) < len(ids):
            assert time.monotonic() < deadline, len(receiver.received)
            time.sleep(0.2)
        time.sleep(2.0)  # (a second delivery would come now)
        per_job = Counter(h["likeness-delivery"] for h, _, _ in receiver.received)
        assert set(per_job) == set(ids) and set(per_job.values()) == {1}
        assert all(clients[0].get(j).webhook.state == gw.WEBHOOK_STATE_DELIVERED for j in ids)
    finally:
        receiver.close()


def test_backends_answer_only_calls_that_carry_the_internal_token(stack):
    """Reaching a backend's port is not enough: without LIKENESS_INTERNAL_TOKEN (which the gateways send,
    so every job above ran) tts answers UNAUTHENTICATED; health checks need no token."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.common.infra.grpc_server import INTERNAL_TOKEN_HEADER
    from likeness_client.proto.likeness.v1 import tts_pb2, tts_pb2_grpc

    request = tts_pb2.SynthesizeRequest(text="Hello.", seed=1)
    with grpc.insecure_channel(stack.services["tts"].address) as channel:
        tts = tts_pb2_grpc.TtsServiceStub(channel)
        for metadata in ((), ((INTERNAL_TOKEN_HEADER, "guess"),)):
            with pytest.raises(grpc.RpcError) as caught:
                tts.Synthesize(request, metadata=metadata, timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert tts.Synthesize(request, metadata=((INTERNAL_TOKEN_HEADER, INTERNAL_TOKEN),), timeout=60).audio.data
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """Three gateway replicas with API keys and LIKENESS_MAX_JOBS_PER_PRINCIPAL=3, without Triton or the
    model services (cheap: no job here runs to its end). Only the third replica runs jobs, one at a time:
    the one it takes stays RUNNING for the ~15 s its calls to the absent render service are retried."""
    keys_file = tmp_path_factory.mktemp("keys") / "api-keys"
    keys_file.write_text("".join(f"{p}:{k}\n" for p, k in KEYS.items()))
    env = {"LIKENESS_API_KEYS_FILE": str(keys_file), "LIKENESS_MAX_JOBS_PER_PRINCIPAL": str(PER_PRINCIPAL),
           "LIKENESS_MAX_QUEUED_JOBS": "64", "LIKENESS_MAX_CONCURRENT_JOBS": "0", "LIKENESS_SHUTDOWN_DRAIN_S": "0.2"}
    with LocalPlatform(env=env, only=("gateway",), gateways=2) as running:
        running.start_replica("gateway", {"LIKENESS_MAX_CONCURRENT_JOBS": "1"})
        yield running


def quota_subject(error: grpc.RpcError) -> str:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    quota = error_details_pb2.QuotaFailure()
    assert any(d.Unpack(quota) for d in rpc_status.from_call(error).details if d.Is(quota.DESCRIPTOR))
    return quota.violations[0].subject


def test_a_principals_job_limit_holds_across_replicas(keyed):
    """One principal submitting round-robin over three gateway processes gets RESOURCE_EXHAUSTED (its
    quota named) on every replica once it has 3 jobs queued or running among them, while another
    principal is still admitted; a cancelled job frees a place wherever it is used; 12 submissions at
    once over the three replicas admit exactly 3."""
    def clients(principal):
        return [LikenessClient(g.address, timeout_s=30, api_key=KEYS[principal], tls_ca="") for g in gateways(keyed)]

    studio, ads, news = clients("studio"), clients("ads"), clients("news")
    try:
        photo = studio[0].upload(PHOTO, kind="photo")
        ads[1].upload(PHOTO, kind="photo")
        news[2].upload(PHOTO, kind="photo")
        running = studio[0].submit(photo=photo, script="One.")
        deadline = time.monotonic() + 30
        while studio[1].get(running).state != gw.JOB_STATE_RUNNING:  # (the third replica took it)
            assert time.monotonic() < deadline
            time.sleep(0.05)
        queued = [studio[1].submit(photo=photo, script="Two."), studio[2].submit(photo=photo, script="Three.")]
        for client in studio:
            with pytest.raises(grpc.RpcError) as caught:
                client.submit(photo=photo, script="One too many.")
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert quota_subject(caught.value) == "principal:studio"
            assert grpc_errors.retry_delay(caught.value) == 5.0
        assert studio[0].get(running).state == gw.JOB_STATE_RUNNING  # a running job counts too
        theirs = [client.submit(photo=photo, script="Room for us.") for client in ads]  # the others' share
        assert {ads[0].get(j).state for j in theirs} == {gw.JOB_STATE_QUEUED}
        assert studio[2].cancel(queued[0]).state == gw.JOB_STATE_CANCELLED
        studio[1].submit(photo=photo, script="Three, now.")  # a cancelled job frees a place on any replica
        with pytest.raises(grpc.RpcError) as caught:
            studio[0].submit(photo=photo, script="And again one too many.")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        def submit(i):
            try:
                return news[i % 3].submit(photo=photo, script=f"Burst {i}.")
            except grpc.RpcError as exc:
                return exc.code()

        with ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(submit, range(12)))
        refused = [o for o in outcomes if o == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(refused) == 12 - PER_PRINCIPAL, outcomes
        with psycopg.connect(keyed.pg.dsn()) as conn:
            active = dict(conn.execute("SELECT owner, count(*) FROM jobs WHERE state IN ('QUEUED', 'RUNNING') "
                                       "GROUP BY owner").fetchall())
        assert active["news"] == PER_PRINCIPAL and active["ads"] == 3 and active["studio"] <= PER_PRINCIPAL
    finally:
        for client in studio + ads + news:
            client.close()
