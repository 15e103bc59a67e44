"""Webhooks: when a job ends, POST its final record to the URL its client gave.

A backend that submits many jobs should not have to hold a WatchJob stream open for each. A job that
finishes leaves a row in the database's webhook outbox (in the same transaction); dispatcher threads on
every gateway replica claim due rows one at a time, so a slow endpoint holds up only its own. The body is
the Job as GetJob returns it (proto3 JSON, presigned video URL included); with a secret the gateway
signs it like Stripe does (`Likeness-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`, see `verify`). Network errors, 408, 429 and 5xx are retried after doubling waits; a
2xx is delivered; any other answer (a 4xx, a redirect: never followed, a POST must not turn into a
GET elsewhere) is final. How it went is kept on the job record (`Job.webhook`), so GetJob shows it;
a webhook still pending when every replica stops is sent when one starts again. `Likeness-Delivery`
(the job id) is the same on every attempt: receivers drop what they already have.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable

from psycopg.types.json import Jsonb

from services.common import config
from services.common.errors import InputError
from services.gateway.db import WEBHOOK_CHANNEL
from services.gateway.jobs import Job, JobManager
from services.gateway.metrics import WEBHOOKS

log = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED = "PENDING", "DELIVERED", "FAILED"
MAX_URL_CHARS = 2048
SIGNATURE_TOLERANCE_S = 300


def check_url(url: str) -> str:
    """The URL if the gateway may POST to it, else InputError on `webhook_url`."""
    if len(url) > MAX_URL_CHARS:
        raise InputError("webhook_url", f"at most {MAX_URL_CHARS} characters")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InputError("webhook_url", f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InputError("webhook_url", "must be an http:// or https:// URL with a host")
    allowed = {h.strip().lower() for h in config.get_str("LIKENESS_WEBHOOK_ALLOWED_HOSTS").split(",") if h.strip()}
    if allowed and host.lower() not in allowed:
        raise InputError("webhook_url", f"the gateway may not call {host!r} (LIKENESS_WEBHOOK_ALLOWED_HOSTS)")
    return url


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None,
           tolerance_s: float = SIGNATURE_TOLERANCE_S) -> bool:
    """For receivers: is `header` (Likeness-Signature) this body's signature, made recently?"""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    fresh = abs((time.time() if now is None else now) - timestamp) <= tolerance_s
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), f"t={timestamp},v1={fields.get('v1', '')}")


@dataclass
class Attempt:
    http_status: int  # 0: no response
    error: str
    retry: bool


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # urllib then raises HTTPError with the 3xx: final, like any non-2xx answer


class WebhookSender:
    """Delivers the webhooks of finished jobs from the database's outbox (a row per job still to
    deliver, written in the transaction that finished it): `workers` threads per replica each claim one
    due row at a time (FOR UPDATE SKIP LOCKED, held for the POST's timeout and then some), so every
    webhook is sent by one replica at a time, at least once, and a replica that dies mid-delivery
    leaves its row to another once the claim passes. `body(job)` gives the bytes to POST."""

    def __init__(self, manager: JobManager, body: Callable[[Job], bytes], *, secret: str | None = None,
                 attempts: int | None = None, backoff_s: float | None = None,
                 timeout_s: float | None = None, workers: int = 4) -> None:
        self._manager, self._body = manager, body
        self.secret = config.get_str("LIKENESS_WEBHOOK_SECRET") if secret is None else secret
        self.attempts = max(1, attempts if attempts is not None else config.get_int("LIKENESS_WEBHOOK_ATTEMPTS"))
        self.backoff_s = backoff_s if backoff_s is not None else config.get_float("LIKENESS_WEBHOOK_BACKOFF_S")
        self.timeout_s = timeout_s if timeout_s is not None else config.get_float("LIKENESS_WEBHOOK_TIMEOUT_S")
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._closed = threading.Event()
        for i in range(workers):
            threading.Thread(target=self._dispatch, name=f"webhooks-{i}", daemon=True).start()

    def close(self) -> None:
        self._closed.set()

    def _dispatch(self) -> None:
        events = self._manager.events
        while not self._closed.is_set():
            seen = events.version(WEBHOOK_CHANNEL)
            try:
                job = self._claim()
            except Exception:  # noqa: BLE001 - the database restarting: look again shortly
                log.warning("webhook outbox not read; trying again")
                job = None
            if job is None:
                events.wait(WEBHOOK_CHANNEL, seen, 1.0)  # due retries are found by looking
                continue
            try:
                self._attempt(job)
            except Exception:  # noqa: BLE001 - a bug must not stop the dispatcher; the claim lapses
                log.exception("webhook of job %s", job.job_id)

    def _claim(self) -> Job | None:
        with self._manager.db.connect() as conn:
            row = conn.execute(
                "UPDATE webhook_outbox SET claimed_by = %(me)s, "
                "claimed_until = now() + make_interval(secs => %(hold)s) "
                "WHERE job_id = (SELECT job_id FROM webhook_outbox WHERE due_at <= now() AND "
                "(claimed_until IS NULL OR claimed_until < now()) ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "RETURNING job_id", {"me": self._manager.instance_id, "hold": 2 * self.timeout_s + 5}).fetchone()
        if row is None:
            return None
        try:
            return self._manager.get(row["job_id"])
        except KeyError:  # deleted meanwhile (its outbox row went with it)
            return None

    def _attempt(self, job: Job) -> None:
        """One POST; then the outbox row goes (delivered, or failed for good) or waits for its retry."""
        delivery = {"state": PENDING, "attempts": 0, "http_status": 0, "error": "", **job.webhook}
        attempt = self._post(job.request["webhook_url"], self._body(job), f"job.{job.state.value.lower()}",
                             job.job_id)
        delivery.update(attempts=delivery["attempts"] + 1, http_status=attempt.http_status, error=attempt.error)
        if 200 <= attempt.http_status < 300:
            delivery["state"] = DELIVERED
        elif not attempt.retry or delivery["attempts"] >= self.attempts:
            delivery["state"] = FAILED
            log.warning("webhook of job %s failed after %d attempts: %s", job.job_id, delivery["attempts"],
                        attempt.error)
        WEBHOOKS.labels(delivery["state"].lower() if delivery["state"] != PENDING else "retried").inc()
        wait_s = self.backoff_s * 2 ** (delivery["attempts"] - 1)
        with self._manager.db.connect() as conn, conn.transaction():
            conn.execute("UPDATE jobs SET webhook = %s, updated_at = clock_timestamp() WHERE job_id = %s",
                         (Jsonb(delivery), job.job_id))
            if delivery["state"] == PENDING:
                conn.execute("UPDATE webhook_outbox SET due_at = now() + make_interval(secs => %s), "
                             "claimed_by = '', claimed_until = NULL WHERE job_id = %s", (wait_s, job.job_id))
            else:
                conn.execute("DELETE FROM webhook_outbox WHERE job_id = %s", (job.job_id,))

    def _post(self, url: str, body: bytes, event: str, job_id: str) -> Attempt:
        headers = {"Content-Type": "application/json", "User-Agent": "likeness-gateway",
                   "Likeness-Event": event, "Likeness-Delivery": job_id}
        if self.secret:
            headers["Likeness-Signature"] = sign(self.secret, int(time.time()), body)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return Attempt(response.status, "", False)
        except urllib.error.HTTPError as exc:
            retry = exc.code in (408, 429) or exc.code >= 500
            return Attempt(exc.code, f"HTTP {exc.code} {exc.reason}", retry)
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out, TLS
            return Attempt(0, str(getattr(exc, "reason", exc)), True)
