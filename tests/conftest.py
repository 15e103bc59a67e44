"""Shared fixtures: one real S3 server (SeaweedFS) per test session, a Storage on a fresh bucket per test, and a
factory for real Triton servers (one per model repository, reused across the session).

Fixture teardown runs on test failures and on Ctrl-C; if pytest itself is SIGKILLed, the servers die with it
(PR_SET_PDEATHSIG), only their temp dirs stay behind.
"""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.devtools.s3_server import S3Server
from services.common.infra.storage import Storage
from services.devtools.triton_server import TritonServer
from tests.platform_stack import client, photo_id, stack  # noqa: F401 (the whole platform, one per session)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running S3 server: .endpoint ("127.0.0.1:PORT"), .access_key, .secret_key, .env(bucket)."""
    with S3Server(tmp_path_factory.mktemp("s3-data")) as server:
        yield server


@pytest.fixture
def storage(s3_server: S3Server) -> Iterator[Storage]:
    """A Storage on a bucket of its own (created now, emptied and removed after the test)."""
    store = Storage(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, f"test-{uuid.uuid4().hex[:16]}")
    store.ensure_bucket()
    yield store
    try:
        store.remove_bucket()
    except Exception:  # noqa: BLE001 - best effort; the session server's data dir is temporary anyway
        pass


TritonFactory = Callable[..., TritonServer]


@pytest.fixture(scope="session")
def triton_server_factory() -> Iterator[TritonFactory]:
    """factory(model_repository, models=None, **TritonServer kwargs) -> a started TritonServer
    (.grpc_url, .http_url, .metrics_url). The same arguments give the same server for the whole session;
    all are stopped at session end (a test may stop one earlier: the next call starts a fresh one)."""
    servers: dict[tuple[Path, tuple[str, ...] | None, str], TritonServer] = {}

    def factory(model_repository: str | Path, models: list[str] | None = None, **kwargs: object) -> TritonServer:
        key = (Path(model_repository).resolve(), tuple(models) if models is not None else None,
               repr(sorted(kwargs.items())))
        server = servers.get(key)
        if server is None or not server.running:
            server = TritonServer(model_repository, models=models, **kwargs)  # type: ignore[arg-type]
            server.start()
            servers[key] = server
        return server

    try:
        yield factory
    finally:
        for server in servers.values():
            server.stop()


# -- process inspection shared by the server tests (Linux /proc) ------------------------------------------------

def processes_mentioning(text: str) -> list[str]:
    """Command lines of live (non-zombie) processes whose command line contains `text`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(cmdline.strip())
    return found


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of the TCP sockets process `pid` listens on."""
    inodes = set()
    for fd in os.scandir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(fd.path)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            ip_hex, port_hex = local.split(":")
            raw = bytes.fromhex(ip_hex)
            # /proc/net stores the address as 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            ip = socket.inet_ntop(family, raw).removeprefix("::ffff:")  # IPv4-mapped IPv6 -> IPv4
            found.add((ip, int(port_hex, 16)))
    return found


# -- PostgreSQL: one server per test session, a database of its own per test ----------------------------------

@pytest.fixture(scope="session")
def pg_server() -> Iterator["PgServer"]:
    from services.devtools.pg_server import PgServer

    with PgServer(durable=False) as server:
        yield server


@pytest.fixture
def database(pg_server) -> Iterator["Database"]:
    """A migrated, empty job database (dropped after the test)."""
    from services.gateway.db import Database

    name = f"test_{uuid.uuid4().hex[:16]}"
    db = Database(pg_server.create_database(name), max_size=4)
    db.migrate()
    yield db
    db.close()
    pg_server.drop_database(name)


# -- markers -----------------------------------------------------------------------------------------
# `unit`: in-process only. `platform`: starts real servers (S3, PostgreSQL, Triton, the services).
# `slow`: the modules that start the whole platform, the demo or the deploy checkers: `make test-fast`
# (-m "not slow") leaves them out; `make test` runs everything.
SLOW_MODULES = {"test_platform_api", "test_platform_jobs", "test_platform_live", "test_platform_ops",
                "test_replicas", "test_demo", "test_serve", "test_deploy", "test_client_resilience",
                "test_platform_webrtc"}
SERVER_FIXTURES = {"s3_server", "storage", "pg_server", "database", "triton_server_factory", "stack"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        servers = module in SLOW_MODULES or SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.platform if servers else pytest.mark.unit)
