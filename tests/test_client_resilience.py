"""The client library rides out a gateway restart (a rolling update): submit() is retried by gRPC and
stays idempotent, wait() opens its watch again. A real gateway process (with a real S3 server, which
keeps the job records across the restart); jobs stay queued, so no model service is needed."""
from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from likeness_client import JobFailedError, LikenessClient
from likeness_client.proto.likeness.v1 import gateway_pb2 as gw
from services.devtools.platform import LocalPlatform

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "photos" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def stack():
    env = {"LIKENESS_MAX_CONCURRENT_JOBS": "0", "LIKENESS_JOB_LEASE_S": "2"}  # jobs stay queued; quick takeover
    with LocalPlatform(env=env, only=("gateway",)) as running:
        yield running


def how_it_ends(client: LikenessClient, job_id: str, timeout_s: float):
    """client.wait: the job it ended with when that was not success, None when it succeeded."""
    try:
        client.wait(job_id, timeout_s=timeout_s)
    except JobFailedError as exc:
        return exc.job
    return None


def during_a_gateway_restart(stack, call, down_s: float = 1.0):
    """Kills the gateway (no graceful drain: a crashed or evicted pod), runs `call` meanwhile on another
    thread, starts the gateway again after down_s, and returns what the call returned. The restart
    happens on this thread: a child started from a short-lived thread would die with it (die_with_parent)."""
    stack.kill_service("gateway", signal.SIGKILL)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call)
        time.sleep(down_s)
        assert not future.done()  # the call is waiting for the gateway, not failed
        stack.start_service("gateway")
        return future.result(timeout=60)


def test_submit_rides_out_a_gateway_restart(stack):
    with LikenessClient(stack.gateway_address, timeout_s=30, api_key="", tls_ca="") as client:
        photo = client.upload(PHOTO, kind="photo")
        job_id = during_a_gateway_restart(stack, lambda: client.submit(photo=photo, script="Still here?"))
        job = client.get(job_id)
        assert job.state == gw.JOB_STATE_QUEUED and job.client_request_id  # made up by submit()
        client.cancel(job_id)


def test_wait_follows_the_job_across_a_gateway_restart(stack):
    with LikenessClient(stack.gateway_address, timeout_s=30, api_key="", tls_ca="") as client:
        job_id = client.submit(photo=client.upload(PHOTO, kind="photo"), script="Wait for me.")

        def cancel_soon():  # the restarted gateway takes the job over from its record; end it there
            time.sleep(3.0)
            deadline = time.monotonic() + 20  # (until it has: before, a cancel is only passed on)
            while (job := client.cancel(job_id)).state != gw.JOB_STATE_CANCELLED and time.monotonic() < deadline:
                time.sleep(0.2)
            return job

        with ThreadPoolExecutor(1) as canceller:
            cancelled = canceller.submit(cancel_soon)
            ended = during_a_gateway_restart(stack, lambda: how_it_ends(client, job_id, timeout_s=90))
        assert cancelled.result().state == gw.JOB_STATE_CANCELLED
        assert ended is not None and ended.state == gw.JOB_STATE_CANCELLED  # not an UNAVAILABLE error


def test_the_cli_says_when_no_gateway_answers(tmp_path):
    import subprocess
    import sys

    from services.devtools.ports import free_ports

    run = subprocess.run([sys.executable, "-m", "services.cli", "submit", "--server", f"127.0.0.1:{free_ports(1)[0]}",
                          "--photo", str(PHOTO), "--script", "Hello.", "--out", str(tmp_path / "out.mp4")],
                         capture_output=True, text=True, timeout=120, cwd=PHOTO.parents[2])
    assert run.returncode == 1 and "cannot reach the gateway" in run.stderr, run.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_wait_gives_up_at_its_timeout(stack):
    with LikenessClient(stack.gateway_address, timeout_s=30, api_key="", tls_ca="") as client:
        job_id = client.submit(photo=client.upload(PHOTO, kind="photo"), script="Never runs.")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            client.wait(job_id, timeout_s=2)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 10
        client.cancel(job_id)


def holder_of(stack, job_id: str) -> str:
    import psycopg

    with psycopg.connect(stack.pg.dsn()) as conn:
        return conn.execute("SELECT holder FROM jobs WHERE job_id = %s", (job_id,)).fetchone()[0]


def test_any_gateway_replica_answers_for_a_job_another_one_runs(stack):
    """Two gateway replicas on one store (prod runs 2..6 behind a LoadBalancer): a client whose
    connection lands on the other replica still gets, watches, cancels and deletes its job."""
    other = stack.start_replica("gateway")
    with LikenessClient(stack.gateway_address, timeout_s=30, api_key="", tls_ca="") as first, \
            LikenessClient(other.address, timeout_s=30, api_key="", tls_ca="") as second:
        job_id = first.submit(photo=first.upload(PHOTO, kind="photo"), script="Which one are you?")
        assert second.get(job_id).state == gw.JOB_STATE_QUEUED  # from the record the first one saved
        assert [j.job_id for j in second.jobs()][:1] == [job_id]  # listed by either replica
        assert [j.job_id for j in second.jobs(gw.JOB_STATE_QUEUED, page_size=1)][:1] == [job_id]
        request = dict(photo=first.upload(PHOTO, kind="photo"), script="Once only.", client_request_id="rq-1")
        retried = first.submit(**request)
        assert second.submit(**request) == retried  # a retry that reached the other replica
        first.cancel(retried)
        with pytest.raises(grpc.RpcError) as caught:
            second.get("f" * 32)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

        with ThreadPoolExecutor(1) as pool:
            ended = pool.submit(how_it_ends, second, job_id, 60)
            time.sleep(1.5)
            assert not ended.done()  # watching the other replica's job
            second.cancel(job_id)  # asked of the replica that does not run it: the database tells
            assert ended.result(timeout=30).state == gw.JOB_STATE_CANCELLED
            assert first.get(job_id).state == gw.JOB_STATE_CANCELLED
        deleted = second.delete_job(job_id)  # a finished job: its row goes from either replica
        assert isinstance(deleted, list)
        for replica in (first, second):
            with pytest.raises(grpc.RpcError) as caught:
                replica.get(job_id)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert job_id not in [j.job_id for j in replica.jobs()]

        # The first replica dies with a job queued: a queued job belongs to no replica (the database
        # queue is shared), so the second still lists, runs or cancels it.
        orphan = first.submit(photo=first.upload(PHOTO, kind="photo"), script="Who runs me now?")
        assert holder_of(stack, orphan) == ""
        stack.kill_service("gateway", signal.SIGKILL)
        assert orphan in [j.job_id for j in second.jobs(gw.JOB_STATE_QUEUED)]
        assert second.cancel(orphan).state == gw.JOB_STATE_CANCELLED
        stack.start_service("gateway")  # (for the module's other tests)


def test_an_object_storage_outage_is_unavailable_and_the_gateway_recovers():
    """S3 down: calls that need it answer UNAVAILABLE (the client's cue to retry), not UNKNOWN; the
    gateway keeps serving, and runs what is submitted once S3 is back (on the same address)."""
    env = {"LIKENESS_MAX_CONCURRENT_JOBS": "0", "LIKENESS_S3_MAX_ATTEMPTS": "2", "LIKENESS_JOB_LEASE_S": "2"}
    with LocalPlatform(env=env, only=("gateway",)) as stack, \
            LikenessClient(stack.gateway_address, timeout_s=30, api_key="", tls_ca="") as client:
        photo = client.upload(PHOTO, kind="photo")
        job_id = client.submit(photo=photo, script="Before the outage.")
        stack.s3._fixed_port = stack.s3.port  # (come back where the gateway looks)
        stack.s3.stop()
        assert client.get(job_id).state == gw.JOB_STATE_QUEUED  # job records live in PostgreSQL
        for call in (lambda: client.stub.SubmitVideo(client.video_request(photo=photo, script="During."), timeout=30),):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
            assert "object storage unreachable" in caught.value.details()
        assert client.voices()  # the gateway itself is fine
        stack.s3.start()
        assert client.get(job_id).state == gw.JOB_STATE_QUEUED
        after = client.submit(photo=photo, script="After the outage.")
        assert [j.job_id for j in client.jobs()][:2] == [after, job_id]
        assert stack.services["gateway"].proc.poll() is None  # the same process throughout
