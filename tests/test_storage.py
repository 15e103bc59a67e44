"""Storage against a REAL S3 server (SeaweedFS `weed mini`, which verifies SigV4 signatures), and S3Server itself."""
from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from minio.error import S3Error

from services.common.domain.errors import InputError, StorageUnavailable
from services.devtools.s3_server import S3Server
from services.common.infra.storage import IntegrityError, ObjectNotFoundError, Storage
from tests.conftest import listening_addresses, processes_mentioning

MiB = 1024 * 1024


def _random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _raw_client(server: S3Server) -> Minio:
    """An independent client (plain minio SDK) to check what Storage really stored."""
    return Minio(server.endpoint, access_key=server.access_key, secret_key=server.secret_key, secure=False)


# -- objects ---------------------------------------------------------------------------------------------------

def test_put_get_bytes_with_sha256_metadata(storage: Storage, s3_server: S3Server) -> None:
    data = _random_bytes(100_000, seed=1)
    info = storage.put_bytes("jobs/j1/photo.png", data, "image/png")

    expected_sha = hashlib.sha256(data).hexdigest()
    assert (info.bucket, info.key, info.sha256, info.size, info.content_type) == (
        storage.bucket, "jobs/j1/photo.png", expected_sha, len(data), "image/png")
    assert storage.get_bytes("jobs/j1/photo.png") == data
    assert storage.stat("jobs/j1/photo.png") == info
    raw = _raw_client(s3_server).stat_object(storage.bucket, "jobs/j1/photo.png")
    assert raw.metadata is not None and raw.metadata["x-amz-meta-sha256"] == expected_sha
    assert raw.size == len(data) and raw.content_type == "image/png"


def test_copy_is_server_side_and_keeps_the_checksum(storage: Storage) -> None:
    data = _random_bytes(50_000, seed=2)
    storage.put_bytes("jobs/a/video.mp4", data, "video/mp4")
    storage.copy("jobs/a/video.mp4", "jobs/b/video.mp4")
    assert storage.get_bytes("jobs/b/video.mp4") == data  # (get_bytes verifies the sha256 metadata)
    assert storage.stat("jobs/b/video.mp4").sha256 == hashlib.sha256(data).hexdigest()
    assert storage.stat("jobs/b/video.mp4").content_type == "video/mp4"
    with pytest.raises(ObjectNotFoundError):
        storage.copy("jobs/a/none.mp4", "jobs/b/none.mp4")


def test_put_file_and_get_file(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "in.wav"
    src.write_bytes(_random_bytes(777_777, seed=2))
    info = storage.put_file("jobs/j2/voice.wav", src, "audio/wav")
    assert info.sha256 == hashlib.sha256(src.read_bytes()).hexdigest() and info.size == 777_777

    dst = storage.get_file("jobs/j2/voice.wav", tmp_path / "out" / "voice.wav")
    assert dst.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["voice.wav"]  # no partial-download leftovers


def test_exists_stat_list_delete(storage: Storage) -> None:
    for key in ("jobs/a/1.bin", "jobs/a/2.bin", "jobs/b/3.bin"):
        storage.put_bytes(key, key.encode())
    assert storage.list("jobs/a/") == ["jobs/a/1.bin", "jobs/a/2.bin"]
    assert storage.list() == ["jobs/a/1.bin", "jobs/a/2.bin", "jobs/b/3.bin"]
    assert storage.exists("jobs/a/1.bin") and not storage.exists("jobs/a/9.bin")

    storage.delete("jobs/a/1.bin")
    assert not storage.exists("jobs/a/1.bin")
    assert storage.list("jobs/") == ["jobs/a/2.bin", "jobs/b/3.bin"]
    with pytest.raises(ObjectNotFoundError):
        storage.stat("jobs/a/1.bin")
    with pytest.raises(ObjectNotFoundError):
        storage.get_bytes("jobs/a/1.bin")
    storage.delete("jobs/a/1.bin")  # deleting a missing key is fine (S3 semantics)


def test_read_detects_bytes_that_do_not_match_their_sha256(storage: Storage, s3_server: S3Server) -> None:
    body = b"rendered video bytes"
    _raw_client(s3_server).put_object(storage.bucket, "jobs/x/video.mp4", io.BytesIO(body), len(body),
                                      metadata={"sha256": hashlib.sha256(b"something else").hexdigest()})
    with pytest.raises(IntegrityError):
        storage.get_bytes("jobs/x/video.mp4")


def test_ensure_bucket_is_idempotent(storage: Storage) -> None:
    storage.ensure_bucket()
    storage.ensure_bucket()
    assert storage.client.bucket_exists(storage.bucket)


# -- presigned URLs and credentials ----------------------------------------------------------------------------

def _http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_presigned_get_works_and_tampering_is_rejected(storage: Storage) -> None:
    storage.put_bytes("jobs/p/video.mp4", b"\x00\x01video", "video/mp4")
    storage.put_bytes("jobs/p/other.mp4", b"secret other")
    url = storage.presigned_get_url("jobs/p/video.mp4", expires=timedelta(minutes=5))

    assert _http_get(url) == (200, b"\x00\x01video")
    sig_at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    flipped = "0" if url[sig_at] != "0" else "1"
    assert _http_get(url[:sig_at] + flipped + url[sig_at + 1:])[0] == 403
    assert _http_get(url.replace("video.mp4", "other.mp4"))[0] == 403  # signature is bound to the key
    no_auth = url.split("?")[0]
    assert _http_get(no_auth)[0] == 403


def test_presigned_url_expires(storage: Storage) -> None:
    storage.put_bytes("jobs/e/a.txt", b"soon gone")
    url = storage.presigned_get_url("jobs/e/a.txt", expires=timedelta(seconds=1))
    time.sleep(2.2)
    assert _http_get(url)[0] == 403


def test_bad_credentials_are_rejected(storage: Storage, s3_server: S3Server) -> None:
    storage.put_bytes("jobs/c/a.txt", b"private")
    wrong_secret = Storage(s3_server.endpoint, s3_server.access_key, "not-the-secret", storage.bucket)
    wrong_key = Storage(s3_server.endpoint, "nobody", s3_server.secret_key, storage.bucket)

    started = time.monotonic()
    with pytest.raises(S3Error) as bad_sig:
        wrong_secret.get_bytes("jobs/c/a.txt")
    assert bad_sig.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as bad_key:
        wrong_key.list()
    assert bad_key.value.code == "InvalidAccessKeyId"
    with pytest.raises(S3Error):
        wrong_secret.put_bytes("jobs/c/b.txt", b"intruder")
    assert time.monotonic() - started < 2.0  # auth errors are not retried
    assert storage.list("jobs/c/") == ["jobs/c/a.txt"]


def test_from_env(s3_server: S3Server, storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_server.env(storage.bucket).items():
        monkeypatch.setenv(name, value)
    storage.put_bytes("k", b"v")
    assert Storage.from_env().get_bytes("k") == b"v"
    monkeypatch.delenv("LIKENESS_S3_SECRET_KEY")
    with pytest.raises(RuntimeError, match="LIKENESS_S3_SECRET_KEY"):
        Storage.from_env()


# -- streamed uploads ------------------------------------------------------------------------------------------

def _chunks(data: bytes, size: int = 64 * 1024):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_stream_over_max_size_is_input_error_and_stores_nothing(storage: Storage) -> None:
    consumed = []

    def endless():
        while True:
            consumed.append(1)
            yield b"x" * 65536

    with pytest.raises(InputError) as err:
        storage.put_stream("uploads/big.bin", endless(), max_size=1 * MiB, field="photo")
    assert err.value.field == "photo" and "too large" in err.value.message
    assert len(consumed) == 17  # stopped reading right after crossing 1 MiB
    assert not storage.exists("uploads/big.bin")


def test_stream_sha256_mismatch_is_input_error_and_stores_nothing(storage: Storage) -> None:
    data = _random_bytes(300_000, seed=3)
    wrong = hashlib.sha256(data + b"!").hexdigest()
    with pytest.raises(InputError) as err:
        storage.put_stream("uploads/a.bin", _chunks(data), max_size=MiB, expected_sha256=wrong)
    assert err.value.field == "asset" and "sha256 mismatch" in err.value.message
    assert not storage.exists("uploads/a.bin")
    with pytest.raises(InputError, match="64 hex"):
        storage.put_stream("uploads/a.bin", _chunks(data), max_size=MiB, expected_sha256="abc")

    info = storage.put_stream("uploads/a.bin", _chunks(data), max_size=MiB,
                              expected_sha256=hashlib.sha256(data).hexdigest().upper())
    assert info.sha256 == hashlib.sha256(data).hexdigest() and storage.get_bytes("uploads/a.bin") == data


def test_large_stream_goes_multipart(storage: Storage) -> None:
    data = _random_bytes(12 * MiB + 123, seed=4)
    sha = hashlib.sha256(data).hexdigest()
    info = storage.put_stream("uploads/video.mp4", _chunks(data), max_size=64 * MiB, expected_sha256=sha,
                              content_type="video/mp4")
    assert info.etag.endswith("-3")  # 5 MiB parts: 5 + 5 + 2
    assert storage.stat("uploads/video.mp4").etag == info.etag
    assert storage.stat("uploads/video.mp4").sha256 == sha
    assert hashlib.sha256(storage.get_bytes("uploads/video.mp4")).hexdigest() == sha


# -- transient failures ----------------------------------------------------------------------------------------

class FlakyProxy:
    """TCP proxy to the S3 server that slams the first `drop_first` connections shut without a byte."""

    def __init__(self, target: str, drop_first: int) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.drop_first = drop_first
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.connections <= self.drop_first:
                conn.close()
                continue
            upstream = socket.create_connection(self.target)
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while block := src.recv(65536):
                dst.sendall(block)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def test_transient_connection_errors_are_retried(storage: Storage, s3_server: S3Server) -> None:
    proxy = FlakyProxy(s3_server.endpoint, drop_first=2)
    try:
        flaky = Storage(proxy.endpoint, s3_server.access_key, s3_server.secret_key, storage.bucket,
                        max_attempts=4, backoff_s=0.05)
        info = flaky.put_bytes("jobs/r/a.bin", b"survived")
        assert proxy.connections >= 3  # two dropped, then through
        assert flaky.get_bytes("jobs/r/a.bin") == b"survived" and info.sha256 == storage.stat("jobs/r/a.bin").sha256
    finally:
        proxy.close()


def test_retries_are_bounded(s3_server: S3Server) -> None:
    proxy = FlakyProxy(s3_server.endpoint, drop_first=1000)
    try:
        flaky = Storage(proxy.endpoint, s3_server.access_key, s3_server.secret_key, "any-bucket",
                        max_attempts=3, backoff_s=0.1)
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="object storage unreachable") as caught:
            flaky.get_bytes("k")  # (a gRPC handler answers UNAVAILABLE: try again later)
        assert isinstance(caught.value.__cause__, urllib3.exceptions.HTTPError)
        elapsed = time.monotonic() - started
        assert proxy.connections == 3
        assert 0.3 <= elapsed < 5.0  # backoff 0.1 s + 0.2 s between the three attempts
    finally:
        proxy.close()


# -- the server ------------------------------------------------------------------------------------------------

def test_server_listens_only_on_loopback_and_avoids_default_ports(s3_server: S3Server) -> None:
    addresses = listening_addresses(s3_server.pid or -1)
    assert ("127.0.0.1", s3_server.port) in addresses
    assert {ip for ip, _ in addresses} == {"127.0.0.1"}
    weed_defaults = {9333, 19333, 9340, 19340, 8888, 18888, 8333, 18333, 7333, 8181, 9101, 23646, 33646}
    assert not weed_defaults & {port for _, port in addresses}


def _run_cli(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen([sys.executable, "-m", "services.devtools.s3_server", "--dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    settings: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:  # settings come only once the server answers signed requests
        if line.startswith("#"):
            break
        name, _, value = line.strip().partition("=")
        settings[name] = value
    return proc, settings


def _stop_cli(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""


def test_cli_serves_until_sigterm_and_keeps_data(tmp_path: Path, storage: Storage) -> None:
    env = dict(os.environ, LIKENESS_S3_ACCESS_KEY="devkey", LIKENESS_S3_SECRET_KEY="devsecret-0123456789")
    data_dir = tmp_path / "s3data"
    proc, settings = _run_cli(data_dir, env)
    try:
        assert settings["LIKENESS_S3_ACCESS_KEY"] == "devkey" and settings["LIKENESS_S3_BUCKET"] == "likeness"
        assert settings["LIKENESS_S3_ENDPOINT"] != storage.endpoint  # runs beside the session server
        cli_store = Storage(settings["LIKENESS_S3_ENDPOINT"], "devkey", "devsecret-0123456789", "likeness")
        cli_store.put_bytes("kept.txt", b"still here")  # the CLI created the bucket
    finally:
        _stop_cli(proc)
    assert processes_mentioning(str(data_dir)) == []

    proc, settings = _run_cli(data_dir, env)  # same data dir: objects survive a restart
    try:
        cli_store = Storage(settings["LIKENESS_S3_ENDPOINT"], "devkey", "devsecret-0123456789", "likeness")
        assert cli_store.get_bytes("kept.txt") == b"still here"
    finally:
        _stop_cli(proc)
    assert processes_mentioning(str(data_dir)) == []
    storage.put_bytes("unaffected", b"ok")  # the session server did not notice any of this
    assert storage.get_bytes("unaffected") == b"ok"


def test_failed_start_reports_log_tail(tmp_path: Path) -> None:
    blocker = socket.create_server(("127.0.0.1", 0))
    try:
        server = S3Server(tmp_path / "d", port=blocker.getsockname()[1], start_timeout=20)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="(?s)exited with code.*not available"):
            server.start()
        assert time.monotonic() - started < 10
        assert processes_mentioning(str(tmp_path / "d")) == []
    finally:
        blocker.close()
