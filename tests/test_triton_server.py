"""The REAL tritonserver (bundled in nvidia-pytriton 0.7.0) on tiny python-backend models written by the tests."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from services.devtools.triton_server import TritonServer, TritonServerError, probe_stub_python
from tests.conftest import TritonFactory, listening_addresses, processes_mentioning

ADD_ONE_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 8
dynamic_batching {{ max_queue_delay_microseconds: 100000 }}
input [ {{ name: "X", data_type: TYPE_FP32, dims: [ -1 ] }} ]
output [ {{ name: "Y", data_type: TYPE_FP32, dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""

ADD_ONE_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        {init}

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x + 1).astype(np.float32))]))
        return responses
"""


def write_model(repo: Path, name: str, init: str = "pass") -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(ADD_ONE_CONFIG.format(name=name))
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(ADD_ONE_MODEL).replace("{init}", init))


@pytest.fixture(scope="module")
def add_one_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo-add-one")
    write_model(repo, "add_one")
    return repo


def metric(metrics_url: str, name: str, model: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="{model}",version="1"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {model} not in {metrics_url}")


def metric_reaches(metrics_url: str, name: str, model: str, expected: float, timeout: float = 10.0) -> float:
    """Triton updates its statistics after the response is sent: poll briefly instead of racing it."""
    deadline = time.monotonic() + timeout
    while (value := metric(metrics_url, name, model)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def infer_add_one(client: grpcclient.InferenceServerClient, x: np.ndarray, model: str = "add_one") -> np.ndarray:
    inp = grpcclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(model, [inp]).as_numpy("Y")


def test_infer_over_grpc_and_metrics(triton_server_factory: TritonFactory, add_one_repo: Path) -> None:
    server = triton_server_factory(add_one_repo)
    assert server.ready_models == ["add_one"]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = metric(server.metrics_url, "nv_inference_request_success", "add_one")

    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    np.testing.assert_array_equal(infer_add_one(client, x), x + 1)
    assert metric_reaches(server.metrics_url, "nv_inference_request_success", "add_one", before + 1) == before + 1


def test_dynamic_batching_merges_concurrent_requests(triton_server_factory: TritonFactory, add_one_repo: Path) -> None:
    server = triton_server_factory(add_one_repo)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    requests_before = metric(server.metrics_url, "nv_inference_request_success", "add_one")
    execs_before = metric(server.metrics_url, "nv_inference_exec_count", "add_one")

    results: dict[int, np.ndarray] = {}
    done = threading.Event()

    def on_done(i: int, result, error) -> None:
        results[i] = error if error is not None else result.as_numpy("Y")
        if len(results) == 8:
            done.set()

    for i in range(8):
        inp = grpcclient.InferInput("X", [1, 4], "FP32")
        inp.set_data_from_numpy(np.full((1, 4), i, dtype=np.float32))
        client.async_infer("add_one", [inp], callback=lambda result, error, i=i: on_done(i, result, error))
    assert done.wait(30)

    for i in range(8):
        np.testing.assert_array_equal(results[i], np.full((1, 4), i + 1, dtype=np.float32))
    assert metric_reaches(server.metrics_url, "nv_inference_request_success", "add_one",
                          requests_before + 8) == requests_before + 8
    executions = metric(server.metrics_url, "nv_inference_exec_count", "add_one") - execs_before
    assert 1 <= executions < 8  # the 100 ms queue delay let the batcher merge requests


def test_likeness_client_spreads_calls_over_every_triton_replica(triton_server_factory: TritonFactory,
                                                                add_one_repo: Path, tmp_path: Path) -> None:
    """Two Triton servers behind one target (in Kubernetes `dns:///triton-pods:8001` resolves to every
    pod): the services' TritonClient sends calls round-robin, not all down its first connection."""
    from services.common.infra.inference import TritonClient

    write_model(tmp_path, "add_one")
    servers = [triton_server_factory(add_one_repo), triton_server_factory(tmp_path)]
    client = TritonClient("ipv4:" + ",".join(s.grpc_url for s in servers))
    client.infer("add_one", {"X": np.zeros((1, 4), np.float32)})  # opens a connection to each server;
    time.sleep(0.5)  # until both are up, calls go to the ones that are
    before = [metric(s.metrics_url, "nv_inference_request_success", "add_one") for s in servers]
    for i in range(8):
        x = np.full((1, 4), i, dtype=np.float32)
        np.testing.assert_array_equal(client.infer("add_one", {"X": x})["Y"], x + 1)
    for server, was in zip(servers, before):  # alternating (pick_first, the default, sends all 8 to one)
        assert metric_reaches(server.metrics_url, "nv_inference_request_success", "add_one", was + 4) == was + 4
    # The URL form the k8s config uses; the channel is reopened (DNS asked again) after refresh_s.
    single = TritonClient(f"dns:///localhost:{servers[0].grpc_port}", refresh_s=0.5)
    first = single._client
    np.testing.assert_array_equal(single.infer("add_one", {"X": np.ones((1, 2), np.float32)})["Y"], [[2, 2]])
    time.sleep(0.6)
    np.testing.assert_array_equal(single.infer("add_one", {"X": np.zeros((1, 2), np.float32)})["Y"], [[1, 1]])
    assert single._client is not first


def test_binds_loopback_only(triton_server_factory: TritonFactory, add_one_repo: Path) -> None:
    server = triton_server_factory(add_one_repo)
    addresses = listening_addresses(server.pid or -1)
    ports = {server.grpc_port, server.http_port, server.metrics_port}
    assert ports <= {port for _, port in addresses} and len(ports) == 3
    assert {ip for ip, _ in addresses} == {"127.0.0.1"}
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=10) as response:
        assert response.status == 200


def test_failing_model_gives_clear_error_and_explicit_mode_skips_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, "add_one")
    write_model(repo, "broken", init='raise RuntimeError("weights file missing: broken.onnx")')

    started = time.monotonic()
    with pytest.raises(TritonServerError) as err:
        TritonServer(repo, start_timeout=60).start()
    assert time.monotonic() - started < 30  # fails as soon as the load fails, not at the timeout
    message = str(err.value)
    assert "failed to load 'broken' version 1" in message and "weights file missing: broken.onnx" in message
    assert "tail:" in message and "model_lifecycle" in message  # the log tail itself
    assert processes_mentioning(str(repo)) == []

    with TritonServer(repo, models=["add_one"]) as server:  # explicit model control: loads only add_one
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_model_ready("add_one") and not client.is_model_ready("broken")
        np.testing.assert_array_equal(infer_add_one(client, np.zeros((1, 2), np.float32)), np.ones((1, 2)))
        group = server.pid
        assert len(processes_mentioning(str(repo))) == 2  # tritonserver + one python stub
    assert processes_mentioning(str(repo)) == []
    assert not Path(f"/proc/{group}").exists()


def test_model_that_never_loads_times_out_with_log_tail(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, "slow", init="import time; time.sleep(120)")
    started = time.monotonic()
    with pytest.raises(TritonServerError, match=r"(?s)not ready after 3 s.*tail:.*loading: slow:1"):
        TritonServer(repo, start_timeout=3).start()
    assert time.monotonic() - started < 12  # timeout + at most the failed-start kill grace
    assert processes_mentioning(str(repo)) == []  # the stub stuck in initialize() was killed too


def test_stub_environment_has_numpy_below_2() -> None:
    # With numpy 2 the 2.51 python-backend stub returns EMPTY outputs silently; the project pins 1.26.4.
    probe = probe_stub_python(Path(sys.executable).parent)
    assert probe.version == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert probe.numpy_version == np.__version__ and int(probe.numpy_version.split(".")[0]) < 2


def test_numpy_2_stub_environment_is_refused(tmp_path: Path, add_one_repo: Path) -> None:
    fake_python = tmp_path / "python3"  # answers the probe like an interpreter with numpy 2
    fake_python.write_text("#!/bin/sh\nprintf '3.11\\n/usr/lib\\n2.1.3\\n'\n")
    fake_python.chmod(0o755)
    with pytest.raises(TritonServerError, match=r"numpy 2\.1\.3.*numpy<2"):
        TritonServer(add_one_repo, python_bin_dir=tmp_path).start()


def test_cli_prints_url_and_stops_on_sigterm(add_one_repo: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.devtools.triton_server", "--model-repository", str(add_one_repo),
         "--model", "add_one"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("LIKENESS_TRITON_URL=127.0.0.1:"), proc.stderr.read() if proc.stderr else first
        second = proc.stdout.readline()
        assert "metrics http://127.0.0.1:" in second and "models add_one" in second
        run_dir = str(Path(second.rsplit("log ", 1)[1].strip()).parent)  # private backend copy + log
        assert len(processes_mentioning(run_dir)) == 2  # tritonserver + stub
        client = grpcclient.InferenceServerClient(first.split("=", 1)[1])
        np.testing.assert_array_equal(infer_add_one(client, np.ones((2, 3), np.float32)), np.full((2, 3), 2.0))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert processes_mentioning(run_dir) == []
    assert not Path(run_dir).exists()
