"""Asynchronous jobs: bounded concurrency, a bounded queue, idempotent submission, cancel, watch.

The manager knows nothing about gRPC or about what a job does: it runs `run(job, ctx)` on a worker
thread and records state in PostgreSQL (services/gateway/db.py), the system of record every gateway
replica shares: any replica answers for any job, a job whose replica died is taken over by another,
and it resumes from the last stage whose output is already stored.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, AsyncIterator, Callable

from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from services.common.domain.errors import StorageUnavailable
from services.gateway.db import Database, DatabaseUnavailable, Notifications

log = logging.getLogger(__name__)
ADMISSION_LOCK = 0x4C696B61  # pg_advisory_xact_lock key: submissions are admitted one at a time
WATCH_REREAD_S = 60.0  # a watcher re-reads its job at least this often (a reconnect wakes every watcher anyway)


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
    request: Any  # the validated request (services.pipeline.request.VideoRequest; a dict in unit tests)
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


class QueueFull(Exception):
    subject = "job-queue"  # google.rpc.QuotaFailure's subject: what ran out


class PrincipalBusy(QueueFull):
    """One principal already has its share of queued + running jobs (the others still get theirs)."""

    def __init__(self, owner: str, active: int, limit: int) -> None:
        super().__init__(f"{owner!r} has {active} jobs queued or running (limit {limit} per principal); "
                         "retry when one finishes")
        self.subject = f"principal:{owner}"


class RequestMismatch(Exception):
    """A client_request_id used again with a different request (AIP-155: not the first job again)."""

    def __init__(self, job_id: str) -> None:
        super().__init__("client_request_id was used before with a different request; use a new id for a "
                         "new request")
        self.job_id = job_id


class JobCancelled(Exception):
    pass


class JobActive(Exception):
    """The job is queued or running (it must be cancelled before it can be deleted)."""


class JobContext:
    """Handed to the job function: progress reports and cooperative cancellation."""

    def __init__(self, manager: "JobManager", job: Job) -> None:
        self._manager, self.job = manager, job
        self.cancelled = threading.Event()
        self.lost = False  # stopped because this replica holds the job no longer (not a user's cancel)
        self._on_cancel: list[Callable[[], None]] = []

    def cancel(self, lost: bool = False) -> None:
        self.lost = self.lost or lost
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
        # Progress within a stage is only worth writing now and then: a job taken over resumes from
        # stage outputs, not from a percentage.
        self._manager._progress(self, persist=stage != self.job.stage,
                                stage=stage, progress=max(0.0, min(1.0, fraction)), message=message)

    def stage_done(self, stage: str, key: str) -> None:
        self.job.stage_outputs[stage] = key
        self._manager._progress(self, persist=True, stage=stage, progress=1.0)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled(self.job.job_id)


JobFn = Callable[[Job, JobContext], None]


class JobManager:
    """Jobs in PostgreSQL, shared by every gateway replica that has the same database.

    Each replica runs up to `max_concurrent` jobs at once: a free worker claims the oldest queued job
    (`FOR UPDATE SKIP LOCKED`: two replicas never claim the same row) and holds it with a lease it renews
    every lease_s / 3; a job whose holder stopped renewing (a replica killed) is claimed again by any
    replica once its lease has passed, and resumes from the stages whose outputs are stored. Every
    write of a running job names its holder, so a replica that lost its lease changes nothing. Admission
    (queue and per-principal limits) is counted in the database, across replicas. Watch and cancel are
    woken by LISTEN/NOTIFY (a trigger notifies every change of a row)."""

    def __init__(self, run: JobFn, db: Database, *, notifications: Notifications | None = None,
                 max_concurrent: int = 2, max_queued: int = 16, max_active_per_owner: int = 0,
                 lease_s: float = 30.0, progress_save_interval_s: float = 2.0,
                 on_finish: Callable[[Job, float], None] = lambda job, seconds: None,
                 request_type: type | None = None) -> None:
        self.instance_id = uuid.uuid4().hex
        # What a job's request is (services.pipeline.request.VideoRequest in the gateway): stored as
        # its to_record(), read back with from_record(); None: a plain JSON dict.
        self._encode = (lambda request: request) if request_type is None else request_type.to_record
        self._decode = (lambda record: record) if request_type is None else request_type.from_record
        self.db = db
        self._own_events = notifications is None
        self.events = notifications or Notifications(db.dsn)
        self.lease_s = max(0.3, lease_s)
        self.max_queued = max_queued
        self.max_active_per_owner = max_active_per_owner  # 0: no limit; never for owner "" (keys off)
        self._run = run
        self._on_finish = on_finish
        self._progress_save_interval_s = progress_save_interval_s
        self._closed = threading.Event()
        self._lock = threading.Condition()
        # A queued job's notification wakes one free worker (a claim can take one job): this many
        # wake-ups are owed to free workers, at most one per worker.
        self._wakeups, self._workers = 0, max(1, max_concurrent)
        self._running: dict[str, JobContext] = {}
        self._saved_at: dict[str, float] = {}  # job_id -> monotonic time of its last progress write
        self.events.on_job(self._notified)
        self.events.connected.wait(5.0)  # (a database down at start: the workers poll until it is up)
        self._threads = [threading.Thread(target=self._work, name=f"job-worker-{i}", daemon=True)
                         for i in range(max_concurrent)]
        self._threads.append(threading.Thread(target=self._keep_leases, name="job-leases", daemon=True))
        for thread in self._threads:
            thread.start()

    # -- public API ------------------------------------------------------------------------------

    def _job(self, row: dict) -> Job:
        return _job(row, self._decode)

    def submit(self, request, client_request_id: str = "", owner: str = "", retry_of: str = "",
               prepare: Callable[[Job], None] | None = None, fingerprint: str = "") -> tuple[Job, bool]:
        """Returns (job, existing). The same owner's same client_request_id -> the same job, not a new one,
        whichever replica it reached; RequestMismatch when `fingerprint` (what the caller sent) differs
        from the first submission's. `prepare(job)` runs before the job is stored (a retry copies
        what its old job made). QueueFull / PrincipalBusy when the limits (counted across replicas) are
        reached."""
        job = Job(job_id=uuid.uuid4().hex, request=request, client_request_id=client_request_id, owner=owner,
                  retry_of=retry_of)
        params = {"job_id": job.job_id, "owner": owner, "crid": client_request_id, "request": Jsonb(self._encode(request)),
                  "stage_outputs": Jsonb(job.stage_outputs), "retry_of": retry_of, "fingerprint": fingerprint,
                  "max_queued": self.max_queued, "max_mine": self.max_active_per_owner if owner else 0}
        # One admission at a time across replicas: the counts stay true until commit. Pipelined (BEGIN,
        # lock, admission, COMMIT sent at once: one round trip), the lock is held for the server's part of
        # a millisecond, not across client round trips that a busy gateway process is slow to make.
        # (Explicit BEGIN/COMMIT: conn.transaction() in a pipeline syncs at each end, ~5 round trips.)
        with self.db.connect() as conn:
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADMISSION_LOCK,))
                    cur, row = conn.execute(_ADMIT, {**params, "insert": prepare is None}), None
                    if prepare is not None:  # (RetryJob: what it copies goes in with the row, under the lock)
                        row = cur.fetchone()
                        if self._admitted(row, fingerprint, owner) is None:  # (or raises the refusal)
                            prepare(job)
                            cur, row = conn.execute(_ADMIT, {**params, "stage_outputs": Jsonb(job.stage_outputs),
                                                             "insert": True}), None
                    conn.execute("COMMIT")
                row = row or cur.fetchone()
            finally:
                if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                    conn.rollback()  # (refused, or failed, midway: nothing admitted)
        existing = self._admitted(row, fingerprint, owner)
        return (existing, True) if existing is not None else (self._job(row), False)

    def _admitted(self, row: dict, fingerprint: str, owner: str) -> Job | None:
        """_ADMIT's answer: None (admitted, or would be), the job already submitted with this id, or
        RequestMismatch / QueueFull / PrincipalBusy."""
        if row["admitted"]:
            return None
        if row["job_id"] is not None:
            if fingerprint and row["request_sha256"] and row["request_sha256"] != fingerprint:
                raise RequestMismatch(row["job_id"])
            return self._job(row)
        if row["queued"] >= self.max_queued:
            raise QueueFull(f"{row['queued']} jobs are queued (limit {self.max_queued}); retry later")
        raise PrincipalBusy(owner, row["mine"], self.max_active_per_owner)

    def get(self, job_id: str) -> Job:
        """The job as last written (by whichever replica runs it); KeyError when there is none."""
        with self.db.connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE job_id = %s", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return self._job(row)

    def cancel(self, job_id: str) -> Job:
        """A queued job ends now; a running one is stopped by its holder, which the notification
        reaches wherever it runs. A finished job is returned as it is. KeyError for an unknown job."""
        with self.db.connect() as conn:
            row = conn.execute(
                "UPDATE jobs SET cancel_requested = true, updated_at = clock_timestamp(), "
                "state = CASE state WHEN 'QUEUED' THEN 'CANCELLED' ELSE state END, "
                "message = CASE state WHEN 'QUEUED' THEN 'cancelled before it started' ELSE message END "
                "WHERE job_id = %s AND state IN ('QUEUED', 'RUNNING') RETURNING *", (job_id,)).fetchone()
        if row is None:
            return self.get(job_id)
        job = self._job(row)
        if job.state is JobState.CANCELLED:
            self._on_finish(job, job.updated_at - job.created_at)
        return job

    def list(self, *, states: set[JobState] | None = None, owner: str | None = None, page_size: int = 50,
             page_token: str = "", created_before: float | None = None) -> tuple[list[Job], str]:
        """Newest first, every replica's; only `owner`'s jobs when given. The token is where the page
        ended (creation time, id), so pages stay right while jobs are added or deleted."""
        where, args = ["true"], []
        if owner is not None:
            where.append("owner = %s")
            args.append(owner)
        if states:
            where.append("state = ANY(%s)")
            args.append([s.value for s in states])
        if created_before is not None:
            where.append("created_at < to_timestamp(%s)")
            args.append(created_before)
        if page_token:
            micros, job_id = parse_page_token(page_token)
            where.append("(created_at, job_id) < (to_timestamp(%s / 1e6), %s)")
            args += [micros, job_id]
        with self.db.connect() as conn:
            rows = conn.execute(f"SELECT * FROM jobs WHERE {' AND '.join(where)} "
                                "ORDER BY created_at DESC, job_id DESC LIMIT %s", (*args, page_size + 1)).fetchall()
        jobs = [self._job(row) for row in rows[:page_size]]
        token = ""
        if len(rows) > page_size:
            last = rows[page_size - 1]
            token = f"{round(last['created_at'].timestamp() * 1e6)}.{last['job_id']}"
        return jobs, token

    def active(self) -> list[Job]:
        """Queued and running jobs, every replica's."""
        with self.db.connect() as conn:
            rows = conn.execute("SELECT * FROM jobs WHERE state IN ('QUEUED', 'RUNNING')").fetchall()
        return [self._job(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """{"QUEUED": n, "RUNNING": n} across replicas (the queue-depth metric)."""
        with self.db.connect() as conn:
            rows = conn.execute("SELECT state, count(*) AS n FROM jobs WHERE state IN ('QUEUED', 'RUNNING') "
                                "GROUP BY state").fetchall()
        return {"QUEUED": 0, "RUNNING": 0, **{row["state"]: row["n"] for row in rows}}

    @property
    def queue_depth(self) -> int:
        return self.counts()["QUEUED"]

    @property
    def in_flight(self) -> int:
        return self.counts()["RUNNING"]

    async def watch(self, job_id: str, *, timeout_s: float = 3600.0) -> AsyncIterator[Job]:
        """Yields the job on every change until it ends (the last one is terminal), woken by the
        database's notifications, holding no thread while the job does not change; KeyError when
        there is no such job."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            version = self.events.version(job_id)
            try:
                job = await asyncio.to_thread(self.get, job_id)
            except KeyError:
                if last is None:
                    raise
                return
            if job.updated_at != last:
                last = job.updated_at
                yield job
            remaining = deadline - time.monotonic()
            if job.state.terminal or remaining <= 0:
                return
            await self.events.await_change(job_id, version, min(remaining, WATCH_REREAD_S))

    def set_webhook(self, job_id: str, delivery: dict) -> None:
        """Records how a finished job's webhook went (GetJob shows it; watchers are woken)."""
        with self.db.connect() as conn:
            conn.execute("UPDATE jobs SET webhook = %s, updated_at = clock_timestamp() WHERE job_id = %s",
                         (Jsonb(delivery), job_id))

    def forget(self, job_id: str) -> None:
        """Deletes a finished job's row (its client_request_id is free again). JobActive while it is
        queued or running; KeyError for an unknown job."""
        with self.db.connect() as conn:
            row = conn.execute("DELETE FROM jobs WHERE job_id = %s AND state NOT IN ('QUEUED', 'RUNNING') "
                               "RETURNING job_id", (job_id,)).fetchone()
        if row is None:
            job = self.get(job_id)  # KeyError: no such job
            raise JobActive(f"job {job_id} is {job.state.value.lower()}: cancel it first")

    def close(self) -> None:
        """Stops taking jobs (a replica shutting down): the jobs it runs go back to the queue at once,
        for another replica to resume from their stored stages."""
        self._closed.set()
        with self._lock:
            running = list(self._running.values())
            self._lock.notify_all()
        for ctx in running:
            ctx.cancel(lost=True)
        try:
            with self.db.connect() as conn:
                conn.execute("UPDATE jobs SET state = 'QUEUED', holder = '', lease_until = NULL, "
                             "updated_at = clock_timestamp() WHERE holder = %s AND state = 'RUNNING' "
                             "AND NOT cancel_requested", (self.instance_id,))
        except DatabaseUnavailable:
            pass  # their leases run out instead
        if self._own_events:
            self.events.close()

    # -- internals -------------------------------------------------------------------------------

    def _notified(self, job_id: str, state: str, cancel: bool) -> None:
        if state in ("QUEUED", "RECONNECTED"):  # (after a reconnect: whatever was queued meanwhile)
            everyone = state == "RECONNECTED"
            with self._lock:
                self._wakeups = min(self._wakeups + (self._workers if everyone else 1), self._workers)
                if everyone:
                    self._lock.notify_all()
                else:
                    self._lock.notify()
            return
        with self._lock:
            ctx = self._running.get(job_id)
        if ctx is not None and (cancel or state != "RUNNING"):
            # cancelled, or deleted / finished / re-queued by someone else: no longer ours to run
            ctx.cancel(lost=not cancel)

    def _work(self) -> None:
        poll_s = max(0.1, min(self.lease_s / 3, 1.0))  # expired leases are found by looking
        while not self._closed.is_set():
            try:
                job = self._claim()
            except Exception:  # noqa: BLE001 - the database restarting: look again shortly
                log.warning("job claim failed; trying again", exc_info=log.isEnabledFor(logging.DEBUG))
                job = None
            if job is None:
                with self._lock:
                    if self._lock.wait_for(lambda: self._wakeups > 0 or self._closed.is_set(), poll_s):
                        self._wakeups = max(0, self._wakeups - 1)
                continue
            try:
                self._work_on(job)
            except Exception:  # noqa: BLE001 - a worker that died would stop this replica running jobs
                log.exception("job %s: worker error", job.job_id)

    def _claim(self) -> Job | None:
        with self.db.connect() as conn:
            row = conn.execute(
                "UPDATE jobs SET state = 'RUNNING', holder = %(me)s, attempts = attempts + 1, "
                "lease_until = now() + make_interval(secs => %(lease)s), updated_at = clock_timestamp() "
                "WHERE job_id = (SELECT job_id FROM jobs WHERE NOT cancel_requested AND "
                "(state = 'QUEUED' OR (state = 'RUNNING' AND lease_until < now())) "
                "ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *",
                {"me": self.instance_id, "lease": self.lease_s}).fetchone()
        return None if row is None else self._job(row)

    def _work_on(self, job: Job) -> None:
        ctx = JobContext(self, job)
        with self._lock:
            self._running[job.job_id] = ctx
        try:
            if self._closed.is_set():
                ctx.cancel(lost=True)
            self._run(job, ctx)
        except JobCancelled:
            if not ctx.lost:
                self._finish(job, JobState.CANCELLED, message="cancelled")
        except JobFailed as exc:
            self._finish(job, JobState.FAILED, error_code=exc.code, error_field=exc.field, message=str(exc))
        except StorageUnavailable as exc:  # the outputs so far are kept: a retry resumes after them
            self._finish(job, JobState.FAILED, error_code="UNAVAILABLE", message=str(exc))
        except Exception as exc:  # a bug or an exhausted retry: the job fails, the gateway lives
            if ctx.lost:
                log.info("job %s: stopped here (%s); its new holder runs it", job.job_id, type(exc).__name__)
            else:
                log.exception("job %s failed", job.job_id)
                self._finish(job, JobState.FAILED, error_code="INTERNAL", message=f"{type(exc).__name__}: {exc}")
        else:
            if ctx.lost:
                log.info("job %s: done here, but another replica holds it now", job.job_id)
            else:
                self._finish(job, JobState.SUCCEEDED, progress=1.0, message="done")
        finally:
            with self._lock:
                self._running.pop(job.job_id, None)
                self._saved_at.pop(job.job_id, None)

    def _write(self, job: Job, *, final: bool = False) -> bool:
        """The job's row as this holder sees it; False when it holds the job no longer (fenced)."""
        sets = ("state = %(state)s, stage = %(stage)s, progress = %(progress)s, message = %(message)s, "
                "error_code = %(error_code)s, error_field = %(error_field)s, stage_outputs = %(stage_outputs)s, "
                "result = %(result)s, warnings = %(warnings)s, updated_at = clock_timestamp()")
        if final:
            sets += ", holder = '', lease_until = NULL"
        with self.db.connect() as conn:
            row = conn.execute(
                f"UPDATE jobs SET {sets} WHERE job_id = %(job_id)s AND holder = %(me)s AND state = 'RUNNING' "
                "RETURNING updated_at, cancel_requested",
                {"state": job.state.value, "stage": job.stage, "progress": job.progress, "message": job.message,
                 "error_code": job.error_code, "error_field": job.error_field,
                 "stage_outputs": Jsonb(job.stage_outputs), "result": Jsonb(job.result),
                 "warnings": Jsonb(job.warnings), "job_id": job.job_id, "me": self.instance_id}).fetchone()
        if row is not None:
            job.updated_at = row["updated_at"].timestamp()
        return row is not None

    def _progress(self, ctx: "JobContext", persist: bool, **changes) -> None:
        """A running job's stage and progress: at once on a new stage, else at most every
        progress_save_interval_s. A database briefly away only delays it."""
        for name, value in changes.items():
            setattr(ctx.job, name, value)
        now = time.monotonic()
        if not persist and now - self._saved_at.get(ctx.job.job_id, float("-inf")) < self._progress_save_interval_s:
            return
        try:
            held = self._write(ctx.job)
        except DatabaseUnavailable:
            return
        self._saved_at[ctx.job.job_id] = now
        if not held:
            ctx.cancel(lost=True)

    def _finish(self, job: Job, state: JobState, **changes) -> None:
        """The final write, retried through a database outage for as long as the lease would have held."""
        job.state = state
        for name, value in changes.items():
            setattr(job, name, value)
        give_up = time.monotonic() + self.lease_s
        while True:
            try:
                held = self._write(job, final=True)
                break
            except DatabaseUnavailable:
                if time.monotonic() > give_up or self._closed.is_set():
                    log.warning("job %s: its end was not written; another replica runs it again", job.job_id)
                    return
                time.sleep(0.5)
        if not held:
            log.info("job %s: ended here as %s, but another replica holds it now", job.job_id, state.value)
            return
        try:
            self._on_finish(job, job.updated_at - job.created_at)
        except Exception:  # noqa: BLE001
            log.exception("job %s: finished, but not reported", job.job_id)

    def _keep_leases(self) -> None:
        """Renews this replica's leases every lease_s / 3; a job whose row no longer names this replica
        (taken over after a long stall, or deleted) is stopped here. Also ends jobs whose cancel was
        asked while their holder was dying."""
        while not self._closed.wait(self.lease_s / 3):
            with self._lock:
                running = dict(self._running)
            try:
                with self.db.connect() as conn:
                    # Only the jobs a worker here runs: a row that still names this replica but whose run
                    # ended here unwritten (the database was away) lapses and is claimed again.
                    held = {row["job_id"]: row["cancel_requested"] for row in conn.execute(
                        "UPDATE jobs SET lease_until = now() + make_interval(secs => %s) "
                        "WHERE holder = %s AND state = 'RUNNING' AND job_id = ANY(%s) "
                        "RETURNING job_id, cancel_requested", (self.lease_s, self.instance_id, list(running)))}
                    conn.execute("UPDATE jobs SET state = 'CANCELLED', message = 'cancelled', holder = '', "
                                 "lease_until = NULL, updated_at = clock_timestamp() "
                                 "WHERE state = 'RUNNING' AND cancel_requested AND lease_until < now()")
            except Exception:  # noqa: BLE001 - the database restarting: the next pass renews them
                log.warning("job leases not renewed; trying again in %.1f s", self.lease_s / 3)
                continue
            for job_id, ctx in running.items():
                if job_id not in held:
                    if not self._closed.is_set() and ctx.job.holder == self.instance_id:
                        ctx.cancel(lost=True)
                elif held[job_id]:
                    ctx.cancel()


# Admission in one statement (run under ADMISSION_LOCK; READ COMMITTED: its snapshot is taken after the
# lock, so it sees every job admitted before): the job already submitted with this client_request_id,
# else the job inserted when the queue and the owner's limit have room (%(insert)s false: only whether they
# have), else the counts that refuse it. One row: admitted, the counts, and the existing or inserted job.
_ADMIT = """
WITH existing AS (
    SELECT * FROM jobs WHERE %(crid)s <> '' AND owner = %(owner)s AND client_request_id = %(crid)s
), counts AS (
    SELECT count(*) FILTER (WHERE state = 'QUEUED') AS queued, count(*) FILTER (WHERE owner = %(owner)s) AS mine
    FROM jobs WHERE state IN ('QUEUED', 'RUNNING')
), room AS (
    SELECT NOT EXISTS (SELECT 1 FROM existing) AND queued < %(max_queued)s
           AND (%(max_mine)s <= 0 OR mine < %(max_mine)s) AS ok FROM counts
), inserted AS (
    INSERT INTO jobs (job_id, owner, client_request_id, state, request, stage_outputs, retry_of, request_sha256)
    SELECT %(job_id)s, %(owner)s, %(crid)s, 'QUEUED', %(request)s, %(stage_outputs)s, %(retry_of)s, %(fingerprint)s
    FROM room WHERE ok AND %(insert)s
    RETURNING *
)
SELECT room.ok AS admitted, counts.queued, counts.mine, job.*
FROM room, counts LEFT JOIN (SELECT * FROM inserted UNION ALL SELECT * FROM existing) job ON true
"""


def parse_page_token(token: str) -> tuple[int, str]:
    """ListJobs' next_page_token: "<creation time in µs>.<job id>"; ValueError for anything else."""
    micros, _, job_id = token.partition(".")
    if not (micros.isdigit() and len(micros) <= 20 and len(job_id) == 32
            and all(c in "0123456789abcdef" for c in job_id)):
        raise ValueError("not a page token")
    return int(micros), job_id


def _job(row: dict, decode: Callable[[dict], object]) -> Job:
    return Job(job_id=row["job_id"], request=decode(row["request"]), client_request_id=row["client_request_id"],
               owner=row["owner"], holder=row["holder"], state=JobState(row["state"]), stage=row["stage"],
               progress=float(row["progress"]), message=row["message"], error_code=row["error_code"],
               error_field=row["error_field"], stage_outputs=row["stage_outputs"], result=row["result"],
               warnings=row["warnings"], attempts=row["attempts"], webhook=row["webhook"],
               retry_of=row["retry_of"], created_at=row["created_at"].timestamp(),
               updated_at=row["updated_at"].timestamp())

class JobFailed(Exception):
    """A job ends with a status the client can act on (e.g. INVALID_ARGUMENT, UNAVAILABLE)."""

    def __init__(self, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code, self.field = code, field
