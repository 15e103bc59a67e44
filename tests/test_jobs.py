"""The gateway's job manager on its own: queue limits, idempotency, cancel, watch, restart."""
from __future__ import annotations

import json
import threading
import time

import pytest

from services.gateway.jobs import JobFailed, JobManager, JobState, MemoryJobStore, PrincipalBusy, QueueFull


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_runs_jobs_and_reports_progress():
    def run(job, ctx):
        for i in range(3):
            ctx.report("render", i / 3)
        ctx.stage_done("render", f"jobs/{job.job_id}/video.mp4")
        job.result["video_key"] = f"jobs/{job.job_id}/video.mp4"

    manager = JobManager(run, max_concurrent=1)
    job, existing = manager.submit({"script": "hi"})
    events = list(manager.watch(job.job_id, timeout_s=5))
    assert not existing
    assert events[-1].state is JobState.SUCCEEDED and events[-1].progress == 1.0
    assert events[-1].result["video_key"].endswith("video.mp4")
    assert any(e.stage == "render" and 0 < e.progress < 1 for e in events) or len(events) >= 1


def test_same_client_request_id_is_the_same_job():
    manager = JobManager(lambda job, ctx: None, max_concurrent=1)
    first, existing1 = manager.submit({"a": 1}, client_request_id="req-1")
    second, existing2 = manager.submit({"a": 1}, client_request_id="req-1")
    assert first.job_id == second.job_id and not existing1 and existing2


def test_queue_full_is_refused_then_accepts_again():
    release = threading.Event()
    manager = JobManager(lambda job, ctx: release.wait(5), max_concurrent=1, max_queued=2)
    running, _ = manager.submit({})
    assert wait_for(lambda: manager.get(running.job_id).state is JobState.RUNNING)
    manager.submit({})
    manager.submit({})
    with pytest.raises(QueueFull):
        manager.submit({})
    release.set()
    assert wait_for(lambda: manager.queue_depth == 0)
    manager.submit({})


def test_one_principal_cannot_take_the_whole_queue():
    release = threading.Event()
    manager = JobManager(lambda job, ctx: release.wait(5), max_concurrent=1, max_queued=10,
                         max_active_per_owner=2)
    first, _ = manager.submit({}, owner="studio")
    second, _ = manager.submit({}, client_request_id="r", owner="studio")  # one running, one queued
    with pytest.raises(PrincipalBusy) as caught:
        manager.submit({}, owner="studio")
    assert caught.value.subject == "principal:studio" and "limit 2 per principal" in str(caught.value)
    assert manager.submit({}, client_request_id="r", owner="studio") == (second, True)  # a retry is no new job
    manager.submit({}, owner="ads")  # the others still get their share
    for _ in range(3):
        manager.submit({})  # keys off ("" owner): only the queue's own limit
    release.set()
    assert wait_for(lambda: manager.get(first.job_id).state is JobState.SUCCEEDED)
    manager.submit({}, owner="studio")  # a finished job frees a place


def test_cancel_running_and_queued_jobs():
    started = threading.Event()

    def run(job, ctx):
        started.set()
        while True:
            ctx.report("render", 0.5)
            time.sleep(0.01)

    manager = JobManager(run, max_concurrent=1)
    running, _ = manager.submit({})
    queued, _ = manager.submit({})
    assert started.wait(5)
    assert manager.cancel(queued.job_id).state is JobState.CANCELLED
    manager.cancel(running.job_id)
    assert wait_for(lambda: manager.get(running.job_id).state is JobState.CANCELLED)


def test_failures_carry_a_status_and_the_gateway_lives_on():
    def run(job, ctx):
        if job.request.get("bad"):
            raise JobFailed("INVALID_ARGUMENT", "no face found", field="photo")
        raise RuntimeError("boom")

    manager = JobManager(run, max_concurrent=1)
    bad, _ = manager.submit({"bad": True})
    bug, _ = manager.submit({})
    assert wait_for(lambda: manager.get(bug.job_id).state.terminal)
    assert (manager.get(bad.job_id).error_code, manager.get(bad.job_id).error_field) == ("INVALID_ARGUMENT", "photo")
    assert manager.get(bug.job_id).state is JobState.FAILED and "boom" in manager.get(bug.job_id).message


def test_restart_requeues_unfinished_jobs_and_keeps_finished_ones():
    store = MemoryJobStore()
    block = threading.Event()
    first = JobManager(lambda job, ctx: block.wait(0.5) or ctx.report("tts", 1.0), max_concurrent=1, store=store)
    done, _ = first.submit({"n": 1}, client_request_id="done")
    assert wait_for(lambda: first.get(done.job_id).state is JobState.SUCCEEDED)
    # a job recorded as RUNNING when the old gateway died
    pending, _ = first.submit({"n": 2}, client_request_id="pending")
    record = store.jobs[pending.job_id].replace('"QUEUED"', '"RUNNING"')
    store.jobs[pending.job_id] = record

    ran = []
    second = JobManager(lambda job, ctx: ran.append(job.job_id), max_concurrent=1, store=store)
    assert wait_for(lambda: second.get(pending.job_id).state is JobState.SUCCEEDED)
    assert second.get(done.job_id).state is JobState.SUCCEEDED and pending.job_id in ran
    assert second.submit({}, client_request_id="done")[0].job_id == done.job_id


def test_list_pages_and_filters():
    manager = JobManager(lambda job, ctx: None, max_concurrent=2)
    ids = [manager.submit({"i": i})[0].job_id for i in range(5)]
    assert wait_for(lambda: all(manager.get(i).state is JobState.SUCCEEDED for i in ids))
    page1, token = manager.list(page_size=3)
    page2, token2 = manager.list(page_size=3, page_token=token)
    assert [j.job_id for j in page1 + page2] == ids[::-1] and token2 == ""
    assert manager.list(states={JobState.FAILED})[0] == []
    assert len(manager.list(states={JobState.SUCCEEDED})[0]) == 5


class CountingStore(MemoryJobStore):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str, float]] = []

    def save(self, job) -> None:
        super().save(job)
        self.writes.append((job.state.value, job.stage, job.progress))


def test_progress_is_persisted_sparingly_but_state_changes_always():
    store = CountingStore()
    halfway, resume = threading.Event(), threading.Event()

    def run(job, ctx):
        for stage in ("tts", "render"):
            for i in range(200):
                ctx.report(stage, i / 200)
                if stage == "render" and i == 100:
                    halfway.set()
                    resume.wait(5)
            ctx.stage_done(stage, f"jobs/{job.job_id}/{stage}")

    manager = JobManager(run, max_concurrent=1, store=store, progress_save_interval_s=60.0)
    job, _ = manager.submit({})
    assert halfway.wait(5)
    # watchers read progress from memory; the stored record still has the stage's first report
    assert manager.get(job.job_id).progress == pytest.approx(0.5)
    stored = store.load_all()[0]
    assert (stored.stage, stored.progress, stored.state) == ("render", 0.0, JobState.RUNNING)
    resume.set()
    assert wait_for(lambda: manager.get(job.job_id).state.terminal)
    # submit, start, first report of each stage, each stage's output, the end: never one per report
    states = [w[0] for w in store.writes]
    assert states[0] == "QUEUED" and states[-1] == "SUCCEEDED" and "RUNNING" in states
    assert len(store.writes) <= 8, store.writes
    final = store.load_all()[0]
    assert final.state is JobState.SUCCEEDED and set(final.stage_outputs) == {"tts", "render"}


def test_a_finished_job_can_be_forgotten_a_running_one_cannot():
    from services.gateway.jobs import JobActive

    gate = threading.Event()
    store = MemoryJobStore()
    manager = JobManager(lambda job, ctx: gate.wait(5), max_concurrent=1, store=store)
    job, _ = manager.submit({"n": 1}, client_request_id="req-9")
    assert wait_for(lambda: manager.get(job.job_id).state is JobState.RUNNING)
    with pytest.raises(JobActive, match="running"):
        manager.forget(job.job_id)
    gate.set()
    assert wait_for(lambda: manager.get(job.job_id).state is JobState.SUCCEEDED)
    manager.forget(job.job_id)
    with pytest.raises(KeyError):
        manager.get(job.job_id)
    assert manager.list()[0] == [] and job.job_id not in store.jobs
    manager.set_webhook(job.job_id, {"state": "DELIVERED"})  # a late webhook result is dropped
    assert job.job_id not in store.jobs
    again, existing = manager.submit({"n": 2}, client_request_id="req-9")  # the id is free again
    assert not existing and again.job_id != job.job_id


def test_replicas_on_one_store_run_their_own_jobs_and_take_over_a_stopped_ones():
    store = MemoryJobStore()
    first = JobManager(lambda job, ctx: None, max_concurrent=0, store=store, lease_s=0.3)
    job, _ = first.submit({"script": "hi"})  # queued (no workers): held and touched by the first
    first._update(job, state=JobState.RUNNING)  # (as if it had started it)
    second = JobManager(lambda job, ctx: None, max_concurrent=0, store=store, lease_s=0.3)
    time.sleep(1.0)  # three lease periods: the first keeps touching it, the second leaves it alone
    with pytest.raises(KeyError):
        second.get(job.job_id)
    assert store.load(job.job_id).holder == first.instance_id

    first._closed.set()  # the first stops touching (a crashed gateway: no release)
    assert wait_for(lambda: job.job_id in second._jobs, timeout=5)
    assert store.load(job.job_id).holder == second.instance_id
    assert second.get(job.job_id).state is JobState.QUEUED
    assert store.load(job.job_id).state is JobState.QUEUED  # the record says so too
    second.cancel(job.job_id)
    assert job.job_id not in store.leases()  # finished: released


def test_a_closing_replica_releases_its_queued_jobs_at_once():
    store = MemoryJobStore()
    first = JobManager(lambda job, ctx: None, max_concurrent=0, store=store, lease_s=30)
    job, _ = first.submit({})
    second = JobManager(lambda job, ctx: None, max_concurrent=0, store=store, lease_s=30)
    first.close()
    # Released now: taken on the second's next pass (every lease_s / 3 = 10 s), long before 30 s.
    assert wait_for(lambda: job.job_id in second._jobs, timeout=15)
    assert store.load(job.job_id).holder == second.instance_id


def test_two_replicas_adopting_at_once_run_a_job_once():
    store = MemoryJobStore()
    orphan, _ = JobManager(lambda job, ctx: None, max_concurrent=0, store=store).submit({})  # lease_s 0: no touch
    ran: list[str] = []
    managers = [JobManager(lambda job, ctx: ran.append(job.holder), max_concurrent=1, store=store, lease_s=0.3)
                for _ in range(2)]
    assert wait_for(lambda: len(ran) >= 1, timeout=5)
    time.sleep(1.0)
    assert len(ran) == 1 and ran[0] in {m.instance_id for m in managers}


def test_a_retried_submission_reaching_another_replica_is_the_same_job():
    store = MemoryJobStore()
    first = JobManager(lambda job, ctx: None, max_concurrent=0, store=store, lease_s=30)
    second = JobManager(lambda job, ctx: None, max_concurrent=0, store=store, lease_s=30)
    job, _ = first.submit({"script": "hi"}, client_request_id="req-9", owner="studio")
    again, existing = second.submit({"script": "hi"}, client_request_id="req-9", owner="studio")
    assert existing and again.job_id == job.job_id
    other, existing = second.submit({"script": "hi"}, client_request_id="req-9", owner="ads")
    assert not existing and other.job_id != job.job_id  # per principal


def test_every_replica_lists_every_job_newest_first(storage):
    """Gateway replicas on one real S3 store: ListJobs on any of them shows every job of the caller,
    newest first, paged, whichever replica runs it; a job deleted through one is gone from all."""
    from services.gateway.job_store import StorageJobStore
    from services.gateway.retention import Eraser

    store = StorageJobStore(storage)
    first = JobManager(lambda job, ctx: None, max_concurrent=1, store=store, lease_s=30)
    second = JobManager(lambda job, ctx: None, max_concurrent=0, store=store, lease_s=30)  # its jobs stay queued
    a = first.submit({"n": 1}, owner="studio")[0]
    time.sleep(0.01)
    b = second.submit({"n": 2}, owner="studio", client_request_id="rq-1")[0]
    time.sleep(0.01)
    c = first.submit({"n": 3}, owner="ads")[0]
    assert wait_for(lambda: first.get(c.job_id).state is JobState.SUCCEEDED)
    for manager in (first, second):
        assert [j.job_id for j in manager.list(owner="studio")[0]] == [b.job_id, a.job_id]
        assert [j.job_id for j in manager.list()[0]] == [c.job_id, b.job_id, a.job_id]  # keys off / an operator
        page, token = manager.list(page_size=2)
        rest, last = manager.list(page_size=2, page_token=token)
        assert [j.job_id for j in page + rest] == [c.job_id, b.job_id, a.job_id] and (token, last) == ("2", "")
        assert [j.job_id for j in manager.list(states={JobState.QUEUED})[0]] == [b.job_id]
        assert [j.state for j in manager.list(owner="ads")[0]] == [JobState.SUCCEEDED]

    second.cancel(b.job_id)
    Eraser(storage, first, streaming=lambda: []).delete_job(first.list(owner="studio")[0][0])  # b, through first
    assert [j.job_id for j in second.list(owner="studio")[0]] == [a.job_id]  # gone from the one that ran it
    with pytest.raises(KeyError):
        second.get(b.job_id)
    assert storage.list("requests/") == [] and len(storage.list("job-index/")) == 2
    again, existing = second.submit({"n": 2}, owner="studio", client_request_id="rq-1")  # the id is free again
    assert not existing and again.job_id != b.job_id
    first.close()
    second.close()


def test_records_saved_before_the_index_are_listed(storage):
    from services.gateway.job_store import StorageJobStore
    from services.gateway.jobs import Job

    store = StorageJobStore(storage)
    old = Job(job_id="0" * 32, request={}, owner="studio", state=JobState.SUCCEEDED, created_at=time.time() - 60)
    store.save(old)  # as an older gateway saved it: no index entry
    manager = JobManager(lambda job, ctx: None, max_concurrent=0, store=store, lease_s=30)
    new = manager.submit({}, owner="studio")[0]
    assert [j.job_id for j in manager.list(owner="studio")[0]] == [new.job_id, old.job_id]
    other = JobManager(lambda job, ctx: None, max_concurrent=0, store=store, lease_s=30)
    other.drop_local(old.job_id)  # (a replica that never loaded it) still finds it through the index
    assert [j.job_id for j in other.list(owner="studio")[0]] == [new.job_id, old.job_id]
    manager.close()
    other.close()


def test_the_lease_keeper_outlives_a_storage_outage():
    """S3 unreachable for a while must not stop a replica renewing its leases for good (the others
    would take its jobs and run them twice)."""
    class FlakyStore(MemoryJobStore):
        down = False

        def leases(self):
            if self.down:
                raise ConnectionError("storage unreachable")
            return super().leases()

    store = FlakyStore()
    manager = JobManager(lambda job, ctx: None, max_concurrent=0, store=store, lease_s=0.3)
    job, _ = manager.submit({})
    store.down = True
    time.sleep(0.5)
    store.down = False
    touched = store.touched[job.job_id]
    assert wait_for(lambda: store.touched[job.job_id] > touched, timeout=2)
    manager.close()


def test_a_storage_outage_neither_stops_a_job_nor_kills_a_worker():
    """Records the store refuses mid-job are written once it answers again; the worker goes on to
    the next job (before, the first failed write ended the worker thread for good)."""
    class FlakyStore(MemoryJobStore):
        down = False

        def save(self, job):
            if self.down:
                raise ConnectionError("storage unreachable")
            super().save(job)

    store = FlakyStore()
    release = threading.Event()
    manager = JobManager(lambda job, ctx: release.wait(5), max_concurrent=1, store=store, lease_s=0.3)
    job, _ = manager.submit({})
    assert wait_for(lambda: store.load(job.job_id).state is JobState.RUNNING)
    store.down = True
    release.set()
    assert wait_for(lambda: manager.get(job.job_id).state is JobState.SUCCEEDED)
    assert store.load(job.job_id).state is JobState.RUNNING  # not written yet
    with pytest.raises(ConnectionError):
        manager.submit({})  # no job id for a record that is not stored
    assert len(manager.list()[0]) == 1
    store.down = False
    assert wait_for(lambda: store.load(job.job_id).state is JobState.SUCCEEDED, timeout=3)
    assert wait_for(lambda: job.job_id not in store.leases(), timeout=3)
    second, _ = manager.submit({})
    assert wait_for(lambda: manager.get(second.job_id).state is JobState.SUCCEEDED)  # the worker lives
    manager.close()


def test_records_of_an_older_or_newer_gateway_load():
    from services.gateway.jobs import Job

    job = Job(job_id="a" * 32, request={"script": "hi"}, retry_of="b" * 32)
    data = json.loads(job.to_json())
    newer = Job.from_json(json.dumps({**data, "priority": 3}))  # a field a later version adds
    older = Job.from_json(json.dumps({k: v for k, v in data.items() if k not in ("retry_of", "holder")}))
    assert newer == job and older.retry_of == "" and older.request == job.request


def test_a_cancel_stops_a_call_that_sends_no_progress():
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

    manager = JobManager(run, max_concurrent=1)
    job, _ = manager.submit({})
    assert wait_for(lambda: manager.get(job.job_id).state is JobState.RUNNING)
    started = time.monotonic()
    manager.cancel(job.job_id)
    assert wait_for(lambda: manager.get(job.job_id).state is JobState.CANCELLED, timeout=3)
    assert time.monotonic() - started < 3
