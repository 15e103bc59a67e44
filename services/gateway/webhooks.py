"""Webhooks: when a job ends, POST its final record to the URL its client gave.

A backend that submits many jobs should not have to hold a WatchJob stream open for each. Each
finished job's delivery runs on its own thread (one slow endpoint holds up nobody else). The body is
the Job as GetJob returns it (proto3 JSON, presigned video URL included); with a secret the gateway
signs it like Stripe does (`Likeness-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`, see `verify`). Network errors, 408, 429 and 5xx are retried after doubling waits; a
2xx is delivered; any other answer (a 4xx, a redirect: never followed, a POST must not turn into a
GET elsewhere) is final. How it went is kept on the job record (`Job.webhook`), so GetJob shows it
and a restarted gateway sends the ones still pending.
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

from services.common import config
from services.common.errors import InputError
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
    """Sends each finished job's webhook; `body(job)` gives the bytes to POST."""

    def __init__(self, manager: JobManager, body: Callable[[Job], bytes], *, secret: str | None = None,
                 attempts: int | None = None, backoff_s: float | None = None,
                 timeout_s: float | None = None) -> None:
        self._manager, self._body = manager, body
        self.secret = config.get_str("LIKENESS_WEBHOOK_SECRET") if secret is None else secret
        self.attempts = max(1, attempts if attempts is not None else config.get_int("LIKENESS_WEBHOOK_ATTEMPTS"))
        self.backoff_s = backoff_s if backoff_s is not None else config.get_float("LIKENESS_WEBHOOK_BACKOFF_S")
        self.timeout_s = timeout_s if timeout_s is not None else config.get_float("LIKENESS_WEBHOOK_TIMEOUT_S")
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._lock = threading.Lock()
        self._sending: set[str] = set()

    def job_finished(self, job: Job) -> None:
        """Starts the delivery of a finished job's webhook, if it has one still to send."""
        if not job.request.get("webhook_url") or not job.state.terminal:
            return
        if job.webhook.get("state", PENDING) != PENDING:
            return
        with self._lock:
            if job.job_id in self._sending:
                return
            self._sending.add(job.job_id)
        threading.Thread(target=self._deliver, args=(job,), name=f"webhook-{job.job_id[:8]}", daemon=True).start()

    def resume(self, jobs: list[Job]) -> None:
        """After a restart: the finished jobs whose webhooks were still pending."""
        for job in jobs:
            self.job_finished(job)

    def _deliver(self, job: Job) -> None:
        try:
            url = job.request["webhook_url"]
            delivery = {"state": PENDING, "attempts": 0, "http_status": 0, "error": "", **job.webhook}
            body = self._body(job)
            event = f"job.{job.state.value.lower()}"
            wait = self.backoff_s
            while True:
                attempt = self._post(url, body, event, job.job_id)
                delivery.update(attempts=delivery["attempts"] + 1, http_status=attempt.http_status,
                                error=attempt.error)
                if 200 <= attempt.http_status < 300:
                    delivery["state"] = DELIVERED
                elif not attempt.retry or delivery["attempts"] >= self.attempts:
                    delivery["state"] = FAILED
                self._manager.set_webhook(job.job_id, dict(delivery))
                WEBHOOKS.labels(delivery["state"].lower() if delivery["state"] != PENDING else "retried").inc()
                if delivery["state"] != PENDING:
                    if delivery["state"] == FAILED:
                        log.warning("webhook of job %s failed after %d attempts: %s", job.job_id,
                                    delivery["attempts"], attempt.error)
                    return
                time.sleep(wait)
                wait *= 2
        except Exception:  # a bug must not take the gateway down; the record stays PENDING
            log.exception("webhook of job %s", job.job_id)
        finally:
            with self._lock:
                self._sending.discard(job.job_id)

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
