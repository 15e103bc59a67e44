"""Free loopback TCP ports for local dev/test servers (Triton, S3).

A port from bind(0) is free *now*; another process may take it before our server binds it, so callers
retry their launch on "address already in use". Within this process we never hand out the same port twice,
so several servers started by one test session cannot collide with each other.
"""
from __future__ import annotations

import random
import socket
import threading

_HOST = "127.0.0.1"
_lock = threading.Lock()
_handed_out: set[int] = set()


def _bindable(port: int, host: str = _HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = _HOST) -> list[int]:
    """`count` distinct ports that are free on `host` and were not handed out before by this process."""
    ports: list[int] = []
    with _lock:
        while len(ports) < count:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                ports.append(port)
    return ports


def free_port(host: str = _HOST) -> int:
    return free_ports(1, host)[0]


def free_port_pair(offset: int, host: str = _HOST, low: int = 20000, high: int = 65535) -> tuple[int, int]:
    """Two free ports `p` and `p + offset`, for servers that derive one port from another by a fixed offset."""
    rng = random.Random()
    with _lock:
        for _ in range(1000):
            port = rng.randrange(low, high - offset)
            pair = (port, port + offset)
            if any(p in _handed_out for p in pair):
                continue
            if all(_bindable(p, host) for p in pair):
                _handed_out.update(pair)
                return pair
    raise RuntimeError(f"no free port pair with offset {offset} on {host}")
