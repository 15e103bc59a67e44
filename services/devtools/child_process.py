"""Helpers for the server processes the project launches (Triton, S3, the services in LocalPlatform)."""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the launching thread dies, so a killed test run or
    `likeness serve` leaves no server behind."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not Path(path).exists():
        return "(no log)"
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


class ManagedServer:
    """What the launched servers share: a child process in its own session, a private run dir
    (removed on stop), a log, and use as a context manager. Subclasses define start() and
    _terminate()."""

    _proc: "subprocess.Popen[bytes] | None" = None
    _run_dir: Path | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def start(self):  # -> Self
        raise NotImplementedError

    def _spawn(self, args: list[str], env: dict[str, str] | None = None, die_with_parent_too: bool = True,
                **popen) -> None:
        """Starts the server: its own session (its group is stopped as one), output to the log, run dir
        as cwd, dying with this process unless told otherwise."""
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          env=env, cwd=self._run_dir, start_new_session=True,
                                          preexec_fn=die_with_parent if die_with_parent_too else None, **popen)

    def _stop_group(self, sig: int, grace: float) -> None:
        """`sig` to the server's process group, SIGKILL after `grace` seconds."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet, so the group id is still ours
            proc.wait()
        except ProcessLookupError:  # (the group ended between poll and kill)
            proc.wait()

    def _terminate(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._terminate()
        if self._run_dir is not None:
            # the run dir holds private state (backend copies, data without a data dir, the log
            # unless a log path was given)
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def __enter__(self):  # -> Self
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def run_until_signalled(server: ManagedServer, what: str) -> int:
    """The foreground loop of a server's CLI: wait for SIGTERM/SIGINT (then 0) or for the server to
    exit on its own (then 1, with its log tail). The caller starts and stops the server."""
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not stop_requested and server.running:
        time.sleep(0.2)
    if not server.running:
        print(f"{what} exited unexpectedly; log tail:\n{server.log_tail()}", file=sys.stderr)
        return 1
    return 0
