"""What the commands share: reading the script and recordings, checking output paths, the time-coded
directions and the framing as request fields, reaching a gateway (credentials included), writing captions
and streams, and the progress shown on stderr meanwhile."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from services.common.domain.errors import InputError

DISTRIBUTION = "likeness"  # the project's name in pyproject.toml


def package_version() -> str:
    """The installed distribution's version; in a source tree that is not installed, pyproject.toml's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


class StageProgress:
    """One progress bar per stage on stderr (a plain line per stage when stderr is not a TTY)."""

    def __init__(self, stream=None) -> None:
        # sys.stderr as it is now: main() points it at the terminal after fd 2 went to the native log
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.stage: str | None = None
        self.started = 0.0
        self.finished = False

    def __call__(self, stage: str, fraction: float) -> None:
        if stage != self.stage:
            if self.stage is not None and not self.tty and not self.finished:
                print(f"{self.stage:<11}done in {time.perf_counter() - self.started:.1f}s", file=self.stream)
            self.stage, self.started, self.finished = stage, time.perf_counter(), False
        if self.finished:
            return
        if self.tty:
            filled = int(24 * fraction)
            self.stream.write(f"\r{stage:<11}[{'#' * filled}{'.' * (24 - filled)}] {fraction:4.0%}")
            if fraction >= 1.0:
                self.stream.write(f" {time.perf_counter() - self.started:5.1f}s\n")
            self.stream.flush()
        elif fraction >= 1.0:
            print(f"{stage:<11}done in {time.perf_counter() - self.started:.1f}s", file=self.stream)
        self.finished = fraction >= 1.0


def read_script(args: argparse.Namespace) -> str:
    if args.script_file is not None:
        try:
            return Path(args.script_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError("script-file", f"cannot read {args.script_file}: {exc}") from None
    return args.script or ""


def read_audio(path: str | None, field: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(field, f"cannot read {path}: {exc.strerror or exc}") from None


def check_speech_options(args: argparse.Namespace) -> None:
    """--script/--script-file, --voice and --audio combine as: script (+ voice) or audio (+ script)."""
    has_script = args.script is not None or args.script_file is not None
    audio = getattr(args, "audio", None)
    if audio is None and not has_script:
        raise InputError("script", "pass --script or --script-file (or --audio with your own recording)")
    if audio is not None and getattr(args, "voice", None):
        raise InputError("voice", "--voice clones a voice for a script; --audio already is your voice: "
                                  "use one of them")


def read_inputs(args: argparse.Namespace) -> tuple[str | None, bytes | None, bytes | None, Path]:
    """Script, voice sample, driving recording and photo path, checked the same way for every command."""
    check_speech_options(args)
    script = read_script(args)
    voice_sample = read_audio(args.voice, "voice")
    driving_audio = read_audio(args.audio, "audio")
    photo = Path(args.photo)
    if not photo.is_file():
        raise InputError("photo", f"{photo}: no such file")
    return script, voice_sample, driving_audio, photo


def check_captions(args: argparse.Namespace, script: str | None, driving_audio: bytes | None) -> None:
    from services.common.domain.captions import FORMATS
    from services.pipeline import check_output_path
    from services.pipeline.speech_rules import WORDS, check_speech

    if args.captions:
        check_output_path(args.captions, suffixes=tuple(FORMATS), field="captions")
        checked = check_speech(script or "", recording=driving_audio is not None, cloned=False, needs_words=True)
        for name, message in checked.violations:
            if name == WORDS:
                raise InputError("captions", f"{message} (--script)")


def check_poster(args: argparse.Namespace, alpha: bool) -> None:
    """--poster: a .jpg/.png whose folder exists (a transparent video's poster keeps its alpha: .png)."""
    from services.pipeline import check_output_path
    from services.render import POSTER_SUFFIXES

    if args.poster:
        check_output_path(args.poster, suffixes=(".png",) if alpha else POSTER_SUFFIXES, field="poster")


def timed(values: Sequence[str], kind: str) -> tuple[tuple[float, str, float], ...]:
    """--motion / --emotion-at values "SECONDS:NAME[:STRENGTH]" -> (seconds, name, strength)."""
    from services.common.infra import wire

    names = wire.MOTION_ENUM if kind == "motion" else wire.EMOTION_ENUM
    option = "motion" if kind == "motion" else "emotion-at"
    out = []
    for value in values:
        parts = value.split(":")
        try:
            seconds, strength = float(parts[0]), float(parts[2]) if len(parts) == 3 else 1.0
        except (ValueError, IndexError):
            parts = []
        if len(parts) not in (2, 3):
            raise InputError(option, f"{value!r}: expected SECONDS:NAME[:STRENGTH], e.g. 2.5:nod")
        name = "_".join(parts[1].strip().lower().replace("-", " ").split())
        if name not in names:
            raise InputError(option, f"{value!r}: unknown {kind} {parts[1]!r} (one of {', '.join(sorted(names))})")
        try:
            strength = wire.check_timed(seconds, strength, option)
        except InputError as exc:
            raise InputError(option, f"{value!r}: {exc.message}") from None
        out.append((seconds, name, strength))
    return tuple(out)


def face_at(args: argparse.Namespace) -> dict:
    """--face-at X,Y -> {"face_at": (x, y)} (nothing when not given)."""
    if not getattr(args, "face_at", None):
        return {}
    try:
        x, y = (float(v) for v in args.face_at.split(","))
    except ValueError:
        raise InputError("face-at", f"expected X,Y in photo pixels (e.g. 640,360), got {args.face_at!r}") from None
    return {"face_at": (x, y)}


def framing(args: argparse.Namespace) -> dict:
    """--aspect/--fit/--background/--keypoints/--face-at -> VideoRequest fields (validated there)."""
    from services.render import parse_keypoints, Background

    out = {"aspect": args.aspect, "fit": args.fit, **face_at(args)}
    if args.background:
        out["background"] = Background.parse(args.background)
    if args.keypoints:
        out["keypoints"] = tuple(map(tuple, parse_keypoints(args.keypoints).tolist()))
    return out


def check_submit_out(args: argparse.Namespace) -> None:
    """`likeness submit --out`, checked before anything is uploaded: a platform job returns .mp4 or
    .webm, a stream fragmented MP4 (or - : stdout)."""
    from services.render import check_output, output_kind

    if args.stream:
        if args.out != "-" and output_kind(args.out) != "mp4":
            raise InputError("out", "a stream is fragmented MP4: use .mp4, or - for stdout")
        if args.out != "-":
            check_output(args.out)
    else:
        if output_kind(args.out) == "png":
            raise InputError("out", "the platform returns .mp4 or .webm; PNG sequences are generate-only")
        check_output(args.out, alpha=(args.background or "").strip().lower() == "transparent")


def submit_framing(client, args: argparse.Namespace) -> dict:
    """The framing options as LikenessClient.submit arguments (a background image is uploaded)."""
    from services.render import parse_keypoints

    out = {"aspect": args.aspect, "fit": args.fit, "burn_captions": args.burn_captions, **face_at(args)}
    background = (args.background or "").strip()
    if background.lower() == "transparent" or background.startswith("#"):
        out["background"] = background.lower()
    elif background:
        if not Path(background).is_file():
            raise InputError("background", f"{background!r} is not '#RRGGBB', 'transparent' or an image file")
        out["background_image"] = client.upload_object(background, kind="photo").object
    if args.keypoints:
        out["keypoints"] = [tuple(p) for p in parse_keypoints(args.keypoints).tolist()]
    return out


def reachable_client(args: argparse.Namespace):
    """A LikenessClient for --server (with the key and CA), or None after saying why it cannot be reached."""
    from likeness_client import LikenessClient

    from services.common.infra.grpc_server import max_message_bytes

    client = LikenessClient(args.server, max_message_bytes=max_message_bytes(), **credentials(args))
    try:
        client.check_reachable()
    except ConnectionError as exc:
        client.close()
        print(f"error: server: {exc} at {args.server} (is it running? TLS: --tls-ca)", file=sys.stderr)
        return None
    return client


def credentials(args: argparse.Namespace) -> dict:
    """The API key (from --api-key-file, else $LIKENESS_API_KEY: never a command-line value, which
    other users could read in the process list) and the TLS root certificate, checked up front."""
    out: dict = {}
    for name, value in (("api-key-file", args.api_key_file), ("tls-ca", args.tls_ca)):
        if value and not Path(value).is_file():
            raise InputError(name, f"no such file: {value}")
    if args.api_key_file:
        out["api_key"] = Path(args.api_key_file).read_text().strip()
        if not out["api_key"]:
            raise InputError("api-key-file", f"{args.api_key_file} is empty")
    if args.tls_ca:
        out["tls_ca"] = args.tls_ca
    return out


def wait(client, job_id: str):
    """The job once it ends, its stages' progress drawn on stderr meanwhile."""
    bar = StageProgress()
    return client.wait(job_id, on_progress=lambda event: bar(stage_name(event.job.stage), event.stage_fraction))


def stage_name(stage: int) -> str:
    from likeness_client.proto.likeness.v1 import gateway_pb2

    return gateway_pb2.Stage.Name(stage).removeprefix("STAGE_").lower() if stage else "queued"


def write_captions(path: str, captions) -> None:
    """The platform's captions (likeness.v1.Captions) as the file `path` names: .srt or WebVTT."""
    target = Path(path)
    target.write_text(captions.srt if target.suffix.lower() == ".srt" else captions.webvtt, encoding="utf-8")
    print(f"captions: {target}", file=sys.stderr)


def write_cues(path: str, cues: list) -> None:
    """In-process captions (services.common.domain.captions cues) as the file `path` names: .srt or WebVTT."""
    from services.common.domain import captions

    target = Path(path)
    target.write_text(captions.FORMATS[target.suffix.lower()](cues), encoding="utf-8")
    print(f"captions: {target} ({len(cues)} cues)", file=sys.stderr)


def write_stream(out: str, write) -> None:
    """`write(sink)` into stdout for `-` (a player can read it from a pipe), else into the file `out`,
    which appears only once complete."""
    from services.render import write_atomically

    if out == "-":
        write(sys.stdout.buffer)
        return

    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as sink:
            write(sink)

    write_atomically(Path(out), to_file)


def read_cast(values: Sequence[str]) -> tuple:
    """--cast values (NAME=PHOTO[:voice=VOICE][:sample=FILE], or a JSON file mapping each name to
    {"photo", "voice", "sample"}, paths relative to it) -> CastMembers with the files' bytes."""
    import json

    from services.pipeline.request import CastMember

    entries: list[tuple[str, dict, Path]] = []  # (name, its fields, the folder its paths are relative to)
    for value in values:
        if "=" not in value and value.lower().endswith(".json"):
            try:
                listed = json.loads(Path(value).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise InputError("cast", f"cannot read {value}: {exc}") from None
            if not isinstance(listed, dict) or not all(isinstance(v, dict) for v in listed.values()):
                raise InputError("cast", f"{value}: expected {{\"NAME\": {{\"photo\": ..., \"voice\": ...}}}}")
            entries += [(name, fields, Path(value).parent) for name, fields in listed.items()]
            continue
        name, _, rest = value.partition("=")
        photo, *options = rest.split(":")
        fields = {"photo": photo}
        for option in options:
            key, eq, setting = option.partition("=")
            if not eq or key not in ("voice", "sample"):
                raise InputError("cast", f"expected NAME=PHOTO[:voice=VOICE][:sample=FILE], got {value!r}")
            fields[key] = setting
        entries.append((name.strip(), fields, Path(".")))
    cast = []
    for name, fields, folder in entries:
        unknown = set(fields) - {"photo", "voice", "sample"}
        if unknown or not fields.get("photo"):
            raise InputError(f"cast.{name}", "needs a photo (and may have a voice or a sample): "
                                             f"got {', '.join(sorted(fields)) or 'nothing'}")
        photo = folder / fields["photo"]
        if not photo.is_file():
            raise InputError(f"cast.{name}.photo", f"{photo}: no such file")
        sample = fields.get("sample")
        cast.append(CastMember(name=name, photo=photo.read_bytes(), voice=str(fields.get("voice") or ""),
                               voice_sample=read_audio(str(folder / sample), f"cast.{name}.sample")
                               if sample else None))
    return tuple(cast)
