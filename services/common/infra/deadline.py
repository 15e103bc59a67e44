"""Deadlines: one `Deadline` type, handed down explicitly or carried by the current context.

A gateway job holds a Deadline and gives each downstream call only the time that is left. A gRPC
server sets the context's deadline from each incoming call (context.time_remaining()); the Triton
client caps its own timeout with what is left (`remaining`), so a job's deadline reaches every
Triton call without being passed through every function.
"""
from __future__ import annotations

import time
from contextvars import ContextVar


class DeadlineExceeded(Exception):
    pass


class Deadline:
    """A point in time the work must be done by."""

    def __init__(self, seconds: float) -> None:
        self.expires = time.monotonic() + seconds

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left (at most `cap`); DeadlineExceeded once none are."""
        left = self.expires - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the job's deadline passed")
        return min(left, cap) if cap else left


_current: ContextVar[Deadline | None] = ContextVar("likeness_deadline", default=None)


def set_remaining(seconds: float | None):
    """Starts a scope with `seconds` left (None: no deadline). Returns a token for reset()."""
    return _current.set(None if seconds is None else Deadline(seconds))


def reset(token) -> None:
    _current.reset(token)


def remaining(default: float) -> float:
    """Seconds left in the current scope, at most `default` (0 once passed: the call fails fast)."""
    current = _current.get()
    return default if current is None else max(0.0, min(default, current.expires - time.monotonic()))
