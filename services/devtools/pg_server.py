"""A real PostgreSQL server for development and tests: Debian's `postgresql` package, run by hand.

The gateway replicas keep their jobs in PostgreSQL (services/gateway/db.py); `likeness serve` and the
tests start one of these beside the S3 server. initdb and the server refuse to run as root, so as root
they run as the `postgres` user the package creates, in a data directory that user owns; the server
listens on 127.0.0.1 only (its unix socket in a private run dir) and asks for a password (a random one
unless given; scram-sha-256).

CLI (for `likeness serve`): python -m services.devtools.pg_server --dir DATA [--port 5432]
prints LIKENESS_DATABASE_URL once the server answers, then runs until SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import os
import pwd
import secrets
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from services.devtools.child_process import ManagedServer, run_until_signalled
from services.devtools.ports import free_ports

USER = "likeness"
DATABASE = "likeness"


class PgServerError(RuntimeError):
    """The server exited, did not become ready, or is not installed; the message says which."""


def bin_dir() -> Path:
    """The newest installed PostgreSQL's programs (/usr/lib/postgresql/<major>/bin)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if not versions:
        raise PgServerError("PostgreSQL is not installed: apt-get install postgresql (make setup does)")
    return versions[-1].parent


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) of the postgres user when we are root (the server will not run as root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise PgServerError("running as root needs the 'postgres' user (the postgresql package creates it)") from None
    return entry.pw_uid, entry.pw_gid


class PgServer(ManagedServer):
    """Context manager running `postgres` on 127.0.0.1; `dsn` connects to its `likeness` database.

    A data directory that already holds a cluster is reused (its password must then be given)."""

    def __init__(self, data_dir: str | Path | None = None, *, port: int | None = None, password: str | None = None,
                 host: str = "127.0.0.1", durable: bool = True, start_timeout: float = 60.0,
                 log_path: str | Path | None = None) -> None:
        self.host = host
        self.password = password or secrets.token_hex(16)
        self.durable = durable  # False (tests): no fsync; a crash of the machine may lose the last commits
        self.start_timeout = start_timeout
        self._fixed_port = port
        self._data_dir_arg = Path(data_dir) if data_dir is not None else None
        self._log_path_arg = Path(log_path) if log_path is not None else None
        self.port: int | None = None
        self.data_dir: Path | None = None

    def dsn(self, database: str = DATABASE) -> str:
        if self.port is None:
            raise PgServerError("server not started")
        return f"postgresql://{USER}:{self.password}@{self.host}:{self.port}/{database}"

    def env(self) -> dict[str, str]:
        """The setting that points a gateway at this server."""
        return {"LIKENESS_DATABASE_URL": self.dsn()}

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> "PgServer":
        if self.running:
            return self
        owner = _run_as()
        if self._run_dir is None:
            self._run_dir = Path(tempfile.mkdtemp(prefix="likeness-pg-"))
            if owner:
                os.chown(self._run_dir, *owner)
        self.data_dir = self._data_dir_arg or self._run_dir / "data"
        self.log_path = self._log_path_arg or self._run_dir / "postgres.log"
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            self._initdb(owner)
        self.port = self._fixed_port or free_ports(1, self.host)[0]
        self._fixed_port = self.port  # a restart comes back where the clients look
        settings = {"listen_addresses": self.host, "port": str(self.port),
                    "unix_socket_directories": str(self._run_dir), "max_connections": "200",
                    "shared_buffers": "64MB"}
        if not self.durable:
            settings.update(fsync="off", full_page_writes="off")  # (commits still reach the OS: a killed server keeps them)
        args = [str(bin_dir() / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        self._spawn(args, **_as_user(owner))
        try:
            self._wait_ready()
            if fresh:
                self.create_database(DATABASE)
        except BaseException:
            self._terminate()
            raise
        return self

    def _initdb(self, owner: tuple[int, int] | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if owner:
            _let_traverse(self.data_dir.parent)
        pwfile = self._run_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if owner:
            os.chown(self.data_dir, *owner)
            os.chown(pwfile, *owner)
        done = subprocess.run([str(bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", USER,
                               f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions"],
                              capture_output=True, text=True, **_as_user(owner))
        pwfile.unlink()
        if done.returncode != 0:
            raise PgServerError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def _connect(self, database: str = "postgres"):
        return psycopg.connect(self.dsn(database), autocommit=True, connect_timeout=2)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise PgServerError(f"postgres exited during start-up:\n{self.log_tail()}")
            try:
                with self._connect():
                    return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            time.sleep(0.1)
        raise PgServerError(f"postgres not ready after {self.start_timeout:.0f} s ({last}):\n{self.log_tail()}")

    def create_database(self, name: str) -> str:
        """A new, empty database (tests: one per test); returns its DSN."""
        with self._connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def kill(self) -> None:
        """SIGKILL, as a crash (the next start recovers from the write-ahead log); data is kept."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self) -> "PgServer":
        """Stopped (fast shutdown) and started again on the same port and data."""
        self._terminate()
        return self.start()

    def _terminate(self) -> None:
        """SIGINT is PostgreSQL's fast shutdown (clients disconnected, a clean checkpoint)."""
        self._stop_group(signal.SIGINT, 20)


def _let_traverse(directory: Path) -> None:
    """As root, a data dir under private directories (0700, e.g. pytest's) is out of the postgres user's
    reach: give "others" the search bit (x: pass through, not list or read) where it is missing."""
    for parent in [directory, *directory.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, mode | stat.S_IXOTH)


def _as_user(owner: tuple[int, int] | None) -> dict:
    return {} if owner is None else {"user": owner[0], "group": owner[1], "extra_groups": []}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local PostgreSQL server for Likeness development.")
    parser.add_argument("--dir", required=True, type=Path, help="data directory (kept between runs)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--password", default=None,
                        help="needed again when the data directory exists (default: random, printed)")
    args = parser.parse_args(argv)
    with PgServer(args.dir, port=args.port, password=args.password, log_path=args.dir.parent / "postgres.log") as s:
        print(f"LIKENESS_DATABASE_URL={s.dsn()}", flush=True)
        return run_until_signalled(s, "PostgreSQL")


if __name__ == "__main__":
    sys.exit(main())
