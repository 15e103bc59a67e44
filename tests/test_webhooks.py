"""Webhooks against a real HTTP server on loopback and a real PostgreSQL outbox: delivery, signature,
retries with backoff, what is final, one delivery with several replicas, what a restarted gateway sends,
which URLs a submission may name. (Through the whole platform: tests/test_platform_jobs.py.)"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.common import config
from services.common.domain.errors import InputError
from services.gateway import webhooks
from services.gateway.jobs import Job, JobManager
from services.pipeline import Stored, VideoRequest

SECRET = "test-secret"
LOOPBACK_ALLOWED = {"LIKENESS_WEBHOOK_ALLOW_HTTP": "1", "LIKENESS_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128"}


@pytest.fixture(autouse=True)
def loopback_receivers(monkeypatch):
    """The receivers here are http:// on loopback, which the gateway refuses unless the operator allows it."""
    for name, value in LOOPBACK_ALLOWED.items():
        monkeypatch.setenv(name, value)


class Receiver:
    """An HTTP server that answers POSTs with the given statuses in turn (then 200) and keeps them."""

    def __init__(self, statuses: list[int] | None = None, location: str = "") -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict, bytes, float]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # noqa: N815 - a followed redirect would arrive here

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/likeness"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made: list[Receiver] = []

    def make(*args, **kwargs) -> Receiver:
        made.append(Receiver(*args, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def body_of(job: Job) -> bytes:
    return json.dumps({"jobId": job.job_id, "state": job.state.value}).encode()


def hooked(url: str) -> VideoRequest:
    """A job request whose end is reported to `url`."""
    return VideoRequest(photo=Stored("assets/" + "a" * 64), script="Hello.", webhook_url=url)


@pytest.fixture
def run_job(database):
    """run_job(url, fail=, attempts=, secret=) -> (manager, job id): a real JobManager whose job ends at
    once and a sender on the same database, as the gateway's main() wires them."""
    made: list = []

    def run(url: str, *, fail: bool = False, attempts: int = 4, secret: str = SECRET) -> tuple[JobManager, str]:
        def work(job: Job, ctx) -> None:
            if fail:
                raise RuntimeError("the render service fell over")

        manager = JobManager(work, database, request_type=VideoRequest)
        made.append(manager)
        made.append(webhooks.WebhookSender(manager, body_of, secret=secret, attempts=attempts, backoff_s=0.05,
                                           timeout_s=5))
        job, _ = manager.submit(hooked(url))
        return manager, job.job_id

    yield run
    for thing in reversed(made):
        thing.close()


def wait_webhook(manager: JobManager, job_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivery = manager.get(job_id).webhook
        if delivery.get("state") in (webhooks.DELIVERED, webhooks.FAILED):
            return delivery
        time.sleep(0.02)
    raise AssertionError(f"webhook never ended: {manager.get(job_id).webhook}")


def test_a_finished_job_is_posted_once_signed(receiver_factory, run_job):
    receiver = receiver_factory()
    manager, job_id = run_job(receiver.url)
    delivery = wait_webhook(manager, job_id)
    assert delivery == {"state": "DELIVERED", "attempts": 1, "http_status": 200, "error": ""}
    [(headers, body, _)] = receiver.received
    assert json.loads(body) == {"jobId": job_id, "state": "SUCCEEDED"}
    assert headers["content-type"] == "application/json"
    assert headers["likeness-event"] == "job.succeeded" and headers["likeness-delivery"] == job_id
    assert webhooks.verify(SECRET, headers["likeness-signature"], body)
    assert headers["webhook-id"] == job_id and webhooks.verify_standard(SECRET, headers, body)  # Standard Webhooks
    assert not webhooks.verify_standard(SECRET, headers, body + b" ")
    assert not webhooks.verify("another-secret", headers["likeness-signature"], body)
    assert not webhooks.verify(SECRET, headers["likeness-signature"], body.replace(b"SUCCEEDED", b"FAILED"))
    assert not webhooks.verify(SECRET, headers["likeness-signature"], body, now=time.time() + 3600)


def test_a_failed_job_is_posted_too_and_unsigned_without_a_secret(receiver_factory, run_job):
    receiver = receiver_factory()
    manager, job_id = run_job(receiver.url, fail=True, secret="")
    assert wait_webhook(manager, job_id)["state"] == "DELIVERED"
    [(headers, body, _)] = receiver.received
    assert json.loads(body)["state"] == "FAILED" and headers["likeness-event"] == "job.failed"
    assert "likeness-signature" not in headers


def test_server_errors_are_retried_with_growing_waits(receiver_factory, run_job):
    receiver = receiver_factory([503, 500, 429])
    manager, job_id = run_job(receiver.url)
    assert wait_webhook(manager, job_id) == {"state": "DELIVERED", "attempts": 4, "http_status": 200, "error": ""}
    times = [t for _, _, t in receiver.received]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) == 3 and gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # 0.05 s, doubling
    assert len({body for _, body, _ in receiver.received}) == 1  # the same body every time


@pytest.mark.parametrize("status", [400, 404, 410])
def test_a_client_error_is_final(receiver_factory, run_job, status):
    receiver = receiver_factory([status])
    manager, job_id = run_job(receiver.url)
    delivery = wait_webhook(manager, job_id)
    assert delivery["state"] == "FAILED" and delivery["attempts"] == 1 and delivery["http_status"] == status
    assert str(status) in delivery["error"]
    time.sleep(0.3)
    assert len(receiver.received) == 1


def test_a_redirect_is_not_followed(receiver_factory, run_job):
    target = receiver_factory()
    receiver = receiver_factory([302], location=target.url)
    manager, job_id = run_job(receiver.url)
    delivery = wait_webhook(manager, job_id)
    assert delivery["state"] == "FAILED" and delivery["http_status"] == 302
    assert target.received == []


def test_it_gives_up_after_the_configured_attempts(receiver_factory, run_job):
    receiver = receiver_factory([503] * 10)
    manager, job_id = run_job(receiver.url, attempts=3)
    delivery = wait_webhook(manager, job_id)
    assert delivery == {"state": "FAILED", "attempts": 3, "http_status": 503,
                        "error": "HTTP 503 Service Unavailable"}
    assert len(receiver.received) == 3


def test_an_unreachable_endpoint_is_retried_then_failed(receiver_factory, run_job):
    receiver = receiver_factory()
    url = receiver.url
    receiver.close()  # nothing listens there any more: connection refused
    manager, job_id = run_job(url, attempts=2)
    delivery = wait_webhook(manager, job_id)
    assert delivery["state"] == "FAILED" and delivery["attempts"] == 2 and delivery["http_status"] == 0
    assert delivery["error"]


def test_a_pending_webhook_is_sent_once_a_gateway_runs_again(receiver_factory, database):
    """The outbox row is written with the job's end: with no gateway running (all replicas down) it waits,
    and the next gateway that starts sends it, once; a delivered one is not sent again."""
    receiver = receiver_factory()
    manager = JobManager(lambda job, ctx: None, database, request_type=VideoRequest)
    job, _ = manager.submit(hooked(receiver.url))
    done, _ = manager.submit(hooked(receiver.url))
    deadline = time.monotonic() + 10
    while not (manager.get(job.job_id).state.terminal and manager.get(done.job_id).state.terminal):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with database.connect() as conn:
        assert {r["job_id"] for r in conn.execute("SELECT job_id FROM webhook_outbox")} == {job.job_id, done.job_id}
        conn.execute("DELETE FROM webhook_outbox WHERE job_id = %s", (done.job_id,))  # (as if delivered)
    senders = [webhooks.WebhookSender(manager, body_of, secret=SECRET, attempts=5, backoff_s=0.05)
               for _ in range(3)]  # three replicas' dispatchers
    try:
        assert wait_webhook(manager, job.job_id) == {"state": "DELIVERED", "attempts": 1, "http_status": 200,
                                                     "error": ""}
        time.sleep(0.5)
        assert [json.loads(body)["jobId"] for _, body, _ in receiver.received] == [job.job_id]
        with database.connect() as conn:
            assert conn.execute("SELECT count(*) AS n FROM webhook_outbox").fetchone()["n"] == 0
    finally:
        for sender in senders:
            sender.close()
        manager.close()


def test_a_claimed_delivery_of_a_dead_replica_is_taken_over(receiver_factory, database):
    """A replica that claimed a webhook and died before it was sent: the claim lapses and another
    replica sends it (at least once)."""
    receiver = receiver_factory()
    manager = JobManager(lambda job, ctx: None, database, request_type=VideoRequest)
    job, _ = manager.submit(hooked(receiver.url))
    deadline = time.monotonic() + 10
    while not manager.get(job.job_id).state.terminal:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with database.connect() as conn:  # claimed by a replica that is gone, for 1 more second
        conn.execute("UPDATE webhook_outbox SET claimed_by = 'dead', claimed_until = now() + interval '1 second'")
    sender = webhooks.WebhookSender(manager, body_of, secret=SECRET, attempts=5, backoff_s=0.05)
    try:
        time.sleep(0.5)
        assert receiver.received == []  # still claimed
        assert wait_webhook(manager, job.job_id)["state"] == "DELIVERED"
        assert len(receiver.received) == 1
    finally:
        sender.close()
        manager.close()


@pytest.mark.parametrize("url,reason", [
    ("ftp://example.com/hook", "http"),
    ("example.com/hook", "http"),
    ("https:///no-host", "http"),
    ("http://example.com:99999/hook", "not a URL"),
    ("https://example.com/" + "a" * 3000, "2048"),
])
def test_bad_webhook_urls_are_refused(url, reason):
    with pytest.raises(InputError) as info:
        webhooks.check_url(url)
    assert info.value.field == "webhook_url" and reason in info.value.message


def test_allowed_hosts_limit_where_webhooks_go():
    with config.override("LIKENESS_WEBHOOK_ALLOWED_HOSTS", "localhost, 127.0.0.1"):
        assert webhooks.check_url("https://localhost/likeness")
        assert webhooks.check_url("http://127.0.0.1:8080/x")
        with pytest.raises(InputError) as info:
            webhooks.check_url("https://127.0.0.2/likeness")
        assert "LIKENESS_WEBHOOK_ALLOWED_HOSTS" in info.value.message
    assert webhooks.check_url("https://127.0.0.2/likeness")  # unset: any host (at an allowed address)


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook", "https://localhost:8443/hook", "https://[::1]/hook", "https://10.0.0.7/hook",
    "https://169.254.169.254/latest/meta-data", "https://192.168.1.10/x", "https://0.0.0.0/x",
    "https://[fe80::1]/x", "https://224.0.0.1/x", "https://100.64.0.1/x",
])
def test_internal_addresses_are_refused_unless_allowed(url, monkeypatch):
    """SSRF: a tenant cannot make the gateway POST a job (presigned URL included) into the cluster, to
    loopback or to a cloud metadata service; the refusal names no address."""
    monkeypatch.delenv("LIKENESS_WEBHOOK_ALLOWED_NETWORKS")
    with pytest.raises(InputError) as info:
        webhooks.check_url(url)
    assert info.value.field == "webhook_url" and "not a public address" in info.value.message
    assert "127.0.0.1" not in info.value.message and "10.0.0.7" not in info.value.message
    monkeypatch.setenv("LIKENESS_WEBHOOK_ALLOWED_NETWORKS", "0.0.0.0/0,::/0")  # the operator allows them
    assert webhooks.check_url(url) == url


def test_plain_http_needs_the_operators_consent(monkeypatch):
    monkeypatch.delenv("LIKENESS_WEBHOOK_ALLOW_HTTP")
    with pytest.raises(InputError) as info:
        webhooks.check_url("http://127.0.0.1:9/hook")
    assert "https" in info.value.message
    with pytest.raises(InputError) as info:
        webhooks.check_url("https://no-such-host.invalid/hook")
    assert "does not resolve" in info.value.message


def test_an_address_refused_at_delivery_is_not_posted(receiver_factory, run_job, monkeypatch):
    """Checked again when sent, and connected to as checked: a host whose address became internal
    after the submission (DNS rebinding; here the operator's allowance withdrawn) gets nothing."""
    receiver = receiver_factory()
    monkeypatch.setenv("LIKENESS_WEBHOOK_ALLOWED_NETWORKS", "")
    manager, job_id = run_job(receiver.url)
    delivery = wait_webhook(manager, job_id)
    assert delivery["state"] == "FAILED" and delivery["attempts"] == 1 and "not a public address" in delivery["error"]
    assert receiver.received == []


def test_standard_webhooks_signature_matches_the_specs_example():
    """The example of the Standard Webhooks spec (its reference libraries' tests): a stock verifier accepts
    what the gateway signs with a whsec_ secret."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert webhooks.standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
