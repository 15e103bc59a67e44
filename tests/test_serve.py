"""`likeness serve`, the README's way to run the platform on one machine: it prints where everything
listens, answers on the gateway address it printed, and a SIGTERM stops it with every child."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from likeness_client import JobFailedError, LikenessClient
from likeness_client.proto.likeness.v1 import gateway_pb2 as gw
from services.devtools.triton_server import live_group_members
from tests.conftest import listening_addresses, processes_mentioning

ROOT = Path(__file__).resolve().parents[1]


def descendants(pid: int) -> list[int]:
    """`pid`'s children, their children, ... (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def only_process(root: int, marker: str) -> int:
    [pid] = [p for p in descendants(root) if marker in cmdline(p) and "python_backend_stub" not in cmdline(p)]
    return pid


def test_likeness_serve_runs_the_platform_and_stops_on_sigterm(tmp_path):
    workdir = tmp_path / "stack"
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--workdir", str(workdir),
                             "--gateways", "2"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=(tmp_path / "serve.err").open("w"), text=True)
    try:
        printed = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"serve ended early: {printed}"
            printed.append(line)
            if line.startswith("try:"):
                break
        names = {line.split()[0] for line in printed}
        assert {"gateway", "tts", "expression", "render", "triton", "s3", "postgres", "logs"} <= names, printed
        gateway = re.search(r"--server (\S+)", printed[-1]).group(1)
        webrtc = next(line.split()[1] for line in printed if line.startswith("webrtc"))
        with urllib.request.urlopen(webrtc, timeout=10) as page:  # the browser page of the WebRTC front
            assert page.status == 200 and "likeness.connect" in page.read().decode()
        replica = next(line.split()[1] for line in printed if line.startswith("gateway") and "(replica)" in line)
        with LikenessClient(gateway, timeout_s=30) as client, LikenessClient(replica, timeout_s=30) as other:
            assert "joe" in {v.name for v in client.voices()}
            job_id = client.submit(photo=client.upload(ROOT / "assets" / "photos" / "grace_hopper.jpg",
                                                       kind="photo"), script="Hello.")
            assert other.get(job_id).job_id == job_id  # one job database behind both replicas
            other.cancel(job_id)
        assert len(processes_mentioning(str(workdir))) >= 3  # (PostgreSQL, S3 and Triton keep their data there)
        # Nothing it starts listens beyond loopback (gRPC, health, metrics, Triton, S3, PostgreSQL).
        listening = {pid: listening_addresses(pid) for pid in descendants(proc.pid)}
        assert sum(len(a) for a in listening.values()) >= 12, listening
        exposed = {pid: a for pid, a in listening.items() if any(ip not in ("127.0.0.1", "::1") for ip, _ in a)}
        assert exposed == {}, exposed

        # Supervision: a crashed service or Triton is started again on the same port, Triton's backend
        # stubs do not outlive it, and the platform answers as before.
        markers = ("services.tts.server", "tritonserver", "weed")
        killed = {marker: only_process(proc.pid, marker) for marker in markers}
        os.kill(killed["services.tts.server"], signal.SIGKILL)
        os.kill(killed["weed"], signal.SIGKILL)  # the S3 server
        triton = killed["tritonserver"]
        os.killpg(triton, signal.SIGKILL)  # (the server and its stubs, as an OOM kill of the pod would)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pids = {marker: [p for p in descendants(proc.pid) if marker in cmdline(p)] for marker in markers}
            if all(pids[m] and killed[m] not in pids[m] for m in markers):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not restarted: {pids}")
        assert live_group_members(triton) == []
        said = (tmp_path / "serve.err").read_text()
        assert all(f"{name}" in said for name in ("s3 exited", "triton exited", "tts:")), said[-2000:]
        with LikenessClient(gateway, timeout_s=60) as client:
            deadline = time.monotonic() + 60
            while True:  # (the restarted Triton loads its models; tts answers once it is healthy)
                try:
                    job = client.wait(client.submit(photo=client.upload(ROOT / "assets" / "photos" /
                                                                        "grace_hopper.jpg", kind="photo"),
                                                    script="Back again.", resolution=256), timeout_s=120)
                    break
                except JobFailedError:
                    assert time.monotonic() < deadline, "the platform did not recover"
            assert job.state == gw.JOB_STATE_SUCCEEDED
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
    assert code == 0
    deadline = time.monotonic() + 30
    while processes_mentioning(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(str(workdir)) == []  # Triton, S3 and the services went with it
