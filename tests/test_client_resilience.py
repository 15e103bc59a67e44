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

from services.client import JobFailedError, LikenessClient
from services.common.proto_gen.likeness.v1 import gateway_pb2 as gw
from services.stack import LocalStack

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "photos" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def stack():
    with LocalStack(env={"LIKENESS_MAX_CONCURRENT_JOBS": "0"}, only=("gateway",)) as running:
        yield running


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

        def wait_for_the_end():
            try:
                client.wait(job_id, timeout_s=90)
            except JobFailedError as exc:
                return exc.job
            return None

        def cancel_soon():  # the restarted gateway re-queued the job from its record; end it
            time.sleep(3.0)
            return client.cancel(job_id)

        with ThreadPoolExecutor(1) as canceller:
            cancelled = canceller.submit(cancel_soon)
            ended = during_a_gateway_restart(stack, wait_for_the_end)
        assert cancelled.result().state == gw.JOB_STATE_CANCELLED
        assert ended is not None and ended.state == gw.JOB_STATE_CANCELLED  # not an UNAVAILABLE error


def test_the_cli_says_when_no_gateway_answers(tmp_path):
    import subprocess
    import sys

    from services.common.ports import free_ports

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
