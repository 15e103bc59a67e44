"""The gateway's job manager on a real PostgreSQL: queue limits, idempotency, cancel, watch, and
replicas sharing one database (claims, leases, take-over, a database restart)."""
from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.gateway.db import Database
from services.gateway.jobs import JobActive, JobFailed, JobManager, JobState, PrincipalBusy, QueueFull


def watch(manager: JobManager, job_id: str, timeout_s: float = 10.0) -> list:
    """Every snapshot manager.watch (async) yields, collected on this thread's own event loop."""
    async def collect():
        return [job async for job in manager.watch(job_id, timeout_s=timeout_s)]

    return asyncio.run(collect())


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def managers(database):
    """make(run, **kwargs) -> a JobManager on the test's database (a replica); all closed after."""
    made: list[JobManager] = []

    def make(run=lambda job, ctx: None, **kwargs) -> JobManager:
        kwargs.setdefault("max_concurrent", 1)
        made.append(JobManager(run, database, **kwargs))
        return made[-1]

    yield make
    for manager in made:
        manager.close()


def test_runs_jobs_and_reports_progress(managers):
    def run(job, ctx):
        for i in range(3):
            ctx.report("render", i / 3)
            time.sleep(0.05)
        ctx.stage_done("render", f"jobs/{job.job_id}/video.mp4")
        job.result["video_key"] = f"jobs/{job.job_id}/video.mp4"

    manager = managers(run, progress_save_interval_s=0.0)
    job, existing = manager.submit({"script": "hi"})
    events = watch(manager, job.job_id)
    assert not existing and events[0].state in (JobState.QUEUED, JobState.RUNNING)
    assert events[-1].state is JobState.SUCCEEDED and events[-1].progress == 1.0 and events[-1].attempts == 1
    assert events[-1].result["video_key"].endswith("video.mp4") and events[-1].holder == ""
    assert any(e.stage == "render" and 0 < e.progress < 1 for e in events)  # woken by the notifications


def test_same_client_request_id_is_the_same_job(managers):
    manager = managers()
    first, existing1 = manager.submit({"a": 1}, client_request_id="req-1")
    second, existing2 = manager.submit({"a": 1}, client_request_id="req-1")
    assert first.job_id == second.job_id and not existing1 and existing2


def test_queue_full_is_refused_then_accepts_again(managers):
    release = threading.Event()
    manager = managers(lambda job, ctx: release.wait(5), max_queued=2)
    running, _ = manager.submit({})
    assert wait_for(lambda: manager.get(running.job_id).state is JobState.RUNNING)
    manager.submit({})
    manager.submit({})
    with pytest.raises(QueueFull):
        manager.submit({})
    release.set()
    assert wait_for(lambda: manager.queue_depth == 0)
    manager.submit({})


def test_one_principal_cannot_take_the_whole_queue(managers):
    release = threading.Event()
    manager = managers(lambda job, ctx: release.wait(5), max_queued=10, max_active_per_owner=2)
    first, _ = manager.submit({}, owner="studio")
    second, _ = manager.submit({}, client_request_id="r", owner="studio")  # one running, one queued
    with pytest.raises(PrincipalBusy) as caught:
        manager.submit({}, owner="studio")
    assert caught.value.subject == "principal:studio" and "limit 2 per principal" in str(caught.value)
    again, existing = manager.submit({}, client_request_id="r", owner="studio")  # a retry is no new job
    assert existing and again.job_id == second.job_id
    manager.submit({}, owner="ads")  # the others still get their share
    for _ in range(3):
        manager.submit({})  # keys off ("" owner): only the queue's own limit
    release.set()
    assert wait_for(lambda: manager.get(first.job_id).state is JobState.SUCCEEDED)
    assert wait_for(lambda: manager.get(second.job_id).state is JobState.SUCCEEDED)
    manager.submit({}, owner="studio")  # a finished job frees a place


def test_limits_are_counted_across_replicas(managers):
    """The queue and per-principal limits hold for the sum over replicas (not each replica's own)."""
    replicas = [managers(max_concurrent=0, max_queued=4, max_active_per_owner=2) for _ in range(3)]
    replicas[0].submit({}, owner="studio")
    replicas[1].submit({}, owner="studio")
    with pytest.raises(PrincipalBusy):
        replicas[2].submit({}, owner="studio")
    replicas[2].submit({}, owner="ads")
    replicas[0].submit({}, owner="ads")
    with pytest.raises(QueueFull):
        replicas[1].submit({}, owner="news")
    assert all(r.counts() == {"QUEUED": 4, "RUNNING": 0} for r in replicas)


def test_concurrent_admission_never_overshoots_the_limits(managers):
    replicas = [managers(max_concurrent=0, max_queued=10, max_active_per_owner=3) for _ in range(3)]

    def submit(i):
        try:
            return replicas[i % 3].submit({}, owner=f"p{i % 4}")[0].job_id
        except QueueFull:
            return None

    with ThreadPoolExecutor(12) as pool:
        accepted = [job_id for job_id in pool.map(submit, range(40)) if job_id]
    owners = Counter(j.owner for j in replicas[0].active())
    assert len(accepted) == 10 and max(owners.values()) <= 3


def test_cancel_running_and_queued_jobs_from_any_replica(managers):
    started = threading.Event()

    def run(job, ctx):
        started.set()
        while True:
            ctx.report("render", 0.5)
            time.sleep(0.01)

    runner = managers(run)
    other = managers(max_concurrent=0)  # runs nothing: cancels reach the runner through the database
    running, _ = runner.submit({})
    queued, _ = runner.submit({})
    assert started.wait(5)
    assert other.cancel(queued.job_id).state is JobState.CANCELLED
    other.cancel(running.job_id)
    assert wait_for(lambda: other.get(running.job_id).state is JobState.CANCELLED, timeout=3)
    assert other.get(running.job_id).message == "cancelled"
    assert other.cancel(running.job_id).state is JobState.CANCELLED  # a finished job stays as it is
    with pytest.raises(KeyError):
        other.cancel("f" * 32)


def test_failures_carry_a_status_and_the_gateway_lives_on(managers):
    def run(job, ctx):
        if job.request.get("bad"):
            raise JobFailed("INVALID_ARGUMENT", "no face found", field="photo")
        raise RuntimeError("boom")

    manager = managers(run)
    bad, _ = manager.submit({"bad": True})
    bug, _ = manager.submit({})
    assert wait_for(lambda: manager.get(bug.job_id).state.terminal)
    assert (manager.get(bad.job_id).error_code, manager.get(bad.job_id).error_field) == ("INVALID_ARGUMENT", "photo")
    assert manager.get(bug.job_id).state is JobState.FAILED and "boom" in manager.get(bug.job_id).message


def test_list_pages_and_filters_on_every_replica(managers):
    first = managers(max_concurrent=2)
    second = managers(max_concurrent=0)
    ids = [(first if i % 2 else second).submit({"i": i}, owner="studio" if i < 4 else "ads")[0].job_id
           for i in range(5)]
    for manager in (first, second):
        page1, token = manager.list(page_size=3)
        page2, token2 = manager.list(page_size=3, page_token=token)
        assert [j.job_id for j in page1 + page2] == ids[::-1] and token and token2 == ""
        assert [j.job_id for j in manager.list(owner="studio")[0]] == ids[3::-1]
    assert wait_for(lambda: all(first.get(i).state is JobState.SUCCEEDED for i in ids))
    assert first.list(states={JobState.FAILED})[0] == []
    assert len(second.list(states={JobState.SUCCEEDED})[0]) == 5
    assert [j.job_id for j in first.list(owner="ads", states={JobState.SUCCEEDED})[0]] == [ids[4]]


def test_progress_is_written_sparingly_but_state_changes_always(managers, database):
    halfway, resume = threading.Event(), threading.Event()

    def run(job, ctx):
        for stage in ("tts", "render"):
            for i in range(200):
                ctx.report(stage, i / 200)
                if stage == "render" and i == 100:
                    halfway.set()
                    resume.wait(5)
            ctx.stage_done(stage, f"jobs/{job.job_id}/{stage}")

    manager = managers(run, progress_save_interval_s=60.0)
    job, _ = manager.submit({})
    assert halfway.wait(5)
    stored = manager.get(job.job_id)  # the stage's first report, not every one
    assert (stored.stage, stored.progress, stored.state) == ("render", 0.0, JobState.RUNNING)
    assert stored.stage_outputs == {"tts": f"jobs/{job.job_id}/tts"}
    resume.set()
    assert wait_for(lambda: manager.get(job.job_id).state.terminal)
    final = manager.get(job.job_id)
    assert final.state is JobState.SUCCEEDED and set(final.stage_outputs) == {"tts", "render"}


def test_a_finished_job_can_be_forgotten_a_running_one_cannot(managers):
    gate = threading.Event()
    manager = managers(lambda job, ctx: gate.wait(5))
    job, _ = manager.submit({"n": 1}, client_request_id="req-9")
    assert wait_for(lambda: manager.get(job.job_id).state is JobState.RUNNING)
    with pytest.raises(JobActive, match="running"):
        manager.forget(job.job_id)
    gate.set()
    assert wait_for(lambda: manager.get(job.job_id).state is JobState.SUCCEEDED)
    manager.forget(job.job_id)
    with pytest.raises(KeyError):
        manager.get(job.job_id)
    with pytest.raises(KeyError):
        manager.forget(job.job_id)
    assert manager.list()[0] == []
    manager.set_webhook(job.job_id, {"state": "DELIVERED"})  # a late webhook result is dropped
    again, existing = manager.submit({"n": 2}, client_request_id="req-9")  # the id is free again
    assert not existing and again.job_id != job.job_id


def test_a_dead_replicas_job_is_taken_over_within_the_lease(managers, database):
    """A replica that stops renewing (killed: no close) loses its running job to another once the lease
    passes; the new holder runs it (attempt 2) with the stage outputs the first one recorded."""
    started = threading.Event()

    def stuck(job, ctx):
        ctx.stage_done("tts", f"jobs/{job.job_id}/speech.wav")
        started.set()
        time.sleep(30)

    ran: list[tuple[int, dict]] = []
    first = managers(stuck, lease_s=1.0)
    job, _ = first.submit({})
    assert started.wait(5)
    second = managers(lambda job, ctx: ran.append((job.attempts, dict(job.stage_outputs))), lease_s=1.0)
    time.sleep(1.5)  # more than the lease: the first keeps renewing, the second leaves it alone
    assert second.get(job.job_id).holder == first.instance_id and not ran
    first._closed.set()  # its lease keeper stops, as in a crash (no release)
    started_at = time.monotonic()
    assert wait_for(lambda: ran, timeout=5)
    assert time.monotonic() - started_at < 2.0 + 0.5  # the lease (1 s) plus a poll
    assert ran == [(2, {"tts": f"jobs/{job.job_id}/speech.wav"})]
    assert wait_for(lambda: second.get(job.job_id).state is JobState.SUCCEEDED)
    first._write(first._running[job.job_id].job)  # the old holder writing late changes nothing
    assert second.get(job.job_id).state is JobState.SUCCEEDED


def test_a_closing_replica_hands_its_running_jobs_back_at_once(managers):
    started = threading.Event()

    def slow(job, ctx):
        started.set()
        while True:
            ctx.check_cancelled()
            time.sleep(0.01)

    ran = []
    first = managers(slow, lease_s=30)
    job, _ = first.submit({})
    assert started.wait(5)
    second = managers(lambda job, ctx: ran.append(job.job_id), lease_s=30)
    first.close()
    assert wait_for(lambda: ran == [job.job_id], timeout=5)  # long before the 30 s lease
    assert wait_for(lambda: second.get(job.job_id).state is JobState.SUCCEEDED)


def test_replicas_racing_for_jobs_run_each_exactly_once(managers):
    runs: Counter = Counter()
    lock = threading.Lock()

    def run(job, ctx):
        with lock:
            runs[job.job_id] += 1
        time.sleep(0.01)

    submitter = managers(max_concurrent=0, max_queued=100)
    ids = [submitter.submit({"i": i})[0].job_id for i in range(40)]
    replicas = [managers(run, max_concurrent=2) for _ in range(3)]
    assert wait_for(lambda: sum(runs.values()) >= 40, timeout=20)
    time.sleep(0.5)
    assert sorted(runs) == sorted(ids) and set(runs.values()) == {1}
    holders = Counter(replicas[0].get(i).attempts for i in ids)
    assert holders == {1: 40}


def test_watch_wakes_on_changes_made_by_another_replica(managers):
    gate = threading.Event()
    runner = managers(lambda job, ctx: gate.wait(10) and ctx.report("render", 0.5) or ctx.check_cancelled())
    watcher = managers(max_concurrent=0)
    job, _ = runner.submit({})
    assert wait_for(lambda: runner.get(job.job_id).state is JobState.RUNNING)
    seen = []
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(lambda: seen.extend(watch(watcher, job.job_id, timeout_s=20)))
        time.sleep(0.3)
        gate.set()
        started = time.monotonic()
        done.result(timeout=10)
    assert seen[-1].state is JobState.SUCCEEDED and time.monotonic() - started < 2  # not a 5 s re-read
    with pytest.raises(KeyError):
        watch(watcher, "f" * 32)


def test_a_cancel_stops_a_call_that_sends_no_progress(managers):
    """ctx.on_cancel: the runner hands over the call's cancel (a render stream that is silent until
    the video is stored), so a cancel stops it at once instead of when it ends."""
    stopped = threading.Event()

    def run(job, ctx):
        forget = ctx.on_cancel(stopped.set)
        try:
            if not stopped.wait(10):  # the "call": ends early only if cancelled
                return
            ctx.check_cancelled()
        finally:
            forget()

    manager = managers(run)
    job, _ = manager.submit({})
    assert wait_for(lambda: manager.get(job.job_id).state is JobState.RUNNING)
    started = time.monotonic()
    managers(max_concurrent=0).cancel(job.job_id)  # through another replica
    assert wait_for(lambda: manager.get(job.job_id).state is JobState.CANCELLED, timeout=3)
    assert time.monotonic() - started < 3


def test_a_database_restart_loses_no_job_and_stops_no_worker(pg_server, managers, database):
    """PostgreSQL restarted while a job runs: calls meanwhile raise DatabaseUnavailable (UNAVAILABLE for
    the API), the job's end is written once the server is back, and the workers run the next job."""
    from services.gateway.db import DatabaseUnavailable

    release = threading.Event()
    manager = managers(lambda job, ctx: release.wait(10), lease_s=3.0)
    job, _ = manager.submit({})
    assert wait_for(lambda: manager.get(job.job_id).state is JobState.RUNNING)
    pg_server.kill()
    with pytest.raises(DatabaseUnavailable):
        manager.submit({})
    release.set()
    time.sleep(0.5)
    pg_server.start()
    assert wait_for(lambda: _state(manager, job.job_id) is JobState.SUCCEEDED, timeout=10)
    assert manager.get(job.job_id).attempts == 1  # finished by its holder, not run again
    second, _ = manager.submit({})
    assert wait_for(lambda: _state(manager, second.job_id) is JobState.SUCCEEDED, timeout=10)


def _state(manager, job_id):
    from services.gateway.db import DatabaseUnavailable

    try:
        return manager.get(job_id).state
    except DatabaseUnavailable:
        return None


def test_replicas_starting_at_once_on_an_empty_database_migrate_once(pg_server):
    name = "test_migrate_race"
    dsn = pg_server.create_database(name)
    databases = [Database(dsn, max_size=2) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            applied = list(pool.map(lambda db: db.migrate(), databases))
        assert sorted(len(a) for a in applied) == [0, 0, 0, len(applied[0]) or len(max(applied))]
        assert sum(len(a) for a in applied) == len(max(applied, key=len)) >= 1
        with databases[0].connect() as conn:
            assert conn.execute("SELECT count(*) AS n FROM schema_migrations").fetchone()["n"] == len(max(applied, key=len))
    finally:
        for db in databases:
            db.close()
        pg_server.drop_database(name)


def test_a_request_id_used_again_with_another_request_is_refused(managers):
    from services.gateway.jobs import RequestMismatch

    first, second = managers(max_concurrent=0), managers(max_concurrent=0)
    job, _ = first.submit({"script": "hi"}, client_request_id="rq", owner="studio", fingerprint="a" * 64)
    again, existing = second.submit({"script": "hi"}, client_request_id="rq", owner="studio", fingerprint="a" * 64)
    assert existing and again.job_id == job.job_id
    with pytest.raises(RequestMismatch) as caught:
        second.submit({"script": "bye"}, client_request_id="rq", owner="studio", fingerprint="b" * 64)
    assert caught.value.job_id == job.job_id and "different request" in str(caught.value)


def test_a_retrys_prepare_runs_only_for_a_job_that_is_admitted(managers):
    """prepare (RetryJob copying what the old job stored) runs once the limits have room, and what it sets
    is stored with the job; a repeated id or a full queue never reaches it (no copies left behind)."""
    manager = managers(max_concurrent=0, max_queued=2)
    prepared = []

    def prepare(job):
        prepared.append(job.job_id)
        job.stage_outputs["tts"] = f"jobs/{job.job_id}/timeline.json"

    job, existing = manager.submit({}, client_request_id="retry-1", owner="studio", prepare=prepare)
    assert not existing and prepared == [job.job_id]
    assert manager.get(job.job_id).stage_outputs == {"tts": f"jobs/{job.job_id}/timeline.json"}
    again, existing = manager.submit({}, client_request_id="retry-1", owner="studio", prepare=prepare)
    assert existing and again.job_id == job.job_id and prepared == [job.job_id]
    manager.submit({}, owner="ads")
    with pytest.raises(QueueFull):
        manager.submit({}, owner="studio", prepare=prepare)
    assert prepared == [job.job_id] and len(manager.active()) == 2


def test_the_default_per_principal_limit_is_a_fair_share(monkeypatch):
    from services.gateway.server import per_principal_limit

    monkeypatch.delenv("LIKENESS_MAX_JOBS_PER_PRINCIPAL", raising=False)
    monkeypatch.setenv("LIKENESS_MAX_QUEUED_JOBS", "16")
    assert per_principal_limit() == 4  # a quarter of the queue: one tenant cannot fill it
    monkeypatch.setenv("LIKENESS_MAX_QUEUED_JOBS", "2")
    assert per_principal_limit() == 1
    monkeypatch.setenv("LIKENESS_MAX_JOBS_PER_PRINCIPAL", "0")
    assert per_principal_limit() == 0  # asked for: no limit


def test_a_run_whose_end_was_lost_in_an_outage_is_run_again(pg_server, managers):
    """The database away longer than the lease when a job ends: its end is not written (the worker gives
    up after the lease) and its row still names this replica. The replica must not go on renewing a lease
    for a job nothing runs (it would stay RUNNING for ever): the lease lapses, the job is claimed again
    and ends (attempt 2; its stages would be skipped as stored)."""
    release, runs = threading.Event(), []

    def run(job, ctx):
        runs.append(job.attempts)
        if job.attempts == 1:
            release.wait(10)

    manager = managers(run, lease_s=1.0)
    job, _ = manager.submit({})
    assert wait_for(lambda: runs == [1])
    pg_server.kill()
    release.set()
    time.sleep(7.0)  # one write waits out the pool (5 s), then the worker gives up (lease: 1 s)
    pg_server.start()
    assert wait_for(lambda: _state(manager, job.job_id) is JobState.SUCCEEDED, timeout=15)
    assert runs == [1, 2] and manager.get(job.job_id).attempts == 2


def test_a_queued_job_wakes_one_free_worker_not_all(database):
    """A queued job's notification wakes one of a replica's free workers: one claim takes it, where
    eight workers all claiming at once would find it taken seven times."""
    claims: list[float] = []

    class Counting(JobManager):
        def _claim(self):
            claims.append(time.monotonic())
            return super()._claim()

    manager = Counting(lambda job, ctx: None, database, max_concurrent=8, lease_s=30.0)
    try:
        assert wait_for(lambda: len(claims) >= 8)  # each worker looked once at start, then waits (1 s)
        time.sleep(0.1)
        submitted = time.monotonic()
        job, _ = manager.submit({})
        assert wait_for(lambda: manager.get(job.job_id).state is JobState.SUCCEEDED, timeout=0.8)
        time.sleep(0.1)
        after = [t for t in claims if t >= submitted]
        # the woken worker's claim, and its look for more once the job ran (the others still waiting)
        assert 1 <= len(after) <= 2, len(after)
    finally:
        manager.close()


def test_notifications_remember_a_bounded_number_of_jobs(database):
    """A replica sees every job's notifications for as long as it runs: it remembers the latest
    MAX_KEYS; a waiter on a forgotten job still wakes on its next change."""
    from services.gateway.db import JOB_CHANNEL, Notifications

    events = Notifications(database.dsn)
    events.MAX_KEYS = 100
    try:
        assert events.connected.wait(5)
        first = events.version("job0")
        with database.connect() as conn:
            conn.execute(f"SELECT pg_notify('{JOB_CHANNEL}', 'job' || g || ' SUCCEEDED') FROM generate_series(0, 999) g")
        assert wait_for(lambda: events.version("job999") != first)
        assert len(events._versions) <= 100
        old = events.version("job0")  # forgotten: moved past what was read before its change
        assert old != first
        woken = []
        waiter = threading.Thread(target=lambda: woken.append(events.wait("job0", old, 5.0)))
        waiter.start()
        time.sleep(0.2)
        with database.connect() as conn:
            conn.execute(f"SELECT pg_notify('{JOB_CHANNEL}', 'job0 RUNNING')")
        waiter.join(5)
        assert woken and woken[0] != old
    finally:
        events.close()
