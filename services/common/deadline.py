"""The caller's deadline, carried to the model calls a request makes.

The gRPC server sets it from each incoming call (context.time_remaining()); the Triton client
caps its own timeout with what is left, so a gateway job's deadline reaches every Triton call.
"""
from __future__ import annotations

import time
from contextvars import ContextVar

_expires: ContextVar[float | None] = ContextVar("likeness_deadline", default=None)


def set_remaining(seconds: float | None):
    """Starts a scope with `seconds` left (None: no deadline). Returns a token for reset()."""
    return _expires.set(None if seconds is None else time.monotonic() + seconds)


def reset(token) -> None:
    _expires.reset(token)


def remaining(default: float) -> float:
    """Seconds left in the current scope, at most `default`."""
    expires = _expires.get()
    return default if expires is None else max(0.0, min(default, expires - time.monotonic()))
