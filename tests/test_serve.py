"""`likeness serve`, the README's way to run the platform on one machine: it prints where everything
listens, answers on the gateway address it printed, and a SIGTERM stops it with every child."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.client import LikenessClient
from tests.conftest import processes_mentioning

ROOT = Path(__file__).resolve().parents[1]


def test_likeness_serve_runs_the_platform_and_stops_on_sigterm(tmp_path):
    workdir = tmp_path / "stack"
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--workdir", str(workdir)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
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
        assert {"gateway", "tts", "expression", "render", "triton", "s3", "logs"} <= names, printed
        gateway = re.search(r"--server (\S+)", printed[-1]).group(1)
        with LikenessClient(gateway, timeout_s=30) as client:
            assert "joe" in {v.name for v in client.voices()}
        assert len(processes_mentioning(str(workdir))) >= 2  # (S3 and Triton keep their data there)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
    assert code == 0
    deadline = time.monotonic() + 30
    while processes_mentioning(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(str(workdir)) == []  # Triton, S3 and the services went with it
