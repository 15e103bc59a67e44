"""The `likeness` command's own behaviour, without running a pipeline or a gateway: `--version`, the allowed
values of enum-valued options (refused in one line naming the option and the values), `jobs --json`
(rendered from real likeness.v1.Job messages), that building the parser loads no stage, and that output
paths the result could not be written to are refused before any work.

(`likeness jobs --json` against a real gateway: tests/test_auth.py.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.cli import build_parser, jobs, options
from services.cli.helpers import package_version
from likeness_client.proto.likeness.v1 import common_pb2, gateway_pb2 as gw

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "photos" / "astronaut.png"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def pyproject_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        expected = version("likeness")
    except PackageNotFoundError:
        expected = pyproject_version()
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout == f"likeness {expected}\n", (proc.stdout, proc.stderr)


def test_version_falls_back_to_pyproject_when_not_installed(monkeypatch) -> None:
    import importlib.metadata

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert package_version() == pyproject_version()


def test_a_bad_emotion_is_refused_in_one_line_naming_the_option_and_its_values() -> None:
    from services.pipeline.request import EMOTIONS

    proc = run_cli("generate", "--photo", str(PHOTO), "--script", "Hello.", "--out", "o.mp4", "--emotion", "bored")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: emotion: unknown emotion 'bored'; supported: {', '.join(EMOTIONS)}\n", proc.stderr


def source_values() -> dict[str, tuple[str, ...]]:
    """Each enum-valued option's values, read from the module that defines them."""
    from services.common.domain.directions import EXPRESSIVENESS
    from services.pipeline.request import EMOTIONS
    from services.render import ASPECTS, FITS
    from services.tts import VOICES

    return {"aspect": tuple(ASPECTS), "fit": tuple(FITS), "emotion": tuple(EMOTIONS),
            "expressiveness": tuple(EXPRESSIVENESS), "voice_name": tuple(VOICES)}


def subcommand(name: str):
    parser = build_parser()
    return next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[name]


@pytest.mark.parametrize("command", ["generate", "submit", "live"])
def test_every_video_command_shares_the_choices_of_their_single_source(command) -> None:
    """generate, submit and live build their options from the same groups: each enum-valued option's
    choices are the module's own values (one Choices object, not a list written here)."""
    actions = {a.dest: a for a in subcommand(command)._actions}
    for dest, values in source_values().items():
        assert isinstance(actions[dest].choices, options.Choices), dest
        assert tuple(actions[dest].choices) == values, dest
        assert actions[dest].choices is {a.dest: a for a in subcommand("generate")._actions}[dest].choices


@pytest.mark.parametrize("command", ["generate", "submit", "live"])
@pytest.mark.parametrize("flag,value,expected", [
    ("--aspect", "3:2", "error: aspect: unknown aspect ratio '3:2'; supported: 1:1, 9:16, 16:9, 4:5"),
    ("--fit", "stretch", "error: fit: unknown fit 'stretch'; supported: cover, contain"),
    ("--expressiveness", "huge", "error: expressiveness: unknown level 'huge'; supported: low, medium, high"),
    ("--voice-name", "alice", "error: voice: unknown voice 'alice' (--voice-name); supported: joe, kokoro-female"),
    ("--emotion", "Happy", "error: emotion: unknown emotion 'Happy'; supported: neutral, happy"),
])
def test_a_value_outside_the_choices_exits_2_in_one_line(command, flag, value, expected, capsys) -> None:
    source = ["--text-in", "-"] if command == "live" else ["--script", "Hi."]
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--photo", str(PHOTO), *source, "--out", "o.mp4", flag, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err


def test_voice_names_are_matched_as_the_voice_check_matches_them() -> None:
    """(--voice-name as services.tts.check_voice reads it: any case, blank = the default voice.)"""
    for value in ("Kokoro-Female", " joe ", ""):
        args = build_parser().parse_args(["generate", "--photo", "p.png", "--script", "Hi.", "--out", "o.mp4",
                                          "--voice-name", value])
        assert args.voice_name == value


def test_the_choices_are_listed_in_help() -> None:
    text = subcommand("live").format_help()
    assert "neutral, happy, sad, angry, surprised, auto" in text and "1:1, 9:16, 16:9, 4:5" in text, text


def test_building_the_parser_loads_no_stage() -> None:
    """`likeness --help` stays quick: the choices are read on first use, the commands import inside `run`."""
    probe = ("import sys; from services.cli import build_parser; build_parser().parse_args(['voices']); "
             "print(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=True).stdout.split()
    heavy = [m for m in loaded if m.split(".")[0] in ("numpy", "grpc", "cv2", "google")
             or m.startswith(("services.render", "services.tts", "services.pipeline", "services.expression",
                              "likeness_client.proto"))]
    assert not heavy, heavy


def test_job_states_are_the_protos() -> None:
    assert jobs.JOB_STATES == tuple(name.removeprefix("JOB_STATE_").lower() for name in gw.JobState.keys()
                                    if name != "JOB_STATE_UNSPECIFIED")


def stamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def test_jobs_json_renders_real_job_messages() -> None:
    queued = gw.Job(job_id="a" * 32, state=gw.JOB_STATE_QUEUED, create_time=stamp(1_800_000_000),
                    update_time=stamp(1_800_000_000))
    failed = gw.Job(job_id="b" * 32, state=gw.JOB_STATE_FAILED, stage=gw.STAGE_RENDER, progress=0.5,
                    error=common_pb2.Status(code=3, message="photo: no face found"),
                    create_time=stamp(1_800_000_010), update_time=stamp(1_800_000_020))
    done = gw.Job(job_id="c" * 32, state=gw.JOB_STATE_SUCCEEDED, stage=gw.STAGE_UPLOAD, progress=1.0,
                  result=gw.JobResult(video=common_pb2.ObjectRef(bucket="videos", key="jobs/c/video.mp4"),
                                      presigned_url="http://127.0.0.1:9000/videos/jobs/c/video.mp4?sig=1"),
                  create_time=stamp(1_800_000_030), update_time=Timestamp(seconds=1_800_000_040, nanos=500_000_000))
    records = json.loads(json.dumps([jobs.job_record(job) for job in (queued, failed, done)]))
    assert records[0] == {"job_id": "a" * 32, "state": "queued", "stage": None, "progress": 0.0,
                          "created": "2027-01-15T08:00:00Z", "updated": "2027-01-15T08:00:00Z",
                          "error": None, "video": None, "video_url": None}
    assert records[1]["state"] == "failed" and records[1]["stage"] == "render" and records[1]["progress"] == 0.5
    assert records[1]["error"] == "photo: no face found" and records[1]["video"] is None
    assert records[2]["state"] == "succeeded" and records[2]["error"] is None
    assert records[2]["video"] == "s3://videos/jobs/c/video.mp4"
    assert records[2]["video_url"].startswith("http://127.0.0.1:9000/videos/jobs/c/video.mp4")
    assert records[2]["updated"] == "2027-01-15T08:00:40.500Z"


def test_jobs_json_prints_one_array(monkeypatch, capsys) -> None:
    """`likeness jobs --json` end to end but for the gateway: a client that lists two real Job messages."""
    from services.cli import helpers

    listed = [gw.Job(job_id="d" * 32, state=gw.JOB_STATE_RUNNING, stage=gw.STAGE_TTS, progress=0.25),
              gw.Job(job_id="e" * 32, state=gw.JOB_STATE_CANCELLED)]

    class Client:
        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def jobs(self, *states: int, page_size: int):
            assert states == (gw.JOB_STATE_RUNNING, gw.JOB_STATE_CANCELLED) and page_size == 20
            return iter(listed)

    monkeypatch.setattr(helpers, "reachable_client", lambda args: Client())
    args = build_parser().parse_args(["jobs", "--json", "--state", "running,cancelled"])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(j["job_id"], j["state"], j["stage"], j["progress"]) for j in printed] == [
        ("d" * 32, "running", "tts", 0.25), ("e" * 32, "cancelled", None, 0.0)]


# -- output paths: tried before any work -----------------------------------------------------------

def run_in_read_only(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`likeness ARGS` while `folder` is read-only. chmod stops an ordinary user; root writes through
    permissions, so for root the folder is bind-mounted read-only in a mount namespace of the command's
    own (unshare -m: nothing outside it sees the mount)."""
    folder.chmod(0o555)
    command = [sys.executable, "-m", "services.cli", *args]
    if os.geteuid() == 0:
        command = ["unshare", "-m", "sh", "-c", 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" '
                   '&& shift && exec "$@"', "sh", str(folder), *command]
    try:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        folder.chmod(0o755)


def refused_before_any_work(proc: subprocess.CompletedProcess, field: str, folder: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {field}: cannot create files in {folder} (") \
        and proc.stderr.count("\n") == 1, proc.stderr
    assert "done in" not in proc.stderr, proc.stderr  # no stage ran


@pytest.mark.parametrize("flag,name", [("--out", "x.mp4"), ("--out", "frames/"), ("--captions", "x.vtt"),
                                       ("--poster", "x.jpg"), ("--export-blendshapes", "x.json")])
def test_an_output_on_a_filesystem_that_takes_no_files_is_refused_before_any_work(tmp_path, flag, name) -> None:
    """/proc says yes to os.access (for root too) and then refuses every new file."""
    args = {"--out": str(tmp_path / "o.mp4"), flag: f"/proc/{name}"}
    proc = run_cli("generate", "--photo", str(PHOTO), "--script", "Hi.", *[a for pair in args.items() for a in pair])
    refused_before_any_work(proc, flag.removeprefix("--"), "/proc")
    assert list(tmp_path.iterdir()) == []


def test_an_output_in_a_read_only_folder_is_refused_before_any_work(tmp_path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    proc = run_in_read_only(folder, "generate", "--photo", str(PHOTO), "--script", "Hi.",
                            "--out", str(folder / "x.mp4"))
    refused_before_any_work(proc, "out", str(folder))
    assert list(folder.iterdir()) == []


def test_retry_and_submit_try_the_output_before_calling_a_gateway(tmp_path) -> None:
    """The address is never dialled: the output is refused first (the port is closed anyway)."""
    for args in (["retry", "--server", "127.0.0.1:9", "JOB", "--out", "/proc/x.mp4"],
                 ["submit", "--server", "127.0.0.1:9", "--photo", str(PHOTO), "--script", "Hi.",
                  "--out", "/proc/x.mp4"]):
        refused_before_any_work(run_cli(*args), "out", "/proc")
