"""PostgreSQL, the gateway replicas' shared system of record: connections, migrations, notifications.

- `Database(dsn)`: a connection pool; `connect()` lends one (a context manager). A server that cannot
  be reached raises DatabaseUnavailable (-> UNAVAILABLE, the client's cue to retry), never a crash.
- `migrate()`: applies migrations/NNNN_*.sql in order, each in its own transaction, under an advisory
  lock, so replicas that start at once on an empty database apply each file once.
- `Notifications`: one LISTEN connection per process, fanned out to threads and asyncio tasks that wait
  for a job or a channel to change (reconnects by itself; waiters are woken then, to re-read).
"""
from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import OrderedDict, defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from services.common.domain.errors import StorageUnavailable

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x4C696B6D  # pg_advisory_lock keys: any constant of the project's own
JOB_CHANNEL, WEBHOOK_CHANNEL = "likeness_jobs", "likeness_webhooks"
# The pool's reconnection backs off without a cap, so a database that came back was found late; a pool
# of a few connections can afford an attempt a second (docs/notes/control-plane.md#reconnecting-to-the-database).
AttemptWithBackoff.DELAY_BACKOFF = 1.0


class DatabaseUnavailable(StorageUnavailable):
    """The job database could not be reached (-> gRPC UNAVAILABLE: try again later)."""

    def __init__(self, message: str = "job database unreachable; retry later") -> None:
        super().__init__(message)


class Database:
    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 5.0) -> None:
        self.dsn = dsn
        # check: a connection broken by a server restart is replaced before it is lent
        self.pool = ConnectionPool(dsn, min_size=min_size, max_size=max_size, timeout=timeout_s, open=False,
                                   kwargs={"row_factory": dict_row, "connect_timeout": 3, "autocommit": True},
                                   check=ConnectionPool.check_connection, name="likeness-jobs",
                                   reconnect_timeout=365 * 86400.0)  # (never give up on the database)
        self.pool.open(wait=False)

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in autocommit (use `conn.transaction()` for more than one statement)."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            log.warning("job database: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise DatabaseUnavailable() from None

    def close(self) -> None:
        self.pool.close()

    def migrate(self) -> list[str]:
        """Applies the migrations this database lacks; returns their names."""
        files = sorted(p for p in MIGRATIONS.glob("*.sql") if re.match(r"\d{4}_", p.name))
        applied: list[str] = []
        with self.connect() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                             "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
                done = {row["name"] for row in conn.execute("SELECT name FROM schema_migrations")}
                for path in files:
                    if path.name in done:
                        continue
                    with conn.transaction():
                        conn.execute(path.read_text())
                        conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
                    applied.append(path.name)
                    log.info("job database: applied %s", path.name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        return applied


class Notifications:
    """LISTEN on the job and webhook channels; `on_job(fn)` callbacks see every (job_id, state, cancel);
    waiters block (threads: `wait`) or await (`await_change`) until a key changes. Keys: a job id,
    or a channel name (any notification on it)."""

    # Keys remembered (most recently changed): a replica sees every job's notifications for as long as it
    # runs, so the map is bounded. A forgotten key reads as `_floor`, the newest change forgotten: a
    # waiter on it may wake once more than needed (it reads the job again), never miss a change.
    MAX_KEYS = 4096

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock = threading.Condition()
        self._seq = 0  # one counter for every key: a key's version is the number of its latest change
        self._floor = 0
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._async_waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)
        self._callbacks: list[Callable[[str, str, bool], None]] = []
        self._closed = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._listen_forever, name="db-listen", daemon=True)
        self._thread.start()

    def on_job(self, fn: Callable[[str, str, bool], None]) -> None:
        self._callbacks.append(fn)

    def version(self, key: str) -> int:
        with self._lock:
            return self._version(key)

    def _version(self, key: str) -> int:
        return self._versions.get(key, self._floor)

    def wait(self, key: str, version: int, timeout_s: float) -> int:
        """Blocks until `key` moves past `version` (or timeout); returns its version now."""
        with self._lock:
            self._lock.wait_for(lambda: self._version(key) != version or self._closed.is_set(), timeout_s)
            return self._version(key)

    async def await_change(self, key: str, version: int, timeout_s: float) -> int:
        """`wait` for asyncio: costs no thread while it waits."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            if self._version(key) != version:
                return self._version(key)
            self._async_waiters[key].add(entry)
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                self._async_waiters[key].discard(entry)
                if not self._async_waiters[key]:
                    del self._async_waiters[key]
        return self.version(key)

    def _bump(self, keys: list[str] | None) -> None:
        """Moves `keys` (None: every key, after a reconnect: what happened meanwhile is unknown)."""
        with self._lock:
            self._seq += 1
            if keys is None:
                self._versions.clear()
                self._floor = self._seq
            for key in keys or ():
                self._versions[key] = self._seq
                self._versions.move_to_end(key)
            while len(self._versions) > self.MAX_KEYS:
                _, self._floor = self._versions.popitem(last=False)
            woken = [w for key in (list(self._async_waiters) if keys is None else keys)
                     for w in self._async_waiters.get(key, ())]
            self._lock.notify_all()
        for loop, event in woken:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed
                pass

    def _listen_forever(self) -> None:
        while not self._closed.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f"LISTEN {JOB_CHANNEL}")
                    conn.execute(f"LISTEN {WEBHOOK_CHANNEL}")
                    self.connected.set()
                    self._bump(None)
                    for callback in self._callbacks:
                        callback("", "RECONNECTED", False)
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._dispatch(note.channel, note.payload)
            except Exception as exc:  # noqa: BLE001 - the server restarting: listen again in a moment
                self.connected.clear()
                if not self._closed.is_set():
                    log.warning("job notifications: %s; reconnecting", str(exc).splitlines()[0] if str(exc) else exc)
                    self._closed.wait(0.5)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == WEBHOOK_CHANNEL:
            self._bump([WEBHOOK_CHANNEL])
            return
        job_id, state, cancel = (payload.split(" ") + ["", ""])[:3]
        self._bump([job_id, JOB_CHANNEL])
        for callback in self._callbacks:
            try:
                callback(job_id, state, cancel == "1")
            except Exception:  # noqa: BLE001 - one bad callback must not stop the listener
                log.exception("job notification callback")

    def close(self) -> None:
        self._closed.set()
        self._bump(None)
