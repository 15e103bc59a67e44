"""The gateway's control plane on real processes (a gateway, PostgreSQL, S3; no model services): held
streams cost no thread, stalled uploads are closed, start-up does not grow with the job history, the
per-principal stream cap, two replicas starting at once on an empty database."""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import grpc
import psycopg
from psycopg.types.json import Jsonb
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from likeness_client import LikenessClient
from services.common.infra import grpc_errors
from likeness_client.proto.likeness.v1 import gateway_pb2 as gw, gateway_pb2_grpc
from services.pipeline import Stored, VideoRequest
from services.devtools.platform import LocalPlatform

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "photos" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def stack():
    env = {"LIKENESS_MAX_CONCURRENT_JOBS": "0", "LIKENESS_MAX_QUEUED_JOBS": "100", "LIKENESS_STREAM_IDLE_S": "3",
           "LIKENESS_MAX_STREAMS_PER_PRINCIPAL": "200"}
    with LocalPlatform(env=env, only=("gateway",)) as running:
        yield running


def timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_idle_watches_and_stalled_uploads_block_nothing(stack):
    """64 held WatchJob streams and 16 uploads that sent a header and stalled: health, GetJob and
    SubmitVideo still answer within 1 s (the synchronous server had 8 threads: the 9th stream froze it);
    the stalled uploads are closed after LIKENESS_STREAM_IDLE_S."""
    with LikenessClient(stack.gateway_address, timeout_s=30, api_key="", tls_ca="") as client:
        photo = client.upload(PHOTO, kind="photo")
        job_id = client.submit(photo=photo, script="Watch me.")  # stays queued (no workers)
        channel = grpc.insecure_channel(stack.gateway_address)
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        watches = [stub.WatchJob(gw.WatchJobRequest(job_id=job_id), timeout=60) for _ in range(64)]
        for watch in watches[:8]:
            assert next(watch).job.job_id == job_id  # each one is open and answered
        ends: list[tuple[grpc.StatusCode, str, float]] = []
        started = time.monotonic()

        def stall():
            header = gw.UploadAssetRequest(header=gw.UploadAssetHeader(kind=gw.ASSET_KIND_PHOTO, sha256="0" * 64,
                                                                       size_bytes=10, content_type="image/png"))
            yield header
            time.sleep(30)  # never sends its chunks

        def upload():
            try:
                stub.UploadAsset(stall(), timeout=60)
            except grpc.RpcError as exc:
                ends.append((exc.code(), exc.details(), time.monotonic() - started))

        threads = [threading.Thread(target=upload, daemon=True) for _ in range(16)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        health = health_pb2_grpc.HealthStub(channel)
        probes = grpc.insecure_channel(f"127.0.0.1:{stack.services['gateway'].health_port}")
        probe = health_pb2_grpc.HealthStub(probes)  # the kubelet's port: threads of its own
        for _ in range(3):
            assert timed(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=1)) < 1.0
            assert probe.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING
            assert timed(lambda: client.stub.GetJob(gw.GetJobRequest(job_id=job_id), timeout=1)) < 1.0
            assert timed(lambda: client.stub.SubmitVideo(client.video_request(photo=photo, script="And me."),
                                                         timeout=1)) < 1.0
        for thread in threads:
            thread.join(timeout=15)
        assert len(ends) == 16
        assert {code for code, _, _ in ends} == {grpc.StatusCode.DEADLINE_EXCEEDED}
        assert all(2.5 < at < 10 for _, _, at in ends) and "LIKENESS_STREAM_IDLE_S" in ends[0][1]
        client.cancel(job_id)
        finals = [[r.job.state for r in watch][-1] for watch in watches]  # the cancel reached every watcher
        assert set(finals) == {gw.JOB_STATE_CANCELLED}
        for watch in watches:
            watch.cancel()
        channel.close()
        probes.close()


def test_silent_live_callers_hold_no_thread_and_are_closed(stack):
    """40 LiveVideo callers that open the stream and send nothing (more than the gateway's 32 pool
    threads, which each of them held for good before): health, GetJob and SubmitVideo still answer
    within 1 s; the silent streams fill the per-principal cap of 40 (a 41st stream is refused), end with
    DEADLINE_EXCEEDED after LIKENESS_STREAM_IDLE_S, and their places are free again."""
    replica = stack.start_replica("gateway", {"LIKENESS_MAX_STREAMS_PER_PRINCIPAL": "40"})
    stop = threading.Event()
    try:
        with LikenessClient(replica.address, timeout_s=30, api_key="", tls_ca="") as client:
            photo = client.upload(PHOTO, kind="photo")
            job_id = client.submit(photo=photo, script="Still answered.")
            ends: list[tuple[grpc.StatusCode, str, float]] = []
            started = time.monotonic()

            def silent():
                stop.wait(60)  # never sends its header, never closes
                yield from ()

            def live():
                try:
                    next(client.stub.LiveVideo(silent(), timeout=60))
                except grpc.RpcError as exc:
                    ends.append((exc.code(), exc.details(), time.monotonic() - started))

            threads = [threading.Thread(target=live, daemon=True) for _ in range(40)]
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            health = health_pb2_grpc.HealthStub(client.channel)
            for _ in range(3):
                assert timed(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=1)) < 1.0
                assert timed(lambda: client.stub.GetJob(gw.GetJobRequest(job_id=job_id), timeout=1)) < 1.0
                assert timed(lambda: client.stub.SubmitVideo(client.video_request(photo=photo, script="And me."),
                                                             timeout=1)) < 1.0
            with pytest.raises(grpc.RpcError) as caught:  # the silent streams hold their places meanwhile
                next(client.stub.WatchJob(gw.WatchJobRequest(job_id=job_id), timeout=10))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for thread in threads:
                thread.join(timeout=15)
            assert len(ends) == 40
            assert {code for code, _, _ in ends} == {grpc.StatusCode.DEADLINE_EXCEEDED}
            assert all(2.5 < at < 10 for _, _, at in ends) and "LIKENESS_STREAM_IDLE_S" in ends[0][1]
            watch = client.stub.WatchJob(gw.WatchJobRequest(job_id=job_id), timeout=10)
            assert next(watch).job.job_id == job_id  # their places are free again
            watch.cancel()
            assert client.get(job_id).job_id == job_id
    finally:
        stop.set()
        stack.kill_service(replica)


def test_open_streams_are_capped_per_principal(stack):
    replica = stack.start_replica("gateway", {"LIKENESS_MAX_STREAMS_PER_PRINCIPAL": "3"})
    with LikenessClient(replica.address, timeout_s=30, api_key="", tls_ca="") as client:
        job_id = client.submit(photo=client.upload(PHOTO, kind="photo"), script="Capped.")
        watches = [client.stub.WatchJob(gw.WatchJobRequest(job_id=job_id), timeout=30) for _ in range(3)]
        for watch in watches:
            next(watch)
        with pytest.raises(grpc.RpcError) as caught:
            next(client.stub.WatchJob(gw.WatchJobRequest(job_id=job_id), timeout=10))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert grpc_errors.retry_delay(caught.value) == 2.0
        assert client.get(job_id).job_id == job_id  # unary calls are not streams
        watches[0].cancel()
        time.sleep(0.3)
        fourth = client.stub.WatchJob(gw.WatchJobRequest(job_id=job_id), timeout=10)
        assert next(fourth).job.job_id == job_id  # a closed stream frees its place
        client.cancel(job_id)
        for watch in (*watches[1:], fourth):
            watch.cancel()
    stack.kill_service(replica)


def test_start_up_does_not_grow_with_the_job_history(stack):
    """A replica starting on a database with 10,000 finished jobs is up as fast as one on none (the old
    gateway read every record at start); ListJobs pages over them."""
    # (the better of two starts each: a start now takes ~1 s, and a busy 2-core machine can add one)
    base = startup_time(stack)
    with psycopg.connect(stack.pg.dsn()) as conn:
        conn.execute(
            "INSERT INTO jobs (job_id, owner, state, request, created_at, updated_at) "
            "SELECT md5(i::text || %s), 'history', 'SUCCEEDED', %s, "
            "now() - make_interval(secs => i), now() - make_interval(secs => i) FROM generate_series(1, 10000) i",
            (uuid.uuid4().hex, Jsonb(VideoRequest(photo=Stored("assets/" + "a" * 64), script="Old.").to_record())))
    loaded = startup_time(stack)
    assert loaded < base + 1.0, (base, loaded)
    with LikenessClient(stack.gateway_address, timeout_s=30, api_key="", tls_ca="") as client:
        page = client.stub.ListJobs(gw.ListJobsRequest(page_size=500), timeout=10)
        assert len(page.jobs) == 500 and page.next_page_token
        second = client.stub.ListJobs(gw.ListJobsRequest(page_size=500, page_token=page.next_page_token), timeout=10)
        assert not {j.job_id for j in page.jobs} & {j.job_id for j in second.jobs}
        assert page.jobs[-1].create_time.ToNanoseconds() >= second.jobs[0].create_time.ToNanoseconds()
        with pytest.raises(grpc.RpcError) as caught:
            client.stub.ListJobs(gw.ListJobsRequest(page_token="12"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def startup_time(stack, tries: int = 2) -> float:
    """Seconds from launch to a healthy gateway, the best of `tries` (a busy 2-core machine adds noise
    to one start; the history would slow every one)."""
    times = []
    for _ in range(tries):
        started = time.monotonic()
        replica = stack.start_replica("gateway")
        times.append(time.monotonic() - started)
        stack.kill_service(replica)
    return min(times)


def test_two_replicas_starting_at_once_on_an_empty_database_both_come_up(stack):
    """Both apply the migrations under one advisory lock: neither fails on the other's tables."""
    database = f"empty_{uuid.uuid4().hex[:8]}"
    dsn = stack.pg.create_database(database)
    replicas = [stack.new_replica("gateway") for _ in range(2)]
    try:
        for replica in replicas:
            stack.launch("gateway", replica, extra_env={"LIKENESS_DATABASE_URL": dsn})
        for replica in replicas:
            stack.wait_healthy("gateway", replica)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 1
    finally:
        for replica in replicas:
            stack.kill_service(replica)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (a decompression bomb's first bytes; no pixels follow)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_input_is_invalid_argument_with_a_bounded_message(stack):
    """Object keys that climb out or are unbounded, a 10,000-character language, an image that declares
    400 million pixels (Pillow's own bomb error was UNKNOWN), bytes Pillow cannot read (its message named
    the buffer's repr): each is INVALID_ARGUMENT on its field, the message bounded and free of reprs."""
    import hashlib

    with LikenessClient(stack.gateway_address, timeout_s=30, api_key="", tls_ca="") as client:
        photo = client.upload(PHOTO, kind="photo")
        cases = []
        for key in ("../assets/" + photo, "/etc/passwd", "assets\\x", "assets/\0x", "a/" * 600):
            request = client.video_request(photo=photo, script="Hi.")
            request.photo.ClearField("asset_id")
            request.photo.object.key = key
            cases.append(("photo.object.key", lambda r=request: client.stub.SubmitVideo(r, timeout=10)))
        long_language = client.video_request(photo=photo, script="Hi.", language="x" * 10_000)
        cases.append(("language", lambda: client.stub.SubmitVideo(long_language, timeout=10)))
        for data in (png_declaring(20_000, 20_000), b"\x89PNG\r\n\x1a\n not an image"):
            header = gw.UploadAssetHeader(kind=gw.ASSET_KIND_PHOTO, sha256=hashlib.sha256(data).hexdigest(),
                                          size_bytes=len(data), content_type="image/png")
            messages = [gw.UploadAssetRequest(header=header), gw.UploadAssetRequest(chunk=data)]
            cases.append(("photo", lambda m=messages: client.stub.UploadAsset(iter(m), timeout=10)))
        for field, call in cases:
            with pytest.raises(grpc.RpcError) as caught:
                call()
            error = caught.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.code(), error.details())
            assert field in [f for f, _ in grpc_errors.field_violations(error)], error.details()
            assert len(error.details()) <= 1024 and " object at 0x" not in error.details()  # (bounded, whatever came in)
            assert "127.0.0.1" not in error.details() and "/etc/passwd" not in error.details()


def test_a_client_request_id_used_again_for_another_request_is_already_exists(stack):
    with LikenessClient(stack.gateway_address, timeout_s=30, api_key="", tls_ca="") as client:
        photo = client.upload(PHOTO, kind="photo")
        first = client.stub.SubmitVideo(client.video_request(photo=photo, script="One.", client_request_id="rq-7"),
                                        timeout=10)
        again = client.stub.SubmitVideo(client.video_request(photo=photo, script="One.", client_request_id="rq-7"),
                                        timeout=10)
        assert again.existing and again.job_id == first.job_id  # the same request: the same job
        with pytest.raises(grpc.RpcError) as caught:
            client.stub.SubmitVideo(client.video_request(photo=photo, script="Two.", client_request_id="rq-7"),
                                    timeout=10)
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert [f for f, _ in grpc_errors.field_violations(caught.value)] == ["client_request_id"]
        client.cancel(first.job_id)
