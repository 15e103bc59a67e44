"""The public API's answers to bad input on the real platform (tests/platform_stack.py): every
violation INVALID_ARGUMENT with its field, unknown jobs NOT_FOUND, faces that are not there."""
from __future__ import annotations


import grpc
import pytest

from likeness_client import JobFailedError
from services.common.infra.grpc_errors import field_violations
from likeness_client.proto.likeness.v1 import common_pb2, gateway_pb2 as gw
from tests.platform_stack import *  # noqa: F401,F403 (constants and helpers; the fixtures: conftest.py)


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("change,field", [
    (lambda r: r.ClearField("photo"), "photo"),
    (lambda r: r.photo.CopyFrom(gw.AssetSource(asset_id="0" * 64)), "photo"),
    (lambda r: setattr(r, "script", "   "), "script"),
    (lambda r: setattr(r, "script", "a" * 6000), "script"),
    (lambda r: setattr(r.video, "resolution", 99), "video.resolution"),
    (lambda r: setattr(r.video, "fps", 500), "video.fps"),
    (lambda r: r.voice_sample.CopyFrom(gw.AssetSource(asset_id="0" * 64)), "voice_sample"),
    (lambda r: setattr(r.video, "aspect_ratio", 99), "video.aspect_ratio"),
    (lambda r: setattr(r.video.background, "color", "blue-ish"), "video.background.color"),
    (lambda r: setattr(r, "voice", "nope"), "voice"),
    (lambda r: setattr(r, "webhook_url", "ftp://hooks.example/likeness"), "webhook_url"),
    (lambda r: setattr(r, "speed", 3.0), "speed"),
    (lambda r: setattr(r, "script", "[happy 7] Hello."), "script"),
    (lambda r: setattr(r, "script", "Hello. [nod 2]"), "script"),
    (lambda r: setattr(r, "script", "<speak>Hello <b>there</speak>"), "script"),
    (lambda r: r.motions.add(time_code=1.0, motion=99), "motions[0].motion"),
    (lambda r: r.emotions.add(time_code=-1.0, emotion=common_pb2.EMOTION_SAD), "emotions[0].time_code"),
    (lambda r: r.motions.add(time_code=1.0, motion=common_pb2.MOTION_NOD, strength=3.0), "motions[0].strength"),
    (lambda r: setattr(r, "script", "Hello [pause 99] there."), "script"),
    (lambda r: setattr(r, "script", "Привет, как дела?"), "language"),  # en-us would spell it out
    (lambda r: (r.driving_audio.CopyFrom(gw.AssetSource(asset_id="0" * 64)),
                setattr(r.video, "burn_in_captions", True)), "video.burn_in_captions"),
    (lambda r: (r.driving_audio.CopyFrom(gw.AssetSource(asset_id="0" * 64)), setattr(r, "transcript", "[happy]"),
                setattr(r.video, "burn_in_captions", True)), "video.burn_in_captions"),
])
def test_invalid_submission_is_invalid_argument_with_the_field(client, photo_id, change, field):
    request = gw.SubmitVideoRequest(photo=gw.AssetSource(asset_id=photo_id), script="Hello.",
                                    video=common_pb2.VideoSpec(resolution=256))
    change(request)
    code, violations = violations_of(lambda: client.stub.SubmitVideo(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in violations], violations


def test_every_violation_is_reported_at_once(client):
    request = gw.SubmitVideoRequest(script="", video=common_pb2.VideoSpec(resolution=7, fps=1000))
    code, violations = violations_of(lambda: client.stub.SubmitVideo(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"photo", "script", "video.resolution", "video.fps"} <= {f for f, _ in violations}


@pytest.mark.parametrize("case", ["sha256", "size", "not an image", "first message"])
def test_invalid_upload_is_invalid_argument(client, case):
    import hashlib

    data = b"definitely not a picture" if case == "not an image" else PHOTO.read_bytes()
    header = gw.UploadAssetHeader(kind=gw.ASSET_KIND_PHOTO, size_bytes=len(data),
                                  sha256=hashlib.sha256(data).hexdigest())
    if case == "sha256":
        header.sha256 = "ab" * 32
    if case == "size":
        header.size_bytes = len(data) + 1
    messages = [gw.UploadAssetRequest(header=header), gw.UploadAssetRequest(chunk=data)]
    if case == "first message":
        messages = messages[::-1]
    code, violations = violations_of(lambda: client.stub.UploadAsset(iter(messages), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and violations, violations


def test_unknown_job_is_not_found(client):
    with pytest.raises(grpc.RpcError) as info:
        client.get("no-such-job")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_photo_without_a_face_fails_the_job_with_the_field(client):
    cat = client.upload(ROOT / "assets/photos/cat.png", kind="photo")
    with pytest.raises(JobFailedError) as info:
        client.wait(client.submit(photo=cat, script="Meow.", resolution=256), timeout_s=120)
    job = info.value.job
    assert job.state == gw.JOB_STATE_FAILED and job.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert field_violations(job.error)[0][0] == "photo" and "no face" in job.error.message


def test_a_point_picks_the_face_in_a_photo_of_several_people(client, tmp_path):
    """VideoSpec.face_at: in a photo of two people the face at the point talks; a point on no face fails
    the job with the field."""
    from PIL import Image

    from tests.test_render import two_faces

    path = tmp_path / "two.png"
    Image.fromarray(two_faces()).save(path)
    photo = client.upload(path, kind="photo")
    job = client.wait(client.submit(photo=photo, script="Hi.", resolution=128, face_at=(225, 125)), timeout_s=120)
    assert job.state == gw.JOB_STATE_SUCCEEDED
    assert "2 faces found; animating the one at (225, 125)" in job.warnings, job.warnings
    with pytest.raises(JobFailedError) as info:
        client.wait(client.submit(photo=photo, script="Hi.", resolution=128, face_at=(10, 500)), timeout_s=120)
    error = info.value.job.error
    assert field_violations(error)[0][0] == "video.face_at" and "no face at (10, 500)" in error.message, error


def test_a_script_asset_that_is_not_text_is_invalid_argument(stack, client, photo_id):
    """A script asset is read as UTF-8 at submission; bytes that are not (an object stored some other way
    than UploadAsset, which refuses them) are INVALID_ARGUMENT on script_asset, the message bounded."""
    import hashlib

    data = b"\xff\xfe not text \x80" * 4
    asset_id = hashlib.sha256(data).hexdigest()
    stack.storage().put_bytes(f"assets/{asset_id}", data, "text/plain")
    request = gw.SubmitVideoRequest(photo=gw.AssetSource(asset_id=photo_id),
                                    script_asset=gw.AssetSource(asset_id=asset_id))
    code, violations = violations_of(lambda: client.stub.SubmitVideo(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violations == [("script_asset", "is not UTF-8 text")], violations
