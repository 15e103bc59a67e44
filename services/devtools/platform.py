"""The whole platform on loopback, for development (`likeness serve`) and the tests.

A real PostgreSQL (the job database the gateway replicas share), a real S3 server (seaweedfs), a real
Triton server on model_repository/, and the four gRPC services as separate processes wired by env vars,
each waited for through gRPC health checking.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.infra.storage import Storage
from services.devtools.child_process import die_with_parent, log_tail
from services.devtools.pg_server import PgServer
from services.devtools.ports import free_ports
from services.devtools.s3_server import S3Server
from services.devtools.triton_server import TritonServer

ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = ROOT / "model_repository"
SERVICES = ("tts", "expression", "render", "gateway")  # start order: the gateway last
HEALTH_NAMES = {"tts": "likeness.v1.TtsService", "expression": "likeness.v1.ExpressionService",
                "render": "likeness.v1.RenderService", "gateway": "likeness.v1.GatewayService"}


@dataclass
class ServiceProcess:
    name: str
    grpc_port: int
    metrics_port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    health_port: int = 0  # plaintext health checks alone (LIKENESS_HEALTH_PORT)
    webrtc_port: int = 0  # a gateway's WebRTC front and its page (LIKENESS_WEBRTC_PORT)

    @property
    def webrtc_url(self) -> str:
        return f"http://127.0.0.1:{self.webrtc_port}/"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@dataclass
class LocalPlatform:
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="likeness-stack-")))
    model_repository: Path = MODEL_REPOSITORY
    env: dict[str, str] = field(default_factory=dict)  # extra env for every service
    only: tuple[str, ...] = SERVICES  # e.g. ("gateway",): API tests that run no job need no Triton
    start_timeout: float = 120.0
    gateways: int = 1  # gateway replicas on the one database (the first is services["gateway"])
    durable: bool = False  # the job database fsyncs (likeness serve); tests need not

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.s3: S3Server | None = None
        self.pg: PgServer | None = None
        self.triton: TritonServer | None = None
        ports = free_ports(3 * len(SERVICES))
        self.services = {name: ServiceProcess(name, ports[3 * i], ports[3 * i + 1],
                                              self.workdir / "logs" / f"{name}.log", health_port=ports[3 * i + 2])
                         for i, name in enumerate(SERVICES)}
        self.services["gateway"].webrtc_port = free_ports(1)[0]
        self.replicas: list[ServiceProcess] = []  # extra processes of a service (start_replica)
        self._revivals: dict[str, tuple[int, float, float]] = {}  # child -> (failures, next try, started)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "LocalPlatform":
        try:
            self.s3 = S3Server(self.workdir / "s3", log_path=self.workdir / "logs" / "s3.log").start()
            self.storage().ensure_bucket()
            if "gateway" in self.only:
                self.pg = self._start_database()
            if set(self.only) - {"gateway"}:
                self.triton = TritonServer(self.model_repository, log_path=self.workdir / "logs" / "triton.log",
                                           start_timeout=self.start_timeout).start()
            for name in SERVICES:
                if name in self.only:
                    self.start_service(name)
            if "gateway" in self.only:
                for _ in range(self.gateways - 1):
                    self.start_replica("gateway")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_database(self) -> PgServer:
        """PostgreSQL with its data in the workdir; its password is kept beside it for the next start."""
        password_file = self.workdir / "postgres.password"
        password = password_file.read_text().strip() if password_file.exists() else None
        pg = PgServer(self.workdir / "postgres", password=password, durable=self.durable,
                      log_path=self.workdir / "logs" / "postgres.log").start()
        if password is None:
            password_file.touch(mode=0o600)
            password_file.write_text(pg.password + "\n")
        return pg

    def service_env(self, name: str, service: ServiceProcess | None = None) -> dict[str, str]:
        service = service or self.services[name]
        return {
            **os.environ, **self.s3.env(), **(self.pg.env() if self.pg else {}),
            "LIKENESS_GRPC_PORT": str(service.grpc_port),
            "LIKENESS_METRICS_PORT": str(service.metrics_port),
            "LIKENESS_HEALTH_PORT": str(service.health_port),
            "LIKENESS_TRITON_URL": self.triton.grpc_url if self.triton else "",
            "LIKENESS_TTS_ADDR": self.services["tts"].address,
            "LIKENESS_EXPRESSION_ADDR": self.services["expression"].address,
            "LIKENESS_RENDER_ADDR": self.services["render"].address,
            **({"LIKENESS_WEBRTC_PORT": str(service.webrtc_port)} if service.webrtc_port else {}),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }

    def launch(self, name: str, service: ServiceProcess | None = None,
               extra_env: dict[str, str] | None = None) -> ServiceProcess:
        """Starts a service's process without waiting for it (wait_healthy does)."""
        service = service or self.services[name]
        service.name = name
        env = {**self.service_env(name, service), **(extra_env or {})}
        service.health_port = int(env["LIKENESS_HEALTH_PORT"])  # (a test's env may name its own)
        log = open(service.log_path, "ab")
        service.proc = subprocess.Popen([sys.executable, "-m", f"services.{name}.server"], cwd=ROOT,
                                        env=env,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=die_with_parent)
        log.close()
        return service

    def start_service(self, name: str, service: ServiceProcess | None = None,
                      extra_env: dict[str, str] | None = None) -> ServiceProcess:
        service = self.launch(name, service, extra_env)
        self.wait_healthy(name, service)
        return service

    def new_replica(self, name: str) -> ServiceProcess:
        """Another process of a service on ports of its own (launch or start_service it); stopped with
        the stack."""
        grpc_port, metrics_port, health_port = free_ports(3)
        replica = ServiceProcess(name, grpc_port, metrics_port, self.workdir / "logs" / f"{name}-{grpc_port}.log",
                                 health_port=health_port,
                                 webrtc_port=free_ports(1)[0] if name == "gateway" else 0)
        self.replicas.append(replica)
        return replica

    def start_replica(self, name: str, extra_env: dict[str, str] | None = None) -> ServiceProcess:
        """Another process of a service, same env and store (e.g. a second gateway), up and healthy."""
        return self.start_service(name, self.new_replica(name), extra_env)

    def wait_healthy(self, name: str, service: ServiceProcess | None = None) -> None:
        service = service or self.services[name]
        deadline = time.monotonic() + self.start_timeout
        # The plaintext health port: the same answers whether or not the gRPC port speaks TLS (the TLS
        # settings may come from the environment of `likeness serve`, not from self.env).
        # A channel (and connection) per try: one channel's reconnect backoff (1 s, growing 1.6x) made a
        # try refused before the port opened cost up to ~10 s of waiting on a service up in 1-2.
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {service.proc.returncode}:\n"
                                   f"{log_tail(service.log_path)}")
            try:
                with grpc.insecure_channel(f"127.0.0.1:{service.health_port}",
                                           options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=HEALTH_NAMES[name]), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{name} not healthy after {self.start_timeout:.0f} s:\n{log_tail(service.log_path)}")

    def revive(self, log=lambda message: None) -> list[str]:
        """Starts again whatever has exited (PostgreSQL, S3, Triton, a service process), on the same ports
        and data; each child waits 1, 2, 4, ... s (at most 30) between tries, reset once it has run for a
        minute. `likeness serve` calls this every second. Returns what it restarted."""
        now = time.monotonic()
        revived = []
        children = [("postgres", self.pg), ("s3", self.s3), ("triton", self.triton)]
        children += [(f"{s.name}:{s.grpc_port}", s) for s in [*self.services.values(), *self.replicas]
                     if s.name in self.only]
        for label, child in children:
            if child is None:
                continue
            alive = child.running if not isinstance(child, ServiceProcess) else (
                child.proc is not None and child.proc.poll() is None)
            failures, not_before, started = self._revivals.get(label, (0, 0.0, now))
            if alive:
                if failures and now - started > 60:
                    self._revivals[label] = (0, 0.0, started)
                continue
            if isinstance(child, ServiceProcess) and child.proc is None:
                continue  # never started here (a replica being set up)
            if now < not_before:
                continue
            log(f"{label} exited; restarting it (try {failures + 1})")
            try:
                self._restart(child)
                revived.append(label)
            except Exception as exc:  # noqa: BLE001 - tried again after the backoff
                log(f"{label} did not come back: {str(exc).splitlines()[0] if str(exc) else exc}")
            self._revivals[label] = (failures + 1, time.monotonic() + min(30.0, 2.0 ** failures), time.monotonic())
        return revived

    def _restart(self, child) -> None:
        if isinstance(child, ServiceProcess):
            self.start_service(child.name, child)
        elif isinstance(child, TritonServer):
            child._fixed_ports = (child.grpc_port, child.http_port, child.metrics_port)  # where services look
            child._terminate()  # (its whole process group: no backend stub outlives its server)
            child.start()
        elif isinstance(child, S3Server):
            child._fixed_port = child.port
            child._terminate()
            child.start()
        else:
            child._terminate()
            child.start()

    def kill_service(self, name: str | ServiceProcess, sig: int = signal.SIGKILL) -> None:
        """Kills a service's process (a name: its first process; or a replica from start_replica)."""
        proc = (self.services[name] if isinstance(name, str) else name).proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)

    def stop(self) -> None:
        processes = [*self.replicas, *(self.services[name] for name in reversed(SERVICES))]
        for service in processes:
            proc = service.proc
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for service in processes:
            proc = service.proc
            if proc is not None:
                try:
                    proc.wait(timeout=25)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self.triton is not None:
            self.triton.stop()
        if self.pg is not None:
            self.pg.stop()
        if self.s3 is not None:
            self.s3.stop()

    def __enter__(self) -> "LocalPlatform":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def gateway_address(self) -> str:
        return self.services["gateway"].address

    @property
    def webrtc_url(self) -> str:
        """The first gateway's WebRTC front: its page, and POST /v1/live."""
        return self.services["gateway"].webrtc_url

    def storage(self):
        env = self.s3.env()
        return Storage(env["LIKENESS_S3_ENDPOINT"], env["LIKENESS_S3_ACCESS_KEY"], env["LIKENESS_S3_SECRET_KEY"],
                       env["LIKENESS_S3_BUCKET"])

    def log_tail(self, name: str, lines: int = 40) -> str:
        return log_tail(self.services[name].log_path, lines)
