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

import base64
import hashlib
import hmac
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable

from psycopg.types.json import Jsonb

from services.common import config
from services.common.domain.errors import InputError
from services.gateway.db import WEBHOOK_CHANNEL
from services.gateway.jobs import Job, JobManager
from services.gateway.metrics import WEBHOOKS

log = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED = "PENDING", "DELIVERED", "FAILED"
MAX_URL_CHARS = 2048
SIGNATURE_TOLERANCE_S = 300


def check_url(url: str) -> str:
    """The URL if the gateway may POST to it, else InputError on `webhook_url`: https (http only with
    LIKENESS_WEBHOOK_ALLOW_HTTP), a host among LIKENESS_WEBHOOK_ALLOWED_HOSTS when that is set, and a
    host that resolves to public addresses only (or to LIKENESS_WEBHOOK_ALLOWED_NETWORKS): a tenant
    must not make the gateway POST its jobs into the cluster, to loopback or to a cloud's metadata."""
    if len(url) > MAX_URL_CHARS:
        raise InputError("webhook_url", f"at most {MAX_URL_CHARS} characters")
    host, port = _target(url)
    resolve_checked(host, port)
    return url


def _target(url: str) -> tuple[str, int]:
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise InputError("webhook_url", "is not a URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InputError("webhook_url", "must be an https:// URL with a host")
    if parts.scheme == "http" and not config.get_bool("LIKENESS_WEBHOOK_ALLOW_HTTP"):
        raise InputError("webhook_url", "must be https:// (the gateway allows http:// only with "
                                        "LIKENESS_WEBHOOK_ALLOW_HTTP)")
    allowed = {h.strip().lower() for h in config.get_str("LIKENESS_WEBHOOK_ALLOWED_HOSTS").split(",") if h.strip()}
    if allowed and host.lower() not in allowed:
        raise InputError("webhook_url", "the gateway may not call this host (LIKENESS_WEBHOOK_ALLOWED_HOSTS)")
    return host, port or (443 if parts.scheme == "https" else 80)


def resolve_checked(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, every one of them public or in an allowed network; else
    InputError (the message names no address: what the cluster's DNS says is not the tenant's business)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise InputError("webhook_url", "its host does not resolve") from None
    allowed = _allowed_networks()
    addresses = sorted({info[4][0] for info in infos})
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        public = ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)
        if not public and not any(ip in network for network in allowed):
            raise InputError("webhook_url", "its host is not a public address (loopback, private, link-local, "
                                            "multicast or reserved); LIKENESS_WEBHOOK_ALLOWED_NETWORKS "
                                            "allows such networks")
    return addresses


def _allowed_networks() -> list:
    networks = []
    for text in config.get_str("LIKENESS_WEBHOOK_ALLOWED_NETWORKS").split(","):
        if text.strip():
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
    return networks


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


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature (`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`),
    so receivers can use a stock verifier. A `whsec_<base64>` secret is used as the spec says (its
    bytes); any other as its UTF-8 bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify_standard(secret: str, headers: dict[str, str], body: bytes, *, now: float | None = None,
                    tolerance_s: float = SIGNATURE_TOLERANCE_S) -> bool:
    """For receivers: are these Standard Webhooks headers (webhook-id, -timestamp, -signature) this
    body's, made recently? (Header names in lower case.)"""
    try:
        msg_id, timestamp = headers["webhook-id"], int(headers["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = standard_signature(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, sig) for sig in headers.get("webhook-signature", "").split())


@dataclass
class Attempt:
    http_status: int  # 0: no response
    error: str
    retry: bool


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
        attempt = self._post(job.request.webhook_url, self._body(job), f"job.{job.state.value.lower()}",
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
        """One POST to the address the URL's host resolves to now, checked again (a DNS answer that
        changed since the submission to an internal address is refused) and connected to as checked:
        no second lookup between the check and the connection. Redirects are answers, not followed."""
        headers = {"Content-Type": "application/json", "User-Agent": "likeness-gateway",
                   "Likeness-Event": event, "Likeness-Delivery": job_id}
        if self.secret:
            now = int(time.time())
            # Standard Webhooks headers, and the Likeness-Signature of the last release (kept for one more)
            headers.update({"webhook-id": job_id, "webhook-timestamp": str(now),
                            "webhook-signature": standard_signature(self.secret, job_id, now, body),
                            "Likeness-Signature": sign(self.secret, now, body)})
        try:
            host, port = _target(url)
            address = resolve_checked(host, port)[0]
        except InputError as exc:
            return Attempt(0, exc.message, False)
        parts = urllib.parse.urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = _PinnedConnection(parts.scheme == "https", host, address, port, self.timeout_s)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            status, reason = response.status, response.reason
        except (OSError, http.client.HTTPException) as exc:  # refused, unreachable, timed out, TLS
            return Attempt(0, type(exc).__name__ if not str(exc) else str(exc)[:200], True)
        finally:
            connection.close()
        if 200 <= status < 300:
            return Attempt(status, "", False)
        retry = status in (408, 429) or status >= 500
        return Attempt(status, f"HTTP {status} {reason}"[:200], retry)


class _PinnedConnection:
    """HTTP(S) to a checked address, with the URL's host for Host and TLS (SNI, certificate check)."""

    def __new__(cls, tls: bool, host: str, address: str, port: int, timeout_s: float):
        base = http.client.HTTPSConnection if tls else http.client.HTTPConnection
        kwargs = {"context": ssl.create_default_context()} if tls else {}
        connection = base(host, port, timeout=timeout_s, **kwargs)

        def connect() -> None:
            sock = socket.create_connection((address, port), timeout_s)
            connection.sock = (connection._context.wrap_socket(sock, server_hostname=host) if tls else sock)

        connection.connect = connect
        return connection
