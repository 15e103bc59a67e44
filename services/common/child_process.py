"""Helpers for the server processes the project launches (Triton, S3, the services in LocalStack)."""
from __future__ import annotations

import ctypes
import signal
from pathlib import Path


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the launching thread dies, so a killed test run or
    `likeness serve` leaves no server behind."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not Path(path).exists():
        return "(no log)"
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
