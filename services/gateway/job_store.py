"""Job records in object storage, shared by gateway replicas: the records (jobs/<id>/job.json), the
leases on unfinished jobs (active-jobs/<id>), the client_request_id index (requests/<sha256>), the
job index by owner and time (job-index/<owner>/<inverted ms>-<id>) and cancel requests for a job
another replica runs (cancel-requests/<id>)."""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from services.common.storage import ObjectNotFoundError, Storage
from services.gateway.jobs import Job, JobManager, owner_key, request_key

log = logging.getLogger(__name__)


class StorageJobStore:
    """Job records as JSON objects (jobs/<id>/job.json): a restarted gateway keeps its jobs."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def save(self, job: Job) -> None:
        self.storage.put_bytes(f"jobs/{job.job_id}/job.json", job.to_json().encode(), "application/json")

    def load_all(self) -> list[Job]:
        """Every record, read 8 at a time (a gateway starting reads a month of jobs; the pool holds 10)."""
        keys = [key for key in self.storage.list("jobs/") if key.endswith("/job.json")]

        def read(key: str) -> Job | None:
            try:
                return Job.from_json(self.storage.get_bytes(key).decode())
            except ObjectNotFoundError:  # deleted since the listing
                return None

        with ThreadPoolExecutor(8) as pool:
            return [job for job in pool.map(read, keys) if job is not None]

    def exists(self, job_id: str) -> bool:
        return self.storage.exists(f"jobs/{job_id}/job.json")

    def load(self, job_id: str) -> Job | None:
        """One record as last saved (a job another gateway replica runs), None when there is none."""
        try:
            return Job.from_json(self.storage.get_bytes(f"jobs/{job_id}/job.json").decode())
        except ObjectNotFoundError:
            return None

    def delete(self, job: Job) -> None:
        """The record first: an index entry left by a failure after it points at nothing (skipped).
        (Owner, creation time and client_request_id, which name the index entries, never change.)"""
        self.storage.delete(f"jobs/{job.job_id}/job.json")
        self.storage.delete(_index_key(job))
        if job.client_request_id:
            self.storage.delete(f"requests/{request_key(job.owner, job.client_request_id)}")
        self.release(job.job_id)

    # The index: an empty object per job, named so that one listing per owner gives its jobs newest first.
    def index_job(self, job: Job) -> None:
        self.storage.put_bytes(_index_key(job), b"", "text/plain")

    def list_index(self, owner: str | None) -> list[tuple[float, str]]:
        entries = []
        for key in self.storage.list(INDEX_PREFIX if owner is None else f"{INDEX_PREFIX}{owner_key(owner)}/"):
            inverted, _, job_id = key.rsplit("/", 1)[1].partition("-")
            if inverted.isdigit() and job_id:
                entries.append(((NEWEST_MS - int(inverted)) / 1000, job_id))
        return entries

    def reindex(self, jobs: list[Job]) -> None:
        present = set(self.storage.list(INDEX_PREFIX))
        for job in jobs:
            if _index_key(job) not in present:
                self.index_job(job)

    # Leases: an empty object per unfinished job, written again by its holder (its time is the touch).
    def touch(self, job_id: str) -> None:
        self.storage.put_bytes(f"active-jobs/{job_id}", b"", "text/plain")

    def release(self, job_id: str) -> None:
        self.storage.delete(f"active-jobs/{job_id}")

    def leases(self) -> dict[str, float]:
        return {key.removeprefix("active-jobs/"): touched
                for key, touched in self.storage.list_with_times("active-jobs/")}

    # client_request_id -> job id (requests/<sha256 of owner and id>), for a retry reaching another replica.
    def index_request(self, owner: str, client_request_id: str, job_id: str) -> None:
        self.storage.put_bytes(f"requests/{request_key(owner, client_request_id)}", job_id.encode(), "text/plain")

    def find_request(self, owner: str, client_request_id: str) -> str | None:
        try:
            return self.storage.get_bytes(f"requests/{request_key(owner, client_request_id)}").decode()
        except ObjectNotFoundError:
            return None


INDEX_PREFIX = "job-index/"
NEWEST_MS = 10**13 - 1  # (year 2286) inverted creation times sort newest first


def _index_key(job: Job) -> str:
    return f"{INDEX_PREFIX}{owner_key(job.owner)}/{NEWEST_MS - round(job.created_at * 1000):013d}-{job.job_id}"


class CancelRequests:
    """CancelJob for a job another gateway replica runs: a marker object (cancel-requests/<id>) that
    every replica looks for each second; the one running the job cancels it and removes the marker."""

    PREFIX = "cancel-requests/"

    def __init__(self, storage: Storage, manager: JobManager, store: StorageJobStore) -> None:
        self.storage, self.manager, self.store = storage, manager, store

    def request(self, job_id: str) -> None:
        self.storage.put_bytes(f"{self.PREFIX}{job_id}", b"", "text/plain")

    def apply(self) -> None:
        for key in self.storage.list(self.PREFIX):
            job_id = key.removeprefix(self.PREFIX)
            try:
                self.manager.cancel(job_id)
            except KeyError:  # not ours: drop the marker only once nobody can act on it
                job = self.store.load(job_id)
                if job is not None and not job.state.terminal:
                    continue
            self.storage.delete(key)

    def apply_forever(self, interval_s: float = 1.0) -> None:
        while True:
            time.sleep(interval_s)
            try:
                self.apply()
            except Exception:  # storage briefly unreachable: next round
                log.exception("cancel requests not applied")
