"""LIKENESS_RETENTION_DAYS: what is older goes, with all it made; what a job still reads, and a job whose
webhook is pending, waits. The sweep runs on a real S3 server (in-process with a chosen clock), and the
gateway process runs it on its own."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from likeness_client import LikenessClient
from services.gateway import assets
from services.gateway.jobs import JobManager, JobState
from services.gateway.retention import Eraser
from services.pipeline import Stored, VideoRequest
from services.devtools.platform import LocalPlatform

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600.0
A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture
def eraser(storage, database):
    # (jobs stay queued until cancelled)
    manager = JobManager(lambda job, ctx: None, database, max_concurrent=0, request_type=VideoRequest)
    yield Eraser(storage, manager, streaming=lambda: [])
    manager.close()


def photo_request(asset_id: str, **fields) -> VideoRequest:
    return VideoRequest(photo=Stored(f"assets/{asset_id}"), script="Hello.", **fields)


def finished_job(eraser: Eraser, photo: str, **request) -> str:
    job, _ = eraser.manager.submit(photo_request(photo, **request))
    eraser.manager.cancel(job.job_id)
    eraser.storage.put_bytes(f"jobs/{job.job_id}/video.mp4", b"video")
    return job.job_id


def test_old_jobs_and_uploads_go_with_what_they_made(eraser, storage):
    for asset_id in (A, B):
        storage.put_bytes(f"assets/{asset_id}", b"photo " + asset_id.encode())
    storage.put_bytes(f"rigs/{A}-512.npz", b"rig")
    storage.put_bytes(f"voices/{A}.v3.npz", b"profile")
    old_job = finished_job(eraser, A)
    running, _ = eraser.manager.submit(photo_request(B))  # still queued: B is in use

    assert eraser.sweep(max_age_s=HOUR) == []  # nothing is an hour old yet
    deleted = set(eraser.sweep(max_age_s=HOUR, now=time.time() + 2 * HOUR))
    assert {f"jobs/{old_job}/video.mp4", f"assets/{A}", f"rigs/{A}-512.npz",
            f"voices/{A}.v3.npz"} == deleted
    assert storage.exists(f"assets/{B}") and eraser.manager.get(running.job_id).state is JobState.QUEUED
    with pytest.raises(KeyError):
        eraser.manager.get(old_job)

    eraser.manager.cancel(running.job_id)  # B's job ends: B goes once old, like the job
    assert set(eraser.sweep(max_age_s=HOUR, now=time.time() + 2 * HOUR)) == {
        f"assets/{B}"}
    assert storage.list() == []


def test_a_job_whose_webhook_is_pending_is_kept(eraser, storage):
    storage.put_bytes(f"assets/{C}", b"photo")
    waiting = finished_job(eraser, C, webhook_url="https://backend.example/hook")
    later = time.time() + 2 * HOUR
    assert f"jobs/{waiting}/video.mp4" not in eraser.sweep(max_age_s=HOUR, now=later)
    eraser.manager.set_webhook(waiting, {"state": "DELIVERED", "attempts": 1, "http_status": 204, "error": ""})
    assert f"jobs/{waiting}/video.mp4" in eraser.sweep(max_age_s=HOUR, now=later)


def test_each_principals_claim_ages_on_its_own(eraser, storage):
    storage.put_bytes(f"assets/{A}", b"photo")
    storage.put_bytes(assets.owner_key(A, "studio"), b"")
    storage.put_bytes(assets.owner_key(A, "ads"), b"")
    later = time.time() + 2 * HOUR
    # Both claims are old: the first sweep step drops one, the last takes the bytes.
    deleted = eraser.sweep(max_age_s=HOUR, now=later)
    assert set(deleted) == {assets.owner_key(A, "studio"), assets.owner_key(A, "ads"), f"assets/{A}"}

    storage.put_bytes(f"assets/{B}", b"photo")
    storage.put_bytes(assets.owner_key(B, "studio"), b"")
    deleted = eraser.sweep(max_age_s=HOUR, now=later)
    assert set(deleted) == {assets.owner_key(B, "studio"), f"assets/{B}"}
    storage.put_bytes(f"assets/{C}", b"photo")
    storage.put_bytes(assets.owner_key(C, "ads"), b"")  # renewed by a fresh upload: younger than an hour
    assert eraser.sweep(max_age_s=HOUR) == [] and storage.exists(f"assets/{C}")


def test_the_gateway_sweeps_on_its_own(tmp_path):
    """A gateway process with a 2-second retention: an upload disappears from storage by itself."""
    with LocalPlatform(env={"LIKENESS_RETENTION_DAYS": str(2 / 86400)}, only=("gateway",)) as stack:
        with LikenessClient(stack.gateway_address, timeout_s=20, api_key="", tls_ca="") as client:
            photo = client.upload(ROOT / "assets" / "photos" / "grace_hopper.jpg", kind="photo")
        storage = stack.storage()
        assert storage.exists(f"assets/{photo}")
        deadline = time.monotonic() + 30
        while storage.exists(f"assets/{photo}"):
            assert time.monotonic() < deadline, stack.log_tail("gateway")
            time.sleep(0.5)
        assert "retention: deleted" in stack.log_tail("gateway", 200)


def test_a_replica_sweeps_the_jobs_another_replica_ran(storage, database):
    """Gateway replicas share the store: an old job finished by a replica that has since gone (or is
    alive and still holds it in memory) is swept by any other, and an upload a job on another replica
    still reads is kept."""
    run_by = JobManager(lambda job, ctx: None, database, max_concurrent=0, request_type=VideoRequest)
    sweeper = Eraser(storage, JobManager(lambda job, ctx: None, database, max_concurrent=0, request_type=VideoRequest),
                     streaming=lambda: [])
    for asset_id in (A, B):
        storage.put_bytes(f"assets/{asset_id}", b"photo")
    done, _ = run_by.submit(photo_request(A))
    run_by.cancel(done.job_id)
    storage.put_bytes(f"jobs/{done.job_id}/video.mp4", b"video")
    running, _ = run_by.submit(photo_request(B))  # queued on the other replica: B is in use
    deleted = set(sweeper.sweep(max_age_s=HOUR, now=time.time() + 2 * HOUR))
    assert {f"jobs/{done.job_id}/video.mp4", f"assets/{A}"} == deleted
    assert storage.exists(f"assets/{B}") and [j.job_id for j in run_by.list()[0]] == [running.job_id]
    run_by.close()
    sweeper.manager.close()
