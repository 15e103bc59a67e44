"""The client package, clients/python (likeness-client): built into a wheel from the files of a checkout
that its build needs (its setup.py generates the protos: the copy holds none), installed into a folder
of its own, then imported by a process that cannot see the repository, numpy, Prometheus or the
services, and used there for real calls over the network to a gRPC gateway servicer in this process.
Also: the services and the client share one generated copy of the protos and one set of live markers,
and the client's option tables (derived from the proto enums) are the API's vocabulary."""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import zipfile
from email.parser import Parser
from pathlib import Path

import grpc
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import likeness_client
from likeness_client.proto.likeness.v1 import common_pb2, gateway_pb2 as gw, gateway_pb2_grpc
from services.common.config import SETTINGS
from services.common.infra import wire
from services.common.infra.grpc_server import serve

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "clients" / "python"
GATEWAY = gw.DESCRIPTOR.services_by_name["GatewayService"].full_name
BLOCKED = ("numpy", "prometheus_client", "services")


def declared_version() -> str:
    """likeness_client.__version__ as the build reads it (a static assignment: pyproject's dynamic version)."""
    tree = ast.parse((CLIENT / "likeness_client" / "__init__.py").read_text())
    versions = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and [ast.unparse(t) for t in node.targets] == ["__version__"] and isinstance(node.value, ast.Constant)]
    assert len(versions) == 1, "likeness_client/__init__.py must assign __version__ a literal once"
    return versions[0]


def pip(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the folder it is installed in), built from a checkout without generated code."""
    tmp = tmp_path_factory.mktemp("client-package")
    checkout = tmp / "checkout"
    shutil.copytree(REPO / "protos", checkout / "protos")
    (checkout / "services" / "devtools").mkdir(parents=True)
    shutil.copy2(REPO / "services" / "devtools" / "protogen.py", checkout / "services" / "devtools")
    shutil.copytree(CLIENT, checkout / "clients" / "python", ignore=shutil.ignore_patterns(
        "proto", "build", "dist", "*.egg-info", "__pycache__"))
    assert not (checkout / "clients" / "python" / "likeness_client" / "proto").exists()
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", str(checkout / "clients" / "python"),
        "-w", str(tmp / "dist"))
    (wheel,) = (tmp / "dist").glob("likeness_client-*.whl")
    pip("install", "--no-deps", "--no-index", "--target", str(tmp / "site"), str(wheel))
    return wheel, tmp / "site"


def test_the_wheel_holds_the_generated_code_and_declares_grpcio_and_protobuf(built) -> None:
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    generated = "likeness_client/proto/likeness/v1/"
    assert {"likeness_client/__init__.py", "likeness_client/client.py", "likeness_client/markers.py",
            "likeness_client/py.typed", "likeness_client/proto/__init__.py", f"{generated}__init__.py",
            f"{generated}gateway_pb2.py", f"{generated}gateway_pb2.pyi", f"{generated}gateway_pb2_grpc.py",
            f"{generated}common_pb2.py", f"{generated}expression_pb2.py"} <= names
    assert not [n for n in names if ".protogen" in n or n.endswith(".pyc")]  # (the generator's stamp and lock)
    assert metadata["Name"] == "likeness-client" and metadata["Version"] == declared_version()
    assert SpecifierSet(metadata["Requires-Python"]) == SpecifierSet(">=3.11,<3.12")  # the repository's
    requires = [Requirement(text) for text in metadata.get_all("Requires-Dist")]
    assert sorted(r.name for r in requires) == ["grpcio", "protobuf"], requires
    # the repository's pins (requirements.txt: grpcio 1.67.1, protobuf 4.25.9) satisfy the ranges
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines()
                if line.startswith(("grpcio==", "protobuf==")))
    for requirement in requires:
        assert requirement.specifier.contains(pins[requirement.name]), (requirement, pins)


class RecordingGateway(gateway_pb2_grpc.GatewayServiceServicer):
    """The calls the installed client makes: what arrived, with its metadata."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, dict[str, str]]] = []
        self.lock = threading.Lock()

    def _record(self, name: str, request, context) -> None:
        with self.lock:
            self.calls.append((name, request, dict(context.invocation_metadata())))

    def ListVoices(self, request, context):  # noqa: N802 (gRPC method name)
        self._record("ListVoices", request, context)
        return gw.ListVoicesResponse(voices=[gw.VoiceInfo(name="kokoro-female", engine="kokoro", is_default=True)])

    def UploadAsset(self, request_iterator, context):  # noqa: N802
        messages = list(request_iterator)
        self._record("UploadAsset", messages[0], context)
        data = b"".join(m.chunk for m in messages[1:])
        assert hashlib.sha256(data).hexdigest() == messages[0].header.sha256
        return gw.UploadAssetResponse(asset_id=messages[0].header.sha256,
                                      object=common_pb2.ObjectRef(size_bytes=len(data)))

    def SubmitVideo(self, request, context):  # noqa: N802
        self._record("SubmitVideo", request, context)
        return gw.SubmitVideoResponse(job_id="job-1")

    def GetJob(self, request, context):  # noqa: N802
        self._record("GetJob", request, context)
        context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id}")


@pytest.fixture(scope="module")
def gateway():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    servicer = RecordingGateway()
    server = serve([(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, servicer)], port=port,
                   service_names=[GATEWAY], max_workers=4, host="127.0.0.1", handle_sigterm=False, health_port=0)
    yield f"127.0.0.1:{port}", servicer
    server.stop(0)


# Runs where only the installed wheel (PYTHONPATH), grpcio and protobuf can be imported.
CALLER = textwrap.dedent("""
    import json, sys
    for name in %(blocked)r:
        sys.modules[name] = None  # importing it now raises ImportError
    import likeness_client
    from likeness_client import INTERRUPT, LISTEN, LikenessClient, markers
    from likeness_client.proto.likeness.v1 import gateway_pb2, gateway_pb2_grpc

    out = {"file": likeness_client.__file__, "version": likeness_client.__version__,
           "proto_file": gateway_pb2.__file__, "grpc_file": gateway_pb2_grpc.__file__,
           "markers": INTERRUPT is markers.INTERRUPT and LISTEN == markers.Listen(True)}
    with LikenessClient(sys.argv[1], timeout_s=30) as client:  # api key from $LIKENESS_API_KEY
        client.check_reachable(10)
        out["voices"] = [(v.name, v.is_default) for v in client.voices()]
        out["asset"] = client.upload(b"not really a photo", kind="photo", filename="me.jpg")
        out["job"] = client.submit(photo=out["asset"], script="Hello!", aspect="9:16", fit="contain",
                                   emotion="happy", expressiveness="high", seed=7,
                                   emotions=[(1.0, "sad", 0.5)], motions=[(2.0, "tilt_left", 1.0)])
        try:
            client.get("nope")
        except Exception as exc:
            out["get"] = [exc.code().name, exc.details()]
    out["loaded"] = sorted({m.split(".")[0] for m, v in sys.modules.items() if v is not None})
    print(json.dumps(out))
""") % {"blocked": BLOCKED}


def test_the_installed_wheel_alone_makes_real_calls(built, gateway) -> None:
    _, site = built
    address, servicer = gateway
    env = {**os.environ, "PYTHONPATH": str(site), "LIKENESS_API_KEY": "k-123", "LIKENESS_TLS_CA_FILE": ""}
    done = subprocess.run([sys.executable, "-c", CALLER, address], cwd=site.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)

    for key in ("file", "proto_file", "grpc_file"):  # the wheel's, not the repository's
        assert Path(out[key]).resolve().is_relative_to(site.resolve()), out[key]
    assert out["version"] == declared_version() and out["markers"]
    assert {"grpc", "google", "likeness_client"} <= set(out["loaded"]) and not set(out["loaded"]) & set(BLOCKED)
    assert out["voices"] == [["kokoro-female", True]]
    assert out["asset"] == hashlib.sha256(b"not really a photo").hexdigest()
    assert out["job"] == "job-1"
    assert out["get"] == ["NOT_FOUND", "no job nope"]

    calls = {name: (request, metadata) for name, request, metadata in servicer.calls}
    assert [name for name, _, _ in servicer.calls] == ["ListVoices", "UploadAsset", "SubmitVideo", "GetJob"]
    assert all(metadata.get("authorization") == "Bearer k-123" for _, _, metadata in servicer.calls)
    assert calls["UploadAsset"][0].header.kind == gw.ASSET_KIND_PHOTO
    request = calls["SubmitVideo"][0]  # the names became the API's enum values, read as the server reads them
    assert request.client_request_id and request.seed == 7 and request.script == "Hello!"
    assert request.video.aspect_ratio == common_pb2.ASPECT_RATIO_9_16 and request.video.fit == common_pb2.FIT_CONTAIN
    assert request.emotion == common_pb2.EMOTION_HAPPY and request.expressiveness == common_pb2.EXPRESSIVENESS_HIGH
    assert wire.timed_emotion_from_pb(request.emotions[0]) == (1.0, "sad", 0.5)
    assert wire.timed_motion_from_pb(request.motions[0]) == (2.0, "tilt_left", 1.0)


def test_the_services_and_the_client_share_one_generated_copy_and_the_markers() -> None:
    from services.common.live import listening, pacing

    assert wire.pb is common_pb2  # one module, so one descriptor pool entry per .proto file
    assert Path(common_pb2.__file__).is_relative_to(CLIENT / "likeness_client" / "proto")
    assert not [name for name in sys.modules if ".proto_gen" in name]  # (the old, second copy)
    assert pacing.INTERRUPT is likeness_client.INTERRUPT and pacing.Interrupt is likeness_client.Interrupt
    assert listening.Listen is likeness_client.Listen
    assert (listening.LISTEN, listening.STOP_LISTENING) == (likeness_client.LISTEN, likeness_client.STOP_LISTENING)


def test_the_option_tables_are_the_api_enums_by_name() -> None:
    from likeness_client import client

    assert set(client.KINDS) == {"photo", "voice_sample", "driving_audio", "script"}
    assert client.EMOTIONS == {**wire.EMOTION_ENUM, "auto": common_pb2.EMOTION_AUTO}
    assert client.TIMED_EMOTIONS == wire.EMOTION_ENUM and client.MOTIONS == wire.MOTION_ENUM
    assert client.EXPRESSIVENESS == wire.EXPRESSIVENESS_ENUM
    assert client.ASPECTS == {"1:1": common_pb2.ASPECT_RATIO_1_1, "9:16": common_pb2.ASPECT_RATIO_9_16,
                              "16:9": common_pb2.ASPECT_RATIO_16_9, "4:5": common_pb2.ASPECT_RATIO_4_5}
    assert client.FITS == {"cover": common_pb2.FIT_COVER, "contain": common_pb2.FIT_CONTAIN}
    # the client's message size is the servers' default (LIKENESS_GRPC_MAX_MESSAGE_BYTES)
    assert client.MAX_MESSAGE_BYTES == SETTINGS["LIKENESS_GRPC_MAX_MESSAGE_BYTES"].default
    assert set(likeness_client.__all__) <= set(dir(likeness_client))
