"""Who is calling the gateway: API keys, one principal each, and what a principal may see.

Off unless LIKENESS_API_KEYS_FILE names a file (a Kubernetes Secret mounted as one). Its lines are
`principal:key` (blank lines and `#` comments skipped); several keys may share a principal, so a key
is rotated by adding the new line, moving clients over, then deleting the old one. The file is read
again when it changes, without a restart; a change that does not parse keeps the keys in force.

Every call but health checks and reflection needs `authorization: Bearer <key>` metadata, else
UNAUTHENTICATED. The servicer reads the caller's principal from `current_principal()`: jobs and
uploaded assets belong to whoever made them, and another principal's job or asset answers as if it did
not exist (NOT_FOUND, or "not found; upload it first"), so ids do not leak across teams.
"""
from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
from prometheus_client import Counter

from services.common import config

log = logging.getLogger(__name__)

AUTH_FAILURES = Counter("likeness_auth_failures_total", "Gateway calls refused as UNAUTHENTICATED.", ["reason"])
EXEMPT_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
PRINCIPAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_KEY_CHARS = 16

_principal: contextvars.ContextVar[str] = contextvars.ContextVar("likeness_principal", default="")


def current_principal() -> str:
    """The caller of the call being handled ("" when API keys are off)."""
    return _principal.get()


def is_admin(principal: str) -> bool:
    """Operators (LIKENESS_ADMIN_PRINCIPALS) see and manage every principal's jobs and uploads."""
    admins = {name.strip() for name in config.get_str("LIKENESS_ADMIN_PRINCIPALS").split(",")}
    return bool(principal) and principal in admins


class AuthConfigError(ValueError):
    """The key file or the TLS files cannot be used (the gateway refuses to start on it)."""


def parse_keys(text: str, source: str = "API keys") -> dict[bytes, str]:
    """`principal:key` lines -> {sha256(key): principal}. Raises AuthConfigError naming the line."""
    keys: dict[bytes, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        principal, sep, key = (part.strip() for part in line.partition(":"))
        if not sep or not PRINCIPAL.match(principal):
            raise AuthConfigError(f"{source} line {number}: expected 'principal:key' with a principal of "
                               "letters, digits, '.', '_', '@', '-' (at most 64)")
        if len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key):
            raise AuthConfigError(f"{source} line {number}: the key must be at least {MIN_KEY_CHARS} "
                               "characters without spaces")
        digest = hashlib.sha256(key.encode()).digest()
        if digest in keys and keys[digest] != principal:
            raise AuthConfigError(f"{source} line {number}: this key is already {keys[digest]!r}'s")
        keys[digest] = principal
    if not keys:
        raise AuthConfigError(f"{source}: no keys (an empty file would lock every client out)")
    return keys


class ApiKeys:
    """The key file, re-read whenever its modification time or size changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[float, int] | None = None
        self._keys = parse_keys(self.path.read_text(), str(self.path))  # at start: fail loudly
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime, st.st_size

    def _refresh(self) -> None:
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return
        try:
            self._keys = parse_keys(self.path.read_text(), str(self.path))
            log.info("API keys reloaded from %s (%d keys)", self.path, len(self._keys))
        except (OSError, UnicodeDecodeError, AuthConfigError) as exc:
            log.error("API keys not reloaded, the previous ones stay in force: %s", exc)
        self._stamp = stamp

    def principal(self, key: str) -> str | None:
        self._refresh()
        digest = hashlib.sha256(key.encode()).digest()
        for known, principal in self._keys.items():  # compare digests in constant time
            if hmac.compare_digest(known, digest):
                return principal
        return None


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without a known key; runs the handler with the caller's principal set."""

    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method.lstrip("/").startswith(EXEMPT_SERVICES):
            return handler
        metadata = dict(details.invocation_metadata or ())
        scheme, _, key = str(metadata.get("authorization", "")).partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _refusal(handler, "missing", "send the API key as 'authorization: Bearer <key>' metadata")
        principal = self.keys.principal(key.strip())
        if principal is None:
            return _refusal(handler, "unknown_key", "unknown API key")
        return _with_principal(handler, principal)


def _refusal(handler: grpc.RpcMethodHandler, reason: str, message: str) -> grpc.RpcMethodHandler:
    AUTH_FAILURES.labels(reason).inc()

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    def refuse_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # (a generator, as grpc expects of a streaming handler)

    return _wrap(handler, lambda fn: refuse, lambda fn: refuse_stream)


def _with_principal(handler: grpc.RpcMethodHandler, principal: str) -> grpc.RpcMethodHandler:
    def unary(fn: Callable) -> Callable:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            token = _principal.set(principal)
            try:
                return fn(request, context)
            finally:
                _principal.reset(token)
        return handle

    def stream(fn: Callable) -> Callable:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # A generator resumes in whatever context grpc steps it from: set the principal per step.
            responses = fn(request, context)
            while True:
                token = _principal.set(principal)
                try:
                    response = next(responses)
                except StopIteration:
                    return
                finally:
                    _principal.reset(token)
                yield response
        return handle

    return _wrap(handler, unary, stream)


def _wrap(handler: grpc.RpcMethodHandler, unary: Callable, stream: Callable) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        return handler._replace(unary_unary=unary(handler.unary_unary))
    if handler.stream_unary:
        return handler._replace(stream_unary=unary(handler.stream_unary))
    if handler.unary_stream:
        return handler._replace(unary_stream=stream(handler.unary_stream))
    return handler._replace(stream_stream=stream(handler.stream_stream))


def interceptor_from_env(path: str) -> AuthInterceptor | None:
    """The interceptor for LIKENESS_API_KEYS_FILE (None when unset: every caller is anonymous)."""
    if not path:
        log.warning("LIKENESS_API_KEYS_FILE is not set: the gateway accepts calls without an API key")
        return None
    if not os.path.isfile(path):
        raise AuthConfigError(f"LIKENESS_API_KEYS_FILE={path}: no such file")
    return AuthInterceptor(ApiKeys(path))


def server_credentials(cert_file: str, key_file: str) -> grpc.ServerCredentials | None:
    """TLS for the gateway's port from PEM files (None when neither is set: plaintext)."""
    if not cert_file and not key_file:
        return None
    if not (cert_file and key_file):
        raise AuthConfigError("LIKENESS_TLS_CERT_FILE and LIKENESS_TLS_KEY_FILE go together")
    return grpc.ssl_server_credentials([(Path(key_file).read_bytes(), Path(cert_file).read_bytes())])
