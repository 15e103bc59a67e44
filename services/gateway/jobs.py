"""Asynchronous jobs: bounded concurrency, a bounded queue, idempotent submission, cancel, watch.

The manager knows nothing about gRPC or about what a job does: it runs `run(job, ctx)` on a worker
thread and records state. A `JobStore` (object storage in the platform) keeps every job record, so
a restarted gateway can list old jobs and re-queue unfinished ones; they resume from the last
stage whose output is already stored.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Iterator, Protocol

from services.common.errors import StorageUnavailable

log = logging.getLogger(__name__)


class JobState(str, Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass
class Job:
    job_id: str
    request: dict  # the validated request, JSON-serialisable (asset keys, script, spec, seed, ...)
    client_request_id: str = ""
    owner: str = ""  # the principal that submitted it ("" with API keys off)
    holder: str = ""  # the gateway process (JobManager.instance_id) that runs it
    state: JobState = JobState.QUEUED
    stage: str = ""
    progress: float = 0.0
    message: str = ""
    error_code: str = ""  # a grpc.StatusCode name
    error_field: str = ""
    stage_outputs: dict[str, str] = field(default_factory=dict)  # stage -> object key
    result: dict[str, str] = field(default_factory=dict)  # video_key, blendshapes_key, video facts, captions
    warnings: list[str] = field(default_factory=list)
    attempts: int = 0
    webhook: dict = field(default_factory=dict)  # delivery state, kept by services.gateway.webhooks
    retry_of: str = ""  # the failed or cancelled job this one took over from (RetryJob)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "state": self.state.value})

    @classmethod
    def from_json(cls, text: str) -> "Job":
        """Fields a newer gateway added are ignored (replicas of two versions share the records
        during a rolling update); fields it lacks take their defaults."""
        data = json.loads(text)
        data["state"] = JobState(data["state"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class QueueFull(Exception):
    subject = "job-queue"  # google.rpc.QuotaFailure's subject: what ran out


class PrincipalBusy(QueueFull):
    """One principal already has its share of queued + running jobs (the others still get theirs)."""

    def __init__(self, owner: str, active: int, limit: int) -> None:
        super().__init__(f"{owner!r} has {active} jobs queued or running (limit {limit} per principal); "
                         "retry when one finishes")
        self.subject = f"principal:{owner}"


class JobCancelled(Exception):
    pass


class JobActive(Exception):
    """The job is queued or running (it must be cancelled before it can be deleted)."""


class JobStore(Protocol):
    def save(self, job: Job) -> None: ...
    def load_all(self) -> list[Job]: ...
    def load(self, job_id: str) -> Job | None: ...
    def delete(self, job: Job) -> None: ...  # the record and what indexes it
    # Leases, for gateway replicas sharing one store: the holder of an unfinished job touches it.
    def touch(self, job_id: str) -> None: ...
    def release(self, job_id: str) -> None: ...
    def leases(self) -> dict[str, float]: ...  # job_id -> Unix time of the last touch
    # client_request_id -> job, across replicas (a retried submission may reach another one).
    def index_request(self, owner: str, client_request_id: str, job_id: str) -> None: ...
    def find_request(self, owner: str, client_request_id: str) -> str | None: ...
    # Every job by owner and creation time, across replicas (ListJobs, the retention sweep).
    def index_job(self, job: Job) -> None: ...
    def list_index(self, owner: str | None) -> list[tuple[float, str]]: ...  # (created_at, job_id); None: all
    def reindex(self, jobs: list[Job]) -> None: ...  # index records saved before the index existed


def request_key(owner: str, client_request_id: str) -> str:
    """A fixed-length name for (owner, client_request_id), whatever characters they hold."""
    return hashlib.sha256(f"{owner}\0{client_request_id}".encode()).hexdigest()


def owner_key(owner: str) -> str:
    """A fixed-length name for a principal, whatever characters it holds."""
    return hashlib.sha256(f"owner\0{owner}".encode()).hexdigest()[:32]


class MemoryJobStore:
    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}
        self.touched: dict[str, float] = {}
        self.requests: dict[str, str] = {}
        self.index: dict[str, tuple[str, float]] = {}  # job_id -> (owner, created_at)

    def save(self, job: Job) -> None:
        self.jobs[job.job_id] = job.to_json()

    def load_all(self) -> list[Job]:
        return [Job.from_json(text) for text in list(self.jobs.values())]

    def load(self, job_id: str) -> Job | None:
        text = self.jobs.get(job_id)
        return None if text is None else Job.from_json(text)

    def touch(self, job_id: str) -> None:
        self.touched[job_id] = time.time()

    def release(self, job_id: str) -> None:
        self.touched.pop(job_id, None)

    def leases(self) -> dict[str, float]:
        return dict(self.touched)

    def index_request(self, owner: str, client_request_id: str, job_id: str) -> None:
        self.requests[request_key(owner, client_request_id)] = job_id

    def find_request(self, owner: str, client_request_id: str) -> str | None:
        return self.requests.get(request_key(owner, client_request_id))

    def index_job(self, job: Job) -> None:
        self.index[job.job_id] = (job.owner, job.created_at)

    def list_index(self, owner: str | None) -> list[tuple[float, str]]:
        return [(created, job_id) for job_id, (who, created) in list(self.index.items()) if owner in (None, who)]

    def reindex(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.index_job(job)

    def delete(self, job: Job) -> None:
        self.jobs.pop(job.job_id, None)
        self.index.pop(job.job_id, None)
        if job.client_request_id:
            self.requests.pop(request_key(job.owner, job.client_request_id), None)


class JobContext:
    """Handed to the job function: progress reports and cooperative cancellation."""

    def __init__(self, manager: "JobManager", job: Job) -> None:
        self._manager, self.job = manager, job
        self.cancelled = threading.Event()
        self._on_cancel: list[Callable[[], None]] = []

    def cancel(self) -> None:
        self.cancelled.set()
        for stop in list(self._on_cancel):
            stop()

    def on_cancel(self, stop: Callable[[], None]) -> Callable[[], None]:
        """Runs `stop` (e.g. a gRPC call's cancel) when the job is cancelled, at once if it is
        already; returns the function that unregisters it. For calls that send no progress."""
        self._on_cancel.append(stop)
        if self.cancelled.is_set():
            stop()
        return lambda: self._on_cancel.remove(stop)

    def report(self, stage: str, fraction: float, message: str = "") -> None:
        self.check_cancelled()
        # Progress within a stage is only worth persisting now and then: watchers read it from
        # memory, and a restarted gateway resumes from stage outputs, not from a percentage.
        self._manager._update(self.job, persist=stage != self.job.stage,
                              stage=stage, progress=max(0.0, min(1.0, fraction)), message=message)

    def stage_done(self, stage: str, key: str) -> None:
        self.job.stage_outputs[stage] = key
        self._manager._update(self.job, stage=stage, progress=1.0)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled(self.job.job_id)


JobFn = Callable[[Job, JobContext], None]


class JobManager:
    """With lease_s > 0 (gateway replicas sharing one store) a manager runs only the unfinished jobs it
    holds: its own, and those whose holder stopped touching them for lease_s (a crashed or stopped
    replica); it touches its jobs every lease_s / 3. With lease_s = 0 it takes every unfinished job
    in the store at start (one gateway)."""

    def __init__(self, run: JobFn, *, max_concurrent: int = 2, max_queued: int = 16, max_active_per_owner: int = 0,
                 store: JobStore | None = None, progress_save_interval_s: float = 2.0, lease_s: float = 0.0,
                 on_finish: Callable[[Job, float], None] = lambda job, seconds: None) -> None:
        self.instance_id = uuid.uuid4().hex
        self.lease_s = lease_s
        self._closed = threading.Event()
        self._run = run
        self._store = store or MemoryJobStore()
        self._progress_save_interval_s = progress_save_interval_s
        self._saved_at: dict[str, float] = {}  # job_id -> monotonic time of its last store write
        self._unsaved: set[str] = set()  # jobs whose last record write failed
        self._on_finish = on_finish
        self._lock = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._by_request_id: dict[tuple[str, str], str] = {}  # (owner, client_request_id) -> job_id
        self._contexts: dict[str, JobContext] = {}
        self._queue: queue.Queue[str] = queue.Queue()
        self.max_queued = max_queued
        self.max_active_per_owner = max_active_per_owner  # 0: no limit; never for owner "" (keys off)
        self._workers = [threading.Thread(target=self._work, name=f"job-worker-{i}", daemon=True)
                         for i in range(max_concurrent)]
        unfinished: list[str] = []
        stored = sorted(self._store.load_all(), key=lambda j: j.created_at)
        if lease_s > 0:
            self._store.reindex(stored)
        for job in stored:  # a restarted gateway keeps its jobs
            if job.state.terminal or lease_s <= 0:
                self._take(job)
            else:
                unfinished.append(job.job_id)  # adopted below unless a live replica holds it
        for worker in self._workers:
            worker.start()
        if lease_s > 0:
            threading.Thread(target=self._keep_leases, args=(unfinished,), name="job-leases", daemon=True).start()

    def _take(self, job: Job) -> None:
        """Into memory (and onto the queue when unfinished)."""
        with self._lock:
            self._jobs[job.job_id] = job
            if job.client_request_id:
                self._by_request_id[job.owner, job.client_request_id] = job.job_id
            if not job.state.terminal:
                job.state = JobState.QUEUED
                job.holder = self.instance_id
                self._contexts[job.job_id] = JobContext(self, job)
                self._queue.put(job.job_id)

    def _keep_leases(self, unfinished: list[str]) -> None:
        """Touches this manager's unfinished jobs every lease_s / 3 and adopts stale ones (a holder
        that stopped touching them for lease_s). A pass that fails (storage unreachable) is tried
        again on the next one: the thread must outlive an outage, or the jobs it holds lapse."""
        candidates = set(unfinished)
        while not self._closed.is_set():
            try:
                self._lease_pass(candidates)
                candidates.clear()
            except Exception:  # noqa: BLE001
                log.exception("job leases not renewed; trying again in %.0f s", self.lease_s / 3)
            if self._closed.wait(self.lease_s / 3):
                return

    def _lease_pass(self, candidates: set[str]) -> None:
        """Two managers adopting at once both write themselves in as holder, wait, read again: only
        the one the record names runs it."""
        self._save_unsaved()
        now = time.time()
        leases = self._store.leases()
        # Another replica's jobs: stale ones, and those it let go (holder "" in the record).
        candidates = candidates | {job_id for job_id in leases if job_id not in self._jobs}
        claimed = []
        for job_id in sorted(candidates):
            job = self._store.load(job_id)
            if job is None or job.state.terminal:
                self._store.release(job_id)
            elif job.holder in ("", self.instance_id) or leases.get(job_id, 0.0) < now - self.lease_s:
                job.holder = self.instance_id
                self._store.save(job)
                self._store.touch(job_id)
                claimed.append(job_id)
        if claimed:
            time.sleep(min(1.0, self.lease_s / 10))
            for job_id in claimed:
                job = self._store.load(job_id)
                if job is not None and job.holder == self.instance_id and not job.state.terminal:
                    self._take(job)
                    self._save(job)  # QUEUED here now, not the state its last holder left
        with self._lock:
            mine = [j.job_id for j in self._jobs.values() if not j.state.terminal]
        if not self._closed.is_set():
            for job_id in mine:
                self._store.touch(job_id)

    def close(self) -> None:
        """Stops holding jobs (a gateway shutting down): queued ones are let go (holder "") for another
        replica to take on its next pass; running ones, no longer touched, are taken after lease_s."""
        self._closed.set()
        if self.lease_s > 0:
            with self._lock:
                for job in self._jobs.values():
                    if job.state is JobState.QUEUED:
                        job.holder = ""
                        self._store.save(job)

    # -- public API ------------------------------------------------------------------------------

    def submit(self, request: dict, client_request_id: str = "", owner: str = "", retry_of: str = "",
               prepare: Callable[[Job], None] = lambda job: None) -> tuple[Job, bool]:
        """Returns (job, existing). The same owner's same client_request_id -> the same job, not a new one.
        `prepare(job)` runs before the job is stored and queued (a retry copies what its old job made)."""
        with self._lock:
            if client_request_id and (owner, client_request_id) in self._by_request_id:
                return self._jobs[self._by_request_id[owner, client_request_id]], True
            if client_request_id:  # submitted through another replica (or before this one started)?
                known = self._store.find_request(owner, client_request_id)
                job = self._jobs.get(known) or self._store.load(known) if known else None
                if job is not None:
                    return job, True
            if self.queue_depth >= self.max_queued:
                raise QueueFull(f"{self.queue_depth} jobs are queued (limit {self.max_queued}); retry later")
            if owner and self.max_active_per_owner:
                active = sum(1 for j in self._jobs.values() if j.owner == owner and not j.state.terminal)
                if active >= self.max_active_per_owner:
                    raise PrincipalBusy(owner, active, self.max_active_per_owner)
            job = Job(job_id=uuid.uuid4().hex, request=request, client_request_id=client_request_id, owner=owner,
                      holder=self.instance_id, retry_of=retry_of)
            prepare(job)
            # Strict: no job id for the caller unless its record, index entries and lease are stored.
            self._store.save(job)
            try:
                self._store.index_job(job)
                if client_request_id:
                    self._store.index_request(owner, client_request_id, job.job_id)
                if self.lease_s > 0:
                    self._store.touch(job.job_id)
            except Exception:
                try:
                    self._store.delete(job)
                except Exception:  # noqa: BLE001 - still down: a record left behind runs after a restart
                    log.exception("job %s: refused, but its record could not be removed", job.job_id)
                raise
            self._saved_at[job.job_id] = time.monotonic()
            self._jobs[job.job_id] = job
            if client_request_id:
                self._by_request_id[owner, client_request_id] = job.job_id
            self._contexts[job.job_id] = JobContext(self, job)
            self._queue.put(job.job_id)
            self._lock.notify_all()
            return job, False

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._jobs[job_id]

    def cancel(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs[job_id]
            if not job.state.terminal:
                self._contexts[job_id].cancel()
                if job.state is JobState.QUEUED:  # never started: done right away
                    self._finish(job, JobState.CANCELLED, message="cancelled before it started")
            return job

    def list(self, *, states: set[JobState] | None = None, owner: str | None = None, page_size: int = 50,
             page_token: str = "", created_before: float | None = None) -> tuple[list[Job], str]:
        """Newest first; only `owner`'s jobs when given. With replicas sharing the store (lease_s > 0)
        every replica's jobs: ours from memory, the others' from their records (read only as far as
        the page reaches)."""
        with self._lock:
            local = dict(self._jobs)
        created = {j.job_id: j.created_at for j in local.values() if owner in (None, j.owner)}
        if self.lease_s > 0:
            indexed = dict((job_id, at) for at, job_id in self._store.list_index(owner))
            for job_id in [i for i in created if i not in indexed and local[i].state.terminal]:
                self.drop_local(job_id)  # deleted through another replica (or by its retention sweep)
                del created[job_id]
            created.update((i, at) for i, at in indexed.items() if i not in local)
        ids = sorted((i for i, at in created.items() if created_before is None or at < created_before),
                     key=lambda i: (created[i], i), reverse=True)
        start = int(page_token or 0)
        matched: list[Job] = []
        for job_id in ids:
            job = local.get(job_id) or self._store.load(job_id)  # None: deleted since it was listed
            if job is not None and owner in (None, job.owner) and (not states or job.state in states):
                matched.append(job)
                if len(matched) > start + page_size:
                    return matched[start:start + page_size], str(start + page_size)
        return matched[start:start + page_size], ""

    def finished(self) -> list[Job]:
        """The finished jobs in this replica's memory: every one in the store when it started."""
        with self._lock:
            return [j for j in self._jobs.values() if j.state.terminal]

    def active(self) -> list[Job]:
        """Queued and running jobs, every replica's (those hold leases) when replicas share the store."""
        with self._lock:
            jobs = {j.job_id: j for j in self._jobs.values() if not j.state.terminal}
        if self.lease_s > 0:
            for job_id in self._store.leases():
                job = None if job_id in jobs else self._store.load(job_id)
                if job is not None and not job.state.terminal:
                    jobs[job_id] = job
        return list(jobs.values())

    def drop_record(self, job: Job) -> None:
        """Deletes another replica's finished job record (and its index entries) from the store."""
        self._store.delete(job)

    def watch(self, job_id: str, *, timeout_s: float = 3600.0) -> Iterator[Job]:
        """Yields a snapshot on every change until the job ends (the last one is terminal)."""
        deadline = time.monotonic() + timeout_s
        last = -1.0
        while True:
            with self._lock:
                job = self._jobs[job_id]
                while job.updated_at == last and not job.state.terminal:
                    if not self._lock.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                        if time.monotonic() >= deadline:
                            return
                last = job.updated_at
                snapshot = dataclasses.replace(job, stage_outputs=dict(job.stage_outputs),
                                               result=dict(job.result), warnings=list(job.warnings))
            yield snapshot
            if snapshot.state.terminal:
                return

    def set_webhook(self, job_id: str, delivery: dict) -> None:
        """Records how a finished job's webhook went (wakes watchers, saves the record)."""
        with self._lock:
            if job_id in self._jobs:  # (not a job deleted meanwhile)
                self._update(self._jobs[job_id], webhook=delivery)

    def forget(self, job_id: str) -> None:
        """Drops a finished job: from memory, ListJobs and the store (its client_request_id is free
        again). JobActive while it is queued or running; KeyError for an unknown job."""
        with self._lock:
            job = self._jobs[job_id]
            if not job.state.terminal:
                raise JobActive(f"job {job_id} is {job.state.value.lower()}: cancel it first")
            self._store.delete(job)
            self.drop_local(job_id)

    def drop_local(self, job_id: str) -> None:
        """Out of this replica's memory, not the store (a job deleted through another replica)."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
            self._contexts.pop(job_id, None)
            self._saved_at.pop(job_id, None)
            if job is not None and self._by_request_id.get((job.owner, job.client_request_id)) == job_id:
                del self._by_request_id[job.owner, job.client_request_id]

    @property
    def queue_depth(self) -> int:
        return sum(1 for j in self._jobs.values() if j.state is JobState.QUEUED)

    @property
    def in_flight(self) -> int:
        return sum(1 for j in self._jobs.values() if j.state is JobState.RUNNING)

    # -- internals -------------------------------------------------------------------------------

    def _update(self, job: Job, *, persist: bool = True, **changes) -> None:
        """Every change wakes watchers; the store gets state changes at once and progress-only
        changes at most every `progress_save_interval_s` per job."""
        with self._lock:
            for name, value in changes.items():
                setattr(job, name, value)
            job.updated_at = max(time.time(), job.updated_at + 1e-6)
            since = time.monotonic() - self._saved_at.get(job.job_id, float("-inf"))
            if persist or job.state.terminal or since >= self._progress_save_interval_s:
                self._save(job)
            self._lock.notify_all()

    def _save(self, job: Job) -> None:
        """A record the store refuses (unreachable past its retries) is kept in memory and written
        again by the lease thread: a job does not stop, nor a worker die, for a storage outage."""
        try:
            self._store.save(job)
        except Exception:  # noqa: BLE001
            log.exception("job %s: record not saved (saved again later)", job.job_id)
            self._unsaved.add(job.job_id)
            return
        self._unsaved.discard(job.job_id)
        self._saved_at[job.job_id] = time.monotonic()

    def _save_unsaved(self) -> None:
        with self._lock:
            for job_id in sorted(self._unsaved):
                job = self._jobs.get(job_id)
                if job is not None:
                    self._store.save(job)  # raises while the store is still down: the next pass tries
                    if job.state.terminal and self.lease_s > 0:
                        self._store.release(job_id)
                self._unsaved.discard(job_id)

    def _finish(self, job: Job, state: JobState, **changes) -> None:
        self._update(job, state=state, **changes)
        try:
            if self.lease_s > 0 and job.job_id not in self._unsaved:  # (else released once saved)
                self._store.release(job.job_id)
            self._on_finish(job, job.updated_at - job.created_at)
        except Exception:  # noqa: BLE001 - a lease left behind is released by any replica's pass
            log.exception("job %s: finished, but not released or reported", job.job_id)

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                self._work_on(job_id)
            except Exception:  # noqa: BLE001 - a worker that died would stop this gateway running jobs
                log.exception("job %s: worker error", job_id)

    def _work_on(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state is not JobState.QUEUED or self._closed.is_set():
                return  # deleted, cancelled, or let go (close)
            ctx = self._contexts[job_id]
            self._update(job, state=JobState.RUNNING, attempts=job.attempts + 1)
        try:
            self._run(job, ctx)
        except JobCancelled:
            self._finish(job, JobState.CANCELLED, message="cancelled")
        except JobFailed as exc:
            self._finish(job, JobState.FAILED, error_code=exc.code, error_field=exc.field, message=str(exc))
        except StorageUnavailable as exc:  # the outputs so far are kept: a retry resumes after them
            self._finish(job, JobState.FAILED, error_code="UNAVAILABLE", message=str(exc))
        except Exception as exc:  # a bug or an exhausted retry: the job fails, the gateway lives
            self._finish(job, JobState.FAILED, error_code="INTERNAL", message=f"{type(exc).__name__}: {exc}")
        else:
            self._finish(job, JobState.SUCCEEDED, progress=1.0, message="done")


class JobFailed(Exception):
    """A job ends with a status the client can act on (e.g. INVALID_ARGUMENT, UNAVAILABLE)."""

    def __init__(self, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code, self.field = code, field
