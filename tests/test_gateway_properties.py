"""Property-based probing of the real gateway (Hypothesis): SubmitVideo, UploadAsset, GetJob and ListJobs
with arbitrary field values answer one of the documented codes (never UNKNOWN or INTERNAL), with a
bounded message that holds no internal address and no Python repr, and health stays SERVING."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings, strategies as st

from likeness_client import LikenessClient
from likeness_client.proto.likeness.v1 import common_pb2, gateway_pb2 as gw, gateway_pb2_grpc
from services.devtools.platform import LocalPlatform

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "photos" / "grace_hopper.jpg"
DOCUMENTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ALREADY_EXISTS,
              grpc.StatusCode.FAILED_PRECONDITION}
LEAKS = re.compile(r"\b(?:127\.0\.0\.1|0\.0\.0\.0|localhost):\d+|object at 0x|HTTPConnection\(|Traceback")
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def gateway():
    env = {"LIKENESS_MAX_CONCURRENT_JOBS": "0", "LIKENESS_MAX_QUEUED_JOBS": "10000"}  # jobs stay queued
    with LocalPlatform(env=env, only=("gateway",)) as stack, \
            LikenessClient(stack.gateway_address, timeout_s=30, api_key="", tls_ca="") as client:
        channel = grpc.insecure_channel(stack.gateway_address)  # (no client retries: one answer per call)
        stack.stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        stack.health = health_pb2_grpc.HealthStub(channel)
        stack.photo = client.upload(PHOTO, kind="photo")
        yield stack
        channel.close()


def answer(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def check(gateway, code: grpc.StatusCode, details: str) -> None:
    assert code in DOCUMENTED, (code, details[:300])
    assert len(details) <= 1024, len(details)
    assert not LEAKS.search(details), details[:300]
    reply = gateway.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


text = st.text(max_size=300)
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10, 10**6))


@st.composite
def submissions(draw, photo: str) -> gw.SubmitVideoRequest:
    request = gw.SubmitVideoRequest(client_request_id=draw(st.text(max_size=200)), language=draw(text),
                                    voice=draw(text), transcript=draw(st.text(max_size=50)),
                                    webhook_url=draw(st.one_of(text, st.just("https://localhost/x"))),
                                    auto_motions=draw(st.booleans()), export_blendshapes=draw(st.booleans()),
                                    emotion=draw(st.integers(-3, 40)), expressiveness=draw(st.integers(-3, 40)))
    request.speed = float(draw(numbers))
    which = draw(st.sampled_from(["id", "random_id", "key", "none"]))
    if which == "id":
        request.photo.asset_id = photo
    elif which == "random_id":
        request.photo.asset_id = draw(text)
    elif which == "key":
        request.photo.object.key = draw(st.one_of(text, st.just("assets/" + photo), st.just("../" + photo)))
        request.photo.object.bucket = draw(st.sampled_from(["", "likeness", "other"]))
    speech = draw(st.sampled_from(["script", "long", "audio", "none"]))
    if speech == "script":
        request.script = draw(st.text(max_size=400))
    elif speech == "long":
        request.script = "word " * draw(st.integers(1000, 3000))
    elif speech == "audio":
        request.driving_audio.asset_id = draw(st.sampled_from([photo, "0" * 64]))
    if draw(st.booleans()):
        request.seed = draw(st.integers(0, 2**32 - 1))
    video = request.video
    if draw(st.booleans()):
        video.resolution = draw(st.integers(-2**31, 2**31 - 1))
    else:
        video.frame_size.width = draw(st.integers(-2**31, 2**31 - 1))
        video.frame_size.height = draw(st.integers(-2**31, 2**31 - 1))
    video.fps = float(draw(numbers))
    video.aspect_ratio = draw(st.integers(-3, 40))
    video.fit = draw(st.integers(-3, 40))
    video.burn_in_captions = draw(st.booleans())
    if draw(st.booleans()):
        video.face_at.x, video.face_at.y = float(draw(numbers)), float(draw(numbers))
    if draw(st.booleans()):
        video.keypoints.points.extend(common_pb2.Point(x=float(draw(numbers)), y=float(draw(numbers)))
                                      for _ in range(draw(st.integers(0, 7))))
    return request


@SETTINGS
@given(data=st.data())
def test_any_submission_answers_a_documented_code(gateway, data):
    request = data.draw(submissions(gateway.photo))
    code, details = answer(lambda: gateway.stub.SubmitVideo(request, timeout=30))
    check(gateway, code, details)


@SETTINGS
@given(kind=st.integers(-2, 8), sha=st.one_of(text, st.just("0" * 64)), size=st.integers(-5, 2**40),
       chunks=st.lists(st.binary(max_size=2048), max_size=4), content_type=text,
       honest=st.booleans(), extra_header=st.booleans())
def test_any_upload_answers_a_documented_code(gateway, kind, sha, size, chunks, content_type, honest,
                                              extra_header):
    data = b"".join(chunks)
    if honest:  # the header matches the bytes: only the content is arbitrary
        sha, size = hashlib.sha256(data).hexdigest(), len(data)
    header = gw.UploadAssetHeader(kind=kind, sha256=sha, size_bytes=size, content_type=content_type)
    messages = [gw.UploadAssetRequest(header=header)] + [gw.UploadAssetRequest(chunk=c) for c in chunks]
    if extra_header:
        messages.append(gw.UploadAssetRequest(header=header))
    code, details = answer(lambda: gateway.stub.UploadAsset(iter(messages), timeout=30))
    check(gateway, code, details)


@SETTINGS
@given(job_id=st.one_of(st.text(max_size=5000), st.just("f" * 32)), page_token=text,
       page_size=st.integers(-2**31, 2**31 - 1), states=st.lists(st.integers(-3, 40), max_size=5))
def test_any_lookup_answers_a_documented_code(gateway, job_id, page_token, page_size, states):
    for call in (lambda: gateway.stub.GetJob(gw.GetJobRequest(job_id=job_id), timeout=30),
                 lambda: gateway.stub.CancelJob(gw.CancelJobRequest(job_id=job_id), timeout=30),
                 lambda: list(gateway.stub.WatchJob(gw.WatchJobRequest(job_id=job_id), timeout=30)),
                 lambda: gateway.stub.ListJobs(gw.ListJobsRequest(page_token=page_token, page_size=page_size,
                                                                  states=states), timeout=30)):
        code, details = answer(call)
        check(gateway, code, details)
