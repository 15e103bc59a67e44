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

import grpc
from prometheus_client import Counter

from services.common import config

log = logging.getLogger(__name__)

AUTH_FAILURES = Counter("likeness_auth_failures_total", "Gateway calls refused as UNAUTHENTICATED.", ["reason"])
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


class Unauthenticated(Exception):
    """A call without a known key (-> UNAUTHENTICATED)."""


def authenticate(keys: ApiKeys | None, metadata) -> str:
    """The caller's principal from its `authorization: Bearer <key>` metadata ("" with keys off);
    Unauthenticated (counted by reason) without a known key. Health checks and reflection are served
    without asking (services/gateway/aio.py asks for the API's methods only)."""
    if keys is None:
        return ""
    scheme, _, key = str(dict(metadata or ()).get("authorization", "")).partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        AUTH_FAILURES.labels("missing").inc()
        raise Unauthenticated("send the API key as 'authorization: Bearer <key>' metadata")
    principal = keys.principal(key.strip())
    if principal is None:
        AUTH_FAILURES.labels("unknown_key").inc()
        raise Unauthenticated("unknown API key")
    return principal


def keys_from_env(path: str) -> ApiKeys | None:
    """The keys of LIKENESS_API_KEYS_FILE (None when unset: every caller is anonymous)."""
    if not path:
        log.warning("LIKENESS_API_KEYS_FILE is not set: the gateway accepts calls without an API key")
        return None
    if not os.path.isfile(path):
        raise AuthConfigError(f"LIKENESS_API_KEYS_FILE={path}: no such file")
    return ApiKeys(path)


def server_credentials(cert_file: str, key_file: str) -> grpc.ServerCredentials | None:
    """TLS for the gateway's port from PEM files (None when neither is set: plaintext)."""
    if not cert_file and not key_file:
        return None
    if not (cert_file and key_file):
        raise AuthConfigError("LIKENESS_TLS_CERT_FILE and LIKENESS_TLS_KEY_FILE go together")
    return grpc.ssl_server_credentials([(Path(key_file).read_bytes(), Path(cert_file).read_bytes())])
