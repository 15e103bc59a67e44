"""The real NVIDIA Triton Inference Server, on CPU, for development and tests.

The `nvidia-pytriton==0.7.0` wheel bundles tritonserver 2.51.0 (= NGC 24.10), its python backend and
python-backend stubs for Python 3.8-3.13. We launch that binary directly on our own model repository:
- the python backend and the stub matching the stub interpreter are copied into a private backend dir
  (without --backend-directory: "unable to find backend library for backend 'python'");
- LD_LIBRARY_PATH = libpython's LIBDIR first (else a wrong libpython loads), then nvidia_pytriton.libs (without
  it the stub fails to load and the server hangs in loading forever, hence the readiness timeout);
- PATH starts with the venv's bin: the stub runs the first `python3` on PATH (PYTHONPATH is ignored), so
  model.py can import the pip-installed project;
- numpy in that interpreter must be < 2: with numpy 2 the stub returns EMPTY output tensors without an error,
  so start() refuses to launch on numpy >= 2.

CLI (for `likeness serve`): python -m services.devtools.triton_server --model-repository DIR [--model NAME ...]
prints LIKENESS_TRITON_URL=host:port once every model is ready, then runs until SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common import config
from services.devtools.child_process import ManagedServer, run_until_signalled
from services.devtools.ports import free_ports

_LAUNCH_ATTEMPTS = 3  # a free port can be taken by someone else before tritonserver binds it
_PORT_TAKEN_MARKER = "already in use"
_FAILED_START_GRACE_S = 2.0  # nothing to drain after a failed start; a half-started server may ignore SIGTERM
_RPC_TIMEOUT_S = 2.0  # per readiness RPC: a port held by something that is not tritonserver never answers
_SHM_PREFIX = "/dev/shm/triton_python_backend_shm_region_"
# startup errors after which tritonserver neither serves nor exits promptly
_MODEL_ERROR_MARKERS = ("failed to load '", "failed to poll model '")
_FATAL_LOG_MARKERS = ("failed to start", "error: creating server", *_MODEL_ERROR_MARKERS)


class TritonServerError(RuntimeError):
    """tritonserver could not be started (exited, model failed to load, timeout); message has the log tail."""


@dataclass(frozen=True)
class StubPython:
    """The interpreter the python-backend stub will run (first `python3` on the PATH we give it)."""

    bin_dir: Path
    version: str  # "3.11"
    libdir: str  # sysconfig LIBDIR: where its libpython lives
    numpy_version: str


_stub_python_cache: dict[Path, StubPython] = {}


def probe_stub_python(bin_dir: Path) -> StubPython:
    """Inspect `bin_dir/python3` (version, libpython dir, numpy) and reject numpy >= 2."""
    bin_dir = Path(bin_dir)
    if bin_dir in _stub_python_cache:
        return _stub_python_cache[bin_dir]
    code = (
        "import sys, sysconfig, importlib.metadata as m\n"
        "print('%d.%d' % sys.version_info[:2]); print(sysconfig.get_config_var('LIBDIR'))\n"
        "try: print(m.version('numpy'))\n"
        "except m.PackageNotFoundError: print('')\n"
    )
    try:
        out = subprocess.run([str(bin_dir / "python3"), "-c", code], capture_output=True, text=True,
                             check=True, timeout=60).stdout.split("\n")
    except (OSError, subprocess.SubprocessError) as exc:
        raise TritonServerError(f"cannot run {bin_dir / 'python3'} for the python backend stub: {exc}") from exc
    probe = StubPython(bin_dir, out[0].strip(), out[1].strip(), out[2].strip())
    if not probe.numpy_version:
        raise TritonServerError(f"numpy is not installed for {bin_dir / 'python3'} (the python backend stub needs it)")
    if int(probe.numpy_version.split(".")[0]) >= 2:
        raise TritonServerError(
            f"numpy {probe.numpy_version} in the stub environment {bin_dir}: the Triton 2.51 python backend stub "
            "returns empty output tensors with numpy>=2; install numpy<2 (the project pins 1.26.4)"
        )
    _stub_python_cache[bin_dir] = probe
    return probe


def pytriton_dirs() -> tuple[Path, Path]:
    """(bundled tritonserver dir, nvidia_pytriton.libs dir) from the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")  # locate without importing pytriton itself
    if spec is None or spec.origin is None:
        raise TritonServerError("nvidia-pytriton is not installed: pip install nvidia-pytriton==0.7.0")
    package_dir = Path(spec.origin).parent
    return package_dir / "tritonserver", package_dir.parent / "nvidia_pytriton.libs"


def live_group_members(pgid: int) -> list[int]:
    """Pids of non-zombie processes in process group `pgid` (the stubs outlive a killed tritonserver)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def python_backend_shm_regions(pids: Sequence[int]) -> set[Path]:
    """The /dev/shm regions the python backend maps into these processes."""
    regions = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if path.startswith(_SHM_PREFIX):
                regions.add(Path(path.removesuffix(" (deleted)")))
    return regions


class TritonServer(ManagedServer):
    """Context manager running tritonserver on `model_repository`, bound to loopback on free ports.

    grpc_url / http_url are "host:port" (tritonclient's format, and LIKENESS_TRITON_URL's); metrics_url is
    the full Prometheus URL. With `models`, the server runs in explicit model-control mode and loads only those.
    With die_with_parent (default), the server is SIGKILLed when the *thread* that started it exits: start it
    from the main thread or another long-lived one.
    """

    def __init__(
        self,
        model_repository: str | Path,
        *,
        models: Sequence[str] | None = None,
        host: str = "127.0.0.1",
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        start_timeout: float | None = None,
        stop_grace: float = 10.0,
        log_path: str | Path | None = None,
        log_verbose: int = 0,
        python_bin_dir: str | Path | None = None,
        extra_args: Sequence[str] = (),
        die_with_parent: bool = True,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.models = list(models) if models is not None else None
        self.host = host
        self.start_timeout = (
            start_timeout if start_timeout is not None
            else config.get_float("LIKENESS_TRITON_START_TIMEOUT")
        )
        self.stop_grace = stop_grace
        self.log_verbose = log_verbose
        # the venv's bin, unresolved: resolving the python3 symlink would leave the venv
        self.python_bin_dir = Path(python_bin_dir) if python_bin_dir is not None else Path(sys.executable).parent
        self.extra_args = list(extra_args)
        self.die_with_parent = die_with_parent
        self._fixed_ports = (grpc_port, http_port, metrics_port)
        self._log_path_arg = Path(log_path) if log_path is not None else None
        self._run_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self.metrics_port: int | None = None
        self.log_path: Path | None = None
        self.ready_models: list[str] = []
        self._log_scanned = 0  # bytes of the log already checked for fatal startup errors

    # -- addresses -------------------------------------------------------------------------------------------

    def _addr(self, port: int | None) -> str:
        if port is None:
            raise TritonServerError("server not started")
        return f"{self.host}:{port}"

    @property
    def grpc_url(self) -> str:
        return self._addr(self.grpc_port)

    @property
    def http_url(self) -> str:
        return self._addr(self.http_port)

    @property
    def metrics_url(self) -> str:
        return f"http://{self._addr(self.metrics_port)}/metrics"

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> TritonServer:
        if self.running:
            return self
        if not self.model_repository.is_dir():
            raise TritonServerError(f"model repository {self.model_repository} is not a directory")
        stub_python = probe_stub_python(self.python_bin_dir)
        self._run_dir = Path(tempfile.mkdtemp(prefix="likeness-triton-"))
        self.log_path = self._log_path_arg or self._run_dir / "tritonserver.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            backend_dir = self._prepare_backend_dir(stub_python)
            for attempt in range(1, _LAUNCH_ATTEMPTS + 1):
                self._launch(stub_python, backend_dir)
                try:
                    self._wait_ready()
                    return self
                except TritonServerError as exc:
                    port_taken = _PORT_TAKEN_MARKER in str(exc)  # someone took a port: relaunch on fresh ones
                    self._terminate(grace=min(self.stop_grace, _FAILED_START_GRACE_S))
                    if not port_taken or any(self._fixed_ports) or attempt == _LAUNCH_ATTEMPTS:
                        raise
        except BaseException:
            self._terminate(grace=min(self.stop_grace, _FAILED_START_GRACE_S))
            self.stop()
            raise
        raise AssertionError("unreachable")

    def _prepare_backend_dir(self, stub_python: StubPython) -> Path:
        server_dir, _ = pytriton_dirs()
        stub = server_dir / "python_backend_stubs" / stub_python.version / "triton_python_backend_stub"
        if not stub.is_file():
            raise TritonServerError(f"no python backend stub for Python {stub_python.version} in {server_dir}")
        assert self._run_dir is not None
        backend_dir = self._run_dir / "backends"
        shutil.copytree(server_dir / "backends" / "python", backend_dir / "python",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, backend_dir / "python" / stub.name)
        return backend_dir

    def _launch(self, stub_python: StubPython, backend_dir: Path) -> None:
        server_dir, libs_dir = pytriton_dirs()
        assert self.log_path is not None
        self._log_scanned = self.log_path.stat().st_size if self.log_path.exists() else 0
        picked = iter(free_ports(3, self.host))
        self.grpc_port, self.http_port, self.metrics_port = (p or next(picked) for p in self._fixed_ports)
        args = [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={max(1, int(self.stop_grace) - 2)}",  # drain in-flight requests before our SIGKILL
            f"--log-verbose={self.log_verbose}",
        ]
        if self.models is not None:
            args.append("--model-control-mode=explicit")
            args += [f"--load-model={name}" for name in self.models]
        args += self.extra_args
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (stub_python.libdir, str(libs_dir), env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join(p for p in (str(stub_python.bin_dir), env.get("PATH", "")) if p)
        self._spawn(args, env, self.die_with_parent)

    def _wait_ready(self) -> None:
        """Ready = server ready and every expected model ready; a model reported UNAVAILABLE fails at once.

        tritonserver opens its ports only after the initial model load, so we first wait for the gRPC port to
        accept TCP connections: a gRPC channel created earlier sits in reconnect backoff for seconds.
        """
        deadline = time.monotonic() + self.start_timeout
        last_error = "gRPC port not open"
        while not self._port_open(self.grpc_port):
            self._check_alive()
            if time.monotonic() >= deadline:
                raise TritonServerError(self._timeout_message(last_error))
            time.sleep(0.05)

        import tritonclient.grpc as grpcclient  # heavy import, only needed once the port is open

        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while True:
                self._check_alive()
                try:
                    index = client.get_model_repository_index(client_timeout=_RPC_TIMEOUT_S).models
                    states = {m.name: (m.state, m.reason) for m in index}
                    expected = self.models if self.models is not None else sorted(states)
                    broken = [f"{n}: {states[n][1]}" for n in expected
                              if n in states and states[n][0] == "UNAVAILABLE" and states[n][1]]
                    if broken:
                        raise TritonServerError(self._failure("model failed to load: " + "; ".join(broken)))
                    if client.is_server_ready(client_timeout=_RPC_TIMEOUT_S) and all(
                            client.is_model_ready(n, client_timeout=_RPC_TIMEOUT_S) for n in expected):
                        # HTTP and metrics endpoints start a few ms after gRPC
                        if self._port_open(self.http_port) and self._port_open(self.metrics_port):
                            self.ready_models = sorted(expected)
                            return
                    last_error = f"models not ready: {states}"
                except TritonServerError:
                    raise
                except Exception as exc:  # noqa: BLE001 - transient while starting
                    last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if time.monotonic() >= deadline:
                    raise TritonServerError(self._timeout_message(last_error))
                time.sleep(0.05)
        finally:
            client.close()

    def _port_open(self, port: int | None) -> bool:
        try:
            with socket.create_connection((self.host, port or 0), timeout=0.5):
                return True
        except OSError:
            return False

    def _check_alive(self) -> None:
        """Fail fast when the server exited, or logged a fatal startup error it does not exit on (a busy port)."""
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise TritonServerError(self._failure(f"tritonserver exited with code {self._proc.returncode}"))
        fatal = self._new_fatal_log_line()
        if fatal:
            raise TritonServerError(self._failure(f"tritonserver failed to start: {fatal}"))

    def _new_fatal_log_line(self) -> str | None:
        assert self.log_path is not None
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_scanned)
                chunk = f.read()
        except OSError:
            return None
        complete = chunk[: chunk.rfind(b"\n") + 1]  # only whole lines
        self._log_scanned += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            if any(marker in line for marker in _FATAL_LOG_MARKERS):
                return line.strip()
        return None

    def _timeout_message(self, last_error: str) -> str:
        return self._failure(f"tritonserver not ready after {self.start_timeout:.0f} s "
                             f"(LIKENESS_TRITON_START_TIMEOUT; last: {last_error})")

    def _failure(self, what: str) -> str:
        """Error text: what happened, each model-load error, then the log tail without the status tables."""
        log = self.log_path
        lines = log.read_text(errors="replace").splitlines() if log is not None and log.exists() else []
        found = [line.split("] ", 1)[-1].split("\\n")[0].strip('" ') for line in lines
                 if any(marker in line for marker in _MODEL_ERROR_MARKERS)]
        # "failed to load 'm'" repeats the start of "failed to load 'm' version 1: <reason>": keep the longer one
        load_errors = [e for e in found if not any(o != e and o.startswith(e) for o in found)]
        summary = ("\nmodel load errors:\n  " + "\n  ".join(load_errors[:10])) if load_errors else ""
        tail = [line for line in lines if not line.startswith(("+", "|"))][-40:]
        return (f"{what} (repository {self.model_repository}){summary}\n"
                f"log{' ' + str(self.log_path) if self._log_path_arg else ''} tail:\n" + "\n".join(tail))

    def _terminate(self, grace: float | None = None) -> None:
        """SIGTERM the whole process group (tritonserver + its stubs), SIGKILL whatever is left after the grace
        period, and wait until no member of the group is alive."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the server leads its own group
        shm_regions = python_backend_shm_regions(live_group_members(pgid))
        deadline = time.monotonic() + (self.stop_grace if grace is None else grace)
        if proc.poll() is None:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        while live_group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if live_group_members(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kill_deadline = time.monotonic() + 5.0
            while live_group_members(pgid) and time.monotonic() < kill_deadline:
                time.sleep(0.05)
        proc.wait()
        for region in shm_regions:  # a SIGKILLed server leaves its python-backend shared memory behind
            region.unlink(missing_ok=True)



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the bundled Triton Inference Server (CPU) on a model repository.")
    parser.add_argument("--model-repository", required=True, type=Path)
    parser.add_argument("--model", action="append", dest="models", default=None,
                        help="load only this model (explicit model control); repeatable")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--http-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--metrics-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--log", type=Path, default=None, help="log file (default: a temp file, removed on exit)")
    parser.add_argument("--log-verbose", type=int, default=0)
    args = parser.parse_args(argv)

    server = TritonServer(
        args.model_repository, models=args.models, host=args.host, grpc_port=args.grpc_port,
        http_port=args.http_port, metrics_port=args.metrics_port, log_path=args.log, log_verbose=args.log_verbose,
    )
    try:
        server.start()
    except TritonServerError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        print(f"LIKENESS_TRITON_URL={server.grpc_url}")
        models = ", ".join(server.ready_models) or "-"
        print(f"# http {server.http_url}, metrics {server.metrics_url}, models {models}, log {server.log_path}",
              flush=True)
        return run_until_signalled(server, "tritonserver")
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
