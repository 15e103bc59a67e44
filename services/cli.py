"""`likeness` command line: the embedded default (`generate`, no servers), the local platform
(`serve`) and its client (`submit`).

Bad input never ends in a traceback: a one-line `error: FIELD: message` on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from services.common import config
from services.common.domain.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from services.common.live.listening import Listen
    from services.common.live.pacing import Interrupt

EXIT_BAD_INPUT = 2
CANCEL = "\x18"  # ASCII CAN in `likeness live --text-in -`: an interrupt (the user spoke over the avatar)
LISTEN_ON, LISTEN_OFF = "\x11", "\x13"  # ASCII DC1 / DC3 there: the user started / stopped talking


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


def _read_script(args: argparse.Namespace) -> str:
    if args.script_file is not None:
        try:
            return Path(args.script_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError("script-file", f"cannot read {args.script_file}: {exc}") from None
    return args.script or ""


def _read_audio(path: str | None, field: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(field, f"cannot read {path}: {exc.strerror or exc}") from None


def _check_speech_options(args: argparse.Namespace) -> None:
    """--script/--script-file, --voice and --audio combine as: script (+ voice) or audio (+ script)."""
    has_script = args.script is not None or args.script_file is not None
    audio = getattr(args, "audio", None)
    if audio is None and not has_script:
        raise InputError("script", "pass --script or --script-file (or --audio with your own recording)")
    if audio is not None and getattr(args, "voice", None):
        raise InputError("voice", "--voice clones a voice for a script; --audio already is your voice: "
                                  "use one of them")


def _read_inputs(args: argparse.Namespace) -> tuple[str | None, bytes | None, bytes | None, Path]:
    """Script, voice sample, driving recording and photo path, checked the same way for every command."""
    _check_speech_options(args)
    script = _read_script(args)
    voice_sample = _read_audio(args.voice, "voice")
    driving_audio = _read_audio(args.audio, "audio")
    photo = Path(args.photo)
    if not photo.is_file():
        raise InputError("photo", f"{photo}: no such file")
    return script, voice_sample, driving_audio, photo


def _check_captions(args: argparse.Namespace, script: str | None, driving_audio: bytes | None) -> None:
    from services.common.domain.captions import FORMATS
    from services.pipeline import check_output_path
    from services.pipeline.speech_rules import WORDS, check_speech

    if args.captions:
        check_output_path(args.captions, suffixes=tuple(FORMATS), field="captions")
        checked = check_speech(script or "", recording=driving_audio is not None, cloned=False, needs_words=True)
        for name, message in checked.violations:
            if name == WORDS:
                raise InputError("captions", f"{message} (--script)")


def _check_poster(args: argparse.Namespace, alpha: bool) -> None:
    """--poster: a .jpg/.png whose folder exists (a transparent video's poster keeps its alpha: .png)."""
    from services.pipeline import check_output_path
    from services.render import POSTER_SUFFIXES

    if args.poster:
        check_output_path(args.poster, suffixes=(".png",) if alpha else POSTER_SUFFIXES, field="poster")


def _timed(values: Sequence[str], kind: str) -> tuple[tuple[float, str, float], ...]:
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


def cmd_generate(args: argparse.Namespace) -> int:
    from services.common.domain import captions
    from services.pipeline import EmbeddedPipeline, VideoRequest, check_output_path
    from services.render import check_output, write_poster

    script, voice_sample, driving_audio, photo = _read_inputs(args)
    request = VideoRequest(photo=photo.read_bytes(), script=script, size=args.size, fps=args.fps, seed=args.seed,
                           voice_sample=voice_sample, driving_audio=driving_audio, voice=args.voice_name or "",
                           speed=args.speed, burn_captions=args.burn_captions, auto_motions=args.auto_motions,
                           language=args.language,
                           emotion=args.emotion, expressiveness=args.expressiveness, **_framing(args),
                           motions=_timed(args.motion, "motion"), emotions=_timed(args.emotion_at, "emotion"))
    request.validate()
    streaming = args.out == "-"  # fragmented MP4 to stdout, for a player reading a pipe
    if streaming and request.frame.alpha:
        raise InputError("out", "a transparent video is not streamed (MP4 has no alpha); write a .webm")
    if not streaming:
        check_output(args.out, alpha=request.frame.alpha)
    if args.export_blendshapes:
        check_output_path(args.export_blendshapes, suffixes=(".json", ".csv"))
    _check_captions(args, script, driving_audio)
    _check_poster(args, alpha=request.frame.alpha)

    def to_stdout(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    result = EmbeddedPipeline().generate(request, None if streaming else args.out, progress=StageProgress(),
                                         stream_to=to_stdout if streaming else None)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.export_blendshapes:
        target = Path(args.export_blendshapes)
        text = result.track.to_csv() if target.suffix.lower() == ".csv" else result.track.to_json()
        target.write_text(text, encoding="utf-8")
        print(f"blendshapes: {target}", file=sys.stderr)
    if args.captions:
        _write_cues(args.captions, captions.build_cues(result.speech.words, result.speech.text,
                                                       result.speech.duration))
    if args.poster:
        print(f"poster: {write_poster(result.poster, args.poster)}", file=sys.stderr)
    print(f"{result.path or 'stdout'}  ({result.speech.duration:.1f} s, {len(result.track)} frames)",
          file=sys.stderr if streaming else sys.stdout)
    return 0


def _face_at(args: argparse.Namespace) -> dict:
    """--face-at X,Y -> {"face_at": (x, y)} (nothing when not given)."""
    if not getattr(args, "face_at", None):
        return {}
    try:
        x, y = (float(v) for v in args.face_at.split(","))
    except ValueError:
        raise InputError("face-at", f"expected X,Y in photo pixels (e.g. 640,360), got {args.face_at!r}") from None
    return {"face_at": (x, y)}


def _framing(args: argparse.Namespace) -> dict:
    """--aspect/--fit/--background/--keypoints/--face-at -> VideoRequest fields (validated there)."""
    from services.render import parse_keypoints, Background

    out = {"aspect": args.aspect, "fit": args.fit, **_face_at(args)}
    if args.background:
        out["background"] = Background.parse(args.background)
    if args.keypoints:
        out["keypoints"] = tuple(map(tuple, parse_keypoints(args.keypoints).tolist()))
    return out


def _submit_framing(client, args: argparse.Namespace) -> dict:
    """The framing options as LikenessClient.submit arguments (a background image is uploaded)."""
    from services.render import check_output, output_kind, parse_keypoints

    out = {"aspect": args.aspect, "fit": args.fit, "burn_captions": args.burn_captions, **_face_at(args)}
    background = (args.background or "").strip()
    if background.lower() == "transparent" or background.startswith("#"):
        out["background"] = background.lower()
    elif background:
        if not Path(background).is_file():
            raise InputError("background", f"{background!r} is not '#RRGGBB', 'transparent' or an image file")
        out["background_image"] = client.upload_object(background, kind="photo").object
    if getattr(args, "stream", False):
        if args.out != "-" and output_kind(args.out) != "mp4":
            raise InputError("out", "a stream is fragmented MP4: use .mp4, or - for stdout")
        if args.out != "-":
            check_output(args.out)
    else:
        if output_kind(args.out) == "png":
            raise InputError("out", "the platform returns .mp4 or .webm; PNG sequences are generate-only")
        check_output(args.out, alpha=background.lower() == "transparent")
    if args.keypoints:
        out["keypoints"] = [tuple(p) for p in parse_keypoints(args.keypoints).tolist()]
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:20]!r}") from None
    if not 1 <= value <= 16:
        raise argparse.ArgumentTypeError("from 1 to 16")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from services.devtools.platform import LocalPlatform

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("starting PostgreSQL, S3, Triton and the tts/expression/render/gateway services ...", file=sys.stderr)
    kwargs = {"workdir": Path(args.workdir)} if args.workdir else {}
    with LocalPlatform(**kwargs, gateways=args.gateways, durable=True) as stack:
        print(f"gateway    {stack.gateway_address}")
        for name, service in stack.services.items():
            print(f"{name:<11}{service.address}  metrics {service.metrics_url}")
        for replica in stack.replicas:
            print(f"{'gateway':<11}{replica.address}  metrics {replica.metrics_url}  (replica)")
        print(f"postgres   {stack.pg.host}:{stack.pg.port}  (data in {stack.pg.data_dir})")
        print(f"triton     {stack.triton.grpc_url}  metrics {stack.triton.metrics_url}")
        print(f"s3         {stack.s3.endpoint}  (data in {stack.workdir / 's3'})")
        print(f"logs       {stack.workdir / 'logs'}")
        print(f"try: likeness submit --server {stack.gateway_address} --photo PHOTO --script TEXT --out out.mp4",
              flush=True)
        try:
            while not stop.wait(1.0):  # a child that crashed is started again (with backoff), and said so
                stack.revive(log=lambda message: print(f"serve: {message}", file=sys.stderr, flush=True))
        except KeyboardInterrupt:
            pass
    return 0


def cmd_voices(args: argparse.Namespace) -> int:
    from services.tts import DEFAULT_VOICE, VOICES

    for v in VOICES.values():
        default = " (default)" if v.name == DEFAULT_VOICE else ""
        print(f"{v.name:<14} {v.gender:<7} {v.engine:<7} {v.description}{default}")
    return 0


def cmd_new_key(args: argparse.Namespace) -> int:
    """A fresh API key line for LIKENESS_API_KEYS_FILE: `principal:key` (256 random bits)."""
    import secrets

    from services.gateway.auth import PRINCIPAL

    if not PRINCIPAL.match(args.principal):
        raise InputError("principal", "letters, digits, '.', '_', '@', '-' (at most 64), starting with a "
                                      "letter or digit")
    print(f"{args.principal}:{secrets.token_urlsafe(32)}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Whether a file (video, PNG-sequence folder, poster) carries Likeness's AI-generated marks: the
    metadata and the invisible one in the pixels. Exit 0 when either is there, 1 when neither."""
    from services.render import WATERMARK_DETECTED_Z, detect_watermark, read_mark

    path = Path(args.file)
    if not path.exists():
        raise InputError("file", f"no such file or directory: {path}")
    try:
        mark = read_mark(path)
        z = detect_watermark(_frames_of(path))
    except Exception as exc:  # not a video or image we can open
        raise InputError("file", f"cannot read {path}: {exc}") from None
    found = z >= WATERMARK_DETECTED_Z
    print(f"{path}: metadata: {mark or 'none (stripped, or not made by Likeness)'}")
    print(f"{path}: invisible mark: {'found' if found else 'not found'} (z = {z:.1f}; "
          f"{WATERMARK_DETECTED_Z:g} or more: found)")
    return 0 if mark is not None or found else 1


def _frames_of(path: Path):
    """The first frames of a video, PNG-sequence folder or image (RGB), for the watermark check."""
    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
        import numpy as np
        from PIL import Image

        return [np.asarray(Image.open(path).convert("RGB"))]
    from services.render import decode_frames

    return decode_frames(path)


def cmd_submit(args: argparse.Namespace) -> int:
    import grpc

    from likeness_client import JobFailedError
    from services.common.infra.grpc_errors import field_violations

    script, voice_sample, driving_audio, photo = _read_inputs(args)
    _check_captions(args, script, driving_audio)
    _check_poster(args, alpha=(args.background or "").strip().lower() == "transparent")
    timed = dict(motions=_timed(args.motion, "motion"), emotions=_timed(args.emotion_at, "emotion"))
    if args.stream and args.poster:
        raise InputError("poster", "a stream has no poster; leave out --stream for a job with one")
    client = _reachable_client(args)
    if client is None:
        return 1
    with client:
        try:
            asset = client.upload(photo, kind="photo")
            voice_id = client.upload(voice_sample, kind="voice_sample") if voice_sample else None
            audio_id = client.upload(driving_audio, kind="driving_audio") if driving_audio else None
            options = dict(photo=asset, script=script, resolution=args.size, fps=args.fps,
                           seed=args.seed, emotion=args.emotion, expressiveness=args.expressiveness,
                           voice_sample=voice_id, driving_audio=audio_id, voice=args.voice_name or "",
                           speed=args.speed, webhook_url=args.webhook_url, auto_motions=args.auto_motions,
                           language=args.language, **timed, **_submit_framing(client, args))
            if args.stream:
                return _receive_stream(client, options, args)
            job_id = client.submit(**options)
            print(f"job {job_id}", file=sys.stderr)
            job = _wait(client, job_id)
        except grpc.RpcError as exc:
            violations = field_violations(exc)
            if violations:
                raise InputError.many(violations) from None
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        except JobFailedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        client.download(job, args.out)
        if args.poster:
            print(f"poster: {client.download_poster(job, args.poster)}", file=sys.stderr)
    if args.captions:
        _write_captions(args.captions, job.result.captions)
    for warning in job.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.out}  (job {job.job_id}, s3://{job.result.video.bucket}/{job.result.video.key})")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """A failed or cancelled job again, from the stages it finished; downloads the video."""
    import grpc

    from likeness_client import JobFailedError

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".webm") or not out.parent.is_dir():
        raise InputError("out", f"{args.out}: give a .mp4 or .webm path in an existing folder")
    client = _reachable_client(args)
    if client is None:
        return 1
    with client:
        try:
            job_id = client.retry(args.job_id)
            print(f"job {job_id} (retry of {args.job_id})", file=sys.stderr)
            job = _wait(client, job_id)
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        except JobFailedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        client.download(job, out)
    print(f"{out}  (job {job.job_id})")
    return 0


JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def cmd_jobs(args: argparse.Namespace) -> int:
    """The caller's jobs on a gateway (any replica lists all of them), newest first."""
    import grpc

    from likeness_client.proto.likeness.v1 import gateway_pb2 as gw

    wanted = [w.strip().lower() for w in args.state.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in JOB_STATES]
    if unknown:
        raise InputError("state", f"unknown state {unknown[0]!r}: use {', '.join(JOB_STATES)} (comma-separated)")
    if args.limit < 1:
        raise InputError("limit", "must be at least 1")
    states = [gw.JobState.Value(f"JOB_STATE_{w.upper()}") for w in wanted]
    client = _reachable_client(args)
    if client is None:
        return 1
    with client:
        try:
            listed = []
            for job in client.jobs(*states, page_size=min(args.limit, 500)):
                listed.append(job)
                if len(listed) == args.limit:
                    break
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"{'JOB':32}  {'STATE':9}  {'STAGE':9}  {'PROGRESS':>8}  CREATED (UTC)")
    for job in listed:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(job.create_time.seconds))
        state = gw.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
        stage = _stage_name(job.stage) if job.stage else "-"
        print(f"{job.job_id:32}  {state:9}  {stage:9}  {job.progress:8.0%}  {created}")
    return 0


def _reachable_client(args: argparse.Namespace):
    """A LikenessClient for --server (with the key and CA), or None after saying why it cannot be reached."""
    from likeness_client import LikenessClient

    from services.common.infra.grpc_server import max_message_bytes

    client = LikenessClient(args.server, max_message_bytes=max_message_bytes(), **_credentials(args))
    try:
        client.check_reachable()
    except ConnectionError as exc:
        client.close()
        print(f"error: server: {exc} at {args.server} (is it running? TLS: --tls-ca)", file=sys.stderr)
        return None
    return client


def _credentials(args: argparse.Namespace) -> dict:
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


def _write_captions(path: str, captions) -> None:
    """The platform's captions (likeness.v1.Captions) as the file `path` names: .srt or WebVTT."""
    target = Path(path)
    target.write_text(captions.srt if target.suffix.lower() == ".srt" else captions.webvtt, encoding="utf-8")
    print(f"captions: {target}", file=sys.stderr)


def _write_cues(path: str, cues: list) -> None:
    """In-process captions (services.common.domain.captions cues) as the file `path` names: .srt or WebVTT."""
    from services.common.domain import captions

    target = Path(path)
    target.write_text(captions.FORMATS[target.suffix.lower()](cues), encoding="utf-8")
    print(f"captions: {target} ({len(cues)} cues)", file=sys.stderr)


def _write_stream(out: str, write) -> None:
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


def _receive_stream(client, options: dict, args: argparse.Namespace) -> int:
    """`submit --stream`: the video written as it arrives (to stdout for `--out -`, a player can
    read it from a pipe; a file appears only once complete)."""
    end = None

    def receive(sink) -> None:
        nonlocal end
        for message in client.stream(**options):
            kind = message.WhichOneof("response")
            if kind == "header":
                h = message.header
                print(f"streaming {h.frame_size.width}x{h.frame_size.height}, {h.frame_count} frames "
                      f"({h.duration_seconds:.1f} s)", file=sys.stderr)
            elif kind == "media":
                sink.write(message.media)
                sink.flush()
            else:
                end = message.end

    _write_stream(args.out, receive)
    if end is None:
        print("error: the stream ended without its end message", file=sys.stderr)
        return 1
    if args.captions:
        _write_captions(args.captions, end.captions)
    for warning in end.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.out}  (streamed)", file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


LIVE_PIECE_S = 0.02  # audio goes on in pieces of this length, as a microphone delivers it


def _live_audio(args: argparse.Namespace) -> tuple[int, Iterator[np.ndarray]]:
    """(sample rate, mono float pieces as they come): raw 16-bit PCM from stdin (`-`, at --rate), or
    a file, paced at real time with --realtime."""
    import numpy as np

    if args.audio_in == "-":
        rate = args.rate
        if not 8000 <= rate <= 192000:
            raise InputError("rate", f"must be 8000-192000 Hz, got {rate}")

        def from_stdin() -> Iterator[np.ndarray]:
            size = max(2, int(rate * LIVE_PIECE_S) * 2)
            while data := sys.stdin.buffer.read(size):
                yield np.frombuffer(data[:len(data) // 2 * 2], "<i2").astype(np.float32) / 32768.0

        return rate, from_stdin()
    from services.common.domain.audio_io import decode_audio

    path = Path(args.audio_in)
    if not path.is_file():
        raise InputError("audio-in", f"no such file: {path}")
    samples, rate = decode_audio(path.read_bytes(), field="audio-in")

    def from_file() -> Iterator[np.ndarray]:
        step, start = max(1, int(rate * LIVE_PIECE_S)), time.monotonic()
        for i in range(0, len(samples), step):
            if args.realtime:
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
            yield samples[i:i + step]

    return rate, from_file()


def _live_text(args: argparse.Namespace) -> Iterator[str | Interrupt | Listen]:
    """Text as it is written: stdin (`-`) handed on as it arrives (an LLM's output piped in), or a file.
    On stdin an ASCII CAN (0x18) is an interrupt: the avatar stops talking, the text after it is the next
    reply; DC1 (0x11) / DC3 (0x13): the user started / stopped talking (the avatar listens meanwhile)."""
    import codecs
    import os
    import re

    from services.common.live.listening import LISTEN, STOP_LISTENING
    from services.common.live.pacing import INTERRUPT

    controls = {CANCEL: INTERRUPT, LISTEN_ON: LISTEN, LISTEN_OFF: STOP_LISTENING}

    if args.text_in != "-":
        path = Path(args.text_in)
        if not path.is_file():
            raise InputError("text-in", f"no such file: {path}")
        text = path.read_text(encoding="utf-8", errors="replace")
        return iter([text])

    def from_stdin() -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while data := os.read(sys.stdin.fileno(), 4096):  # returns what a pipe holds, without waiting for more
            for part in re.split(f"([{''.join(controls)}])", decoder.decode(data)):
                if part in controls:
                    yield controls[part]
                elif part:
                    yield part
        yield decoder.decode(b"", final=True)

    return from_stdin()


def _live_items(pieces: Iterator, rate: int) -> Iterator:
    """`likeness live --audio-in` pieces as LikenessClient.live() audio items: 16-bit PCM, and the
    time-coded directions of a LivePiece as TimedEmotion / TimedMotion messages."""
    from services.common.infra import wire
    from services.common.live.pacing import LivePiece

    for piece in pieces:
        if isinstance(piece, LivePiece):
            yield from (wire.timed_emotion_to_pb(*e) for e in piece.emotions)
            yield from (wire.timed_motion_to_pb(*m) for m in piece.motions)
            piece = piece.audio
        if len(piece):
            yield wire.audio_to_pb(piece, rate).data


def _interrupted(time_code: float, heard_text: str) -> None:
    print(f"interrupted at {time_code:.2f} s; heard: {heard_text!r}", file=sys.stderr, flush=True)


def cmd_live(args: argparse.Namespace) -> int:
    """Live: audio as it is spoken (or text as it is written) in, the talking video out meanwhile."""
    import numpy as np

    from services.pipeline import LIVE_AUDIO, LIVE_TEXT, EmbeddedPipeline, VideoRequest
    from services.render import check_output, output_kind

    if args.out != "-":
        if output_kind(args.out) != "mp4":
            raise InputError("out", "a live video is fragmented MP4: use .mp4, or - for stdout")
        check_output(args.out)
    from_text = args.text_in is not None
    for name in ("voice", "voice_name", "captions"):
        if getattr(args, name) and not from_text:
            raise InputError(name.replace("_", "-"), "goes with --text-in (audio brings its own voice and no words)")
    if args.speed != 1.0 and not from_text:
        raise InputError("speed", "goes with --text-in (audio is shown at its own pace)")
    motions, emotions = _timed(args.motion, "motion"), _timed(args.emotion_at, "emotion")
    if from_text and (motions or emotions):
        raise InputError("motion" if motions else "emotion-at", "goes with --audio-in; with --text-in write tags "
                                                                "in the text ([nod], [happy])")
    if args.captions:
        from services.common.domain.captions import FORMATS
        from services.pipeline import check_output_path

        check_output_path(args.captions, suffixes=tuple(FORMATS), field="captions")
    voice_sample = _read_audio(args.voice, "voice")
    request = VideoRequest(photo=Path(args.photo), script="", size=args.size, fps=args.fps, seed=args.seed,
                           emotion=args.emotion, expressiveness=args.expressiveness, voice_sample=voice_sample,
                           voice=args.voice_name or "", speed=args.speed, auto_motions=args.auto_motions,
                           language=args.language, **_framing(args))
    if not Path(args.photo).is_file():
        raise InputError("photo", f"no such file: {args.photo}")
    if from_text:
        request.validate(LIVE_TEXT)
        text = _live_text(args)
    else:
        request.validate(LIVE_AUDIO)
        rate, pieces = _live_audio(args)
        if motions or emotions:  # time-coded: they go ahead of the audio, each applied at its time
            from services.common.live.pacing import LivePiece

            directions = LivePiece(np.zeros(0, np.float32), rate, 0.0, emotions=list(emotions), motions=list(motions))
            pieces = itertools.chain([directions], pieces)
    client = _reachable_client(args) if args.server else None
    if args.server and client is None:
        return 1
    summary: dict = {}

    def run(sink) -> None:
        def write(data: bytes) -> None:
            sink.write(data)
            sink.flush()

        if client is None:
            pipeline = EmbeddedPipeline()
            result = (pipeline.live_text(request, text, stream_to=write, on_interrupt=_interrupted) if from_text
                      else pipeline.live(request, pieces, rate, stream_to=write))
            summary.update(frames=result.frames, seconds=result.duration_s, warnings=result.warnings,
                           cues=result.captions)
            return
        import grpc

        from services.common.infra.grpc_errors import field_violations

        try:
            with client:
                asset = client.upload(args.photo, kind="photo")
                options = dict(resolution=args.size, fps=args.fps, seed=args.seed, emotion=args.emotion,
                               expressiveness=args.expressiveness, auto_motions=args.auto_motions,
                               **{k: v for k, v in _submit_framing(client, args).items() if k != "burn_captions"})
                if from_text:
                    voice_id = client.upload(voice_sample, kind="voice_sample") if voice_sample else None
                    call = client.live(text=text, photo=asset, voice=args.voice_name or "", voice_sample=voice_id,
                                       speed=args.speed, language=args.language, **options)
                else:
                    call = client.live(_live_items(pieces, rate), sample_rate=rate, photo=asset, **options)
                for message in call:
                    if message.HasField("media"):
                        write(message.media)
                    elif message.HasField("interrupted"):
                        _interrupted(message.interrupted.time_code, message.interrupted.heard_text)
                    elif message.HasField("end"):
                        summary.update(warnings=list(message.end.warnings), captions=message.end.captions)
        except grpc.RpcError as exc:
            violations = field_violations(exc)
            if violations:
                raise InputError.many(violations) from None
            raise RuntimeError(f"{exc.code().name}: {exc.details()}") from None

    _write_stream(args.out, run)
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if args.captions:
        if "captions" in summary:
            _write_captions(args.captions, summary["captions"])
        else:
            _write_cues(args.captions, summary["cues"])
    facts = f", {summary['frames']} frames ({summary['seconds']:.1f} s)" if "frames" in summary else ""
    print(f"{args.out}  (live{facts})", file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


def _wait(client, job_id: str):
    """The job once it ends, its stages' progress drawn on stderr meanwhile."""
    bar = StageProgress()
    return client.wait(job_id, on_progress=lambda event: bar(_stage_name(event.job.stage), event.stage_fraction))


def _stage_name(stage: int) -> str:
    from likeness_client.proto.likeness.v1 import gateway_pb2

    return gateway_pb2.Stage.Name(stage).removeprefix("STAGE_").lower() if stage else "queued"


def _video_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photo", required=True, help="portrait photo (jpg/png/webp)")
    script = parser.add_mutually_exclusive_group()
    script.add_argument("--script", help="text to speak, with optional tags: [happy] / [sad 0.6] (emotion from "
                                         "the next word on), [nod] / [shake] / [tilt left] / [look right] / "
                                         "[raise brows] / [wink left] (a motion on the next word), [pause 1.5] "
                                         "(with --audio: what the recording says)")
    script.add_argument("--script-file", help="UTF-8 text file to speak")
    parser.add_argument("--voice", help="a 3-60 s sample of a voice (any text; wav/mp3/m4a/ogg/webm): "
                                        "the script is spoken in that voice")
    parser.add_argument("--voice-name", help="a built-in voice for the script (`likeness voices`); "
                                             "default: joe")
    parser.add_argument("--speed", type=float, default=1.0, help="speaking rate of the script, 0.5-2.0 (default 1)")
    parser.add_argument("--language", default="en-us", help="the script's language, an espeak-ng code (default "
                                                            "en-us; e.g. de, ru, cmn, ja for kana)")
    parser.add_argument("--audio", help="your own recording (wav/mp3/m4a/ogg/webm) to lip-sync to instead "
                                        "of synthesized speech; with --script it is aligned to the text")
    parser.add_argument("--out", required=True,
                        help="output: .mp4 (H.264 + AAC), .webm (VP9 + Opus; alpha with --background "
                             "transparent), a directory (PNG sequence + audio.wav), or - : fragmented MP4 to "
                             "stdout while it renders (pipe it into a player)")
    parser.add_argument("--size", type=int, default=512,
                        help="the frame's shorter side in pixels, 128-1080 (default 512)")
    parser.add_argument("--aspect", default="1:1", help="frame aspect ratio: 1:1, 9:16, 16:9 or 4:5 (default 1:1)")
    parser.add_argument("--fit", default="cover",
                        help="cover: the photo fills the frame around the face (default); "
                             "contain: the whole photo, padded")
    parser.add_argument("--background", help="'#RRGGBB', 'transparent' or an image file: replaces the "
                                             "photo's background (person segmented)")
    parser.add_argument("--keypoints", help="for faces no detector finds (pets, cartoons): 5 points "
                                            "'x,y;x,y;x,y;x,y;x,y' in photo pixels, or a JSON file: eye "
                                            "(image left), eye (image right), nose tip, mouth corner "
                                            "(image left), mouth corner (image right)")
    parser.add_argument("--face-at", metavar="X,Y", help="a photo of several people: animate the face at this "
                                                         "point, in photo pixels (default: the largest face)")
    parser.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    parser.add_argument("--seed", type=int, default=0, help="seed for voice variation, blinks and head motion")
    parser.add_argument("--emotion", default="neutral",
                        help="neutral, happy, sad, angry, surprised or auto (each sentence as its words feel)")
    parser.add_argument("--expressiveness", default="medium", help="low, medium or high")
    parser.add_argument("--auto-motions", action="store_true",
                        help="nod on yes, shake on no, tilt on questions, without motion tags")
    parser.add_argument("--motion", action="append", default=[], metavar="SECONDS:NAME[:STRENGTH]",
                        help="a motion at a time code (seconds from the start of the speech), e.g. 2.5:nod or "
                             "'4:look left:0.5'; repeat for more (a recording without a transcript has no words "
                             "for [nod] tags)")
    parser.add_argument("--emotion-at", action="append", default=[], metavar="SECONDS:NAME[:STRENGTH]",
                        help="an emotion from a time code on, e.g. 0:happy or 6.2:sad:0.7; repeatable")
    parser.add_argument("--captions", metavar="PATH",
                        help="also write captions of what is said, timed by the spoken words (.vtt or .srt)")
    parser.add_argument("--burn-captions", action="store_true",
                        help="draw the captions into the video (needs the words: a script or a transcript)")
    parser.add_argument("--poster", metavar="PATH",
                        help="also write a still for thumbnails: the first frame with the eyes open (.jpg or "
                             ".png; a transparent video's is a .png with alpha)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="likeness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="photo + script -> talking video, in-process (no servers)")
    _video_options(gen)
    gen.add_argument("--export-blendshapes", metavar="PATH",
                     help="also write the ARKit-52 blendshape + head pose track (.json or .csv)")
    gen.set_defaults(func=cmd_generate)

    srv = sub.add_parser("serve", help="run the whole platform on loopback: PostgreSQL, S3, Triton, the four "
                                       "services")
    srv.add_argument("--workdir", help="where data and logs go (default: a new temp dir)")
    srv.add_argument("--gateways", type=_positive_int, default=1,
                     help="gateway replicas sharing the job database (default 1)")
    srv.set_defaults(func=cmd_serve)

    new_key = sub.add_parser("new-key", help="print a new API key line 'principal:key' for the gateway's "
                                             "LIKENESS_API_KEYS_FILE (give the key part to the client)")
    new_key.add_argument("principal", help="who the key is for, e.g. a team or service name")
    new_key.set_defaults(func=cmd_new_key)

    inspect = sub.add_parser("inspect", help="show the AI-generated marks every output carries (metadata, "
                                             "invisible mark; exit 1: neither)")
    inspect.add_argument("file", help="a video, PNG-sequence folder or poster")
    inspect.set_defaults(func=cmd_inspect)

    voices = sub.add_parser("voices", help="list the built-in voices (--voice-name)")
    voices.set_defaults(func=cmd_voices)

    sub_ = sub.add_parser("submit", help="send a job to a running gateway and download the video")
    _gateway_options(sub_)
    _video_options(sub_)
    sub_.add_argument("--webhook-url", default="",
                      help="the gateway also POSTs the finished job (JSON) to this http(s) URL")
    sub_.add_argument("--stream", action="store_true",
                      help="live: receive the video while it renders (fragmented MP4, nothing stored); "
                           "--out - writes it to stdout for a player")
    sub_.set_defaults(func=cmd_submit)

    retry = sub.add_parser("retry", help="run a failed or cancelled job again from the stages it finished")
    _gateway_options(retry)
    retry.add_argument("job_id", help="the failed or cancelled job (likeness jobs --state failed,cancelled)")
    retry.add_argument("--out", required=True, help="where the video goes (.mp4, or .webm for the job's WebM)")
    retry.set_defaults(func=cmd_retry)

    live = sub.add_parser("live", help="audio as it is spoken (a file, a microphone on stdin) or text as it is "
                                       "written (an LLM's output on stdin) in, the talking video out while it "
                                       "comes (fragmented MP4)")
    live.add_argument("--photo", required=True, help="portrait photo (jpg/png/webp)")
    source = live.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio-in",
                        help="a recording (wav/mp3/m4a/ogg/webm), or - : raw 16-bit mono PCM on stdin at --rate "
                             "(e.g. arecord -f S16_LE -c 1 -r 16000 -t raw)")
    source.add_argument("--text-in",
                        help="a UTF-8 text file, or - : text on stdin as it is written (pipe an LLM's output in); "
                             "spoken a sentence at a time, tags as in --script ([happy], [pause 1]); on stdin a "
                             "CAN byte (0x18) interrupts: the avatar stops talking, the text after it is the "
                             "next reply; DC1 (0x11) / DC3 (0x13): the user started / stopped talking (the "
                             "avatar listens, nodding now and then)")
    live.add_argument("--voice", help="with --text-in: a 3-60 s sample of the voice to speak in")
    live.add_argument("--voice-name", help="with --text-in: a built-in voice (`likeness voices`); default: joe")
    live.add_argument("--speed", type=float, default=1.0, help="with --text-in: speaking rate, 0.5-2.0 (default 1)")
    live.add_argument("--language", default="en-us", help="with --text-in: the text's language (as for generate)")
    live.add_argument("--captions", help="with --text-in: also write captions of what was said (.srt or .vtt)")
    live.add_argument("--auto-motions", action="store_true",
                      help="with --text-in: nod on yes, shake on no, tilt on questions, without motion tags")
    live.add_argument("--motion", action="append", default=[], metavar="SECONDS:NAME[:STRENGTH]",
                      help="with --audio-in: a motion at a time code of the audio, e.g. 2.5:nod; repeatable "
                           "(with --text-in write [nod] tags)")
    live.add_argument("--emotion-at", action="append", default=[], metavar="SECONDS:NAME[:STRENGTH]",
                      help="with --audio-in: an emotion from a time code on, e.g. 3:happy; repeatable")
    live.add_argument("--rate", type=int, default=16000, help="sample rate of --audio-in - (default 16000)")
    live.add_argument("--realtime", action="store_true",
                      help="send a file's audio at the pace it is spoken (without: as fast as it is read, and "
                           "held LIKENESS_LIVE_SPEECH_LEAD_S ahead of the clock, as a voice agent's would be)")
    live.add_argument("--out", required=True, help="an .mp4 file, or - : stdout (pipe it into a player)")
    for name, kind, default, text in (
            ("--size", int, 512, "the frame's shorter side in pixels, 128-1080 (default 512)"),
            ("--aspect", str, "1:1", "frame aspect ratio: 1:1, 9:16, 16:9 or 4:5 (default 1:1)"),
            ("--fit", str, "cover", "cover (default) or contain"),
            ("--background", str, None, "'#RRGGBB' or an image file: replaces the photo's background"),
            ("--keypoints", str, None, "5 points for faces no detector finds (as for generate)"),
            ("--face-at", str, None, "X,Y: the face to animate in a photo of several people (as for generate)"),
            ("--fps", float, 25.0, "frames per second (default 25)"),
            ("--seed", int, 0, "seed for blinks and head motion"),
            ("--emotion", str, "neutral", "neutral, happy, sad, angry, surprised or auto (each sentence as its "
                                          "words feel; with --text-in)"),
            ("--expressiveness", str, "medium", "low, medium or high")):
        live.add_argument(name, type=kind, default=default, help=text)
    live.add_argument("--server", default="", help="a gateway address (LiveVideo); default: in-process, no servers")
    live.add_argument("--api-key-file", default="", help="with --server: file holding the gateway's API key")
    live.add_argument("--tls-ca", default=config.get_str("LIKENESS_TLS_CA_FILE"),
                      help="with --server: PEM root certificate of a gateway serving TLS")
    live.set_defaults(func=cmd_live, burn_captions=False, stream=True)

    jobs = sub.add_parser("jobs", help="list your jobs on a running gateway, newest first")
    _gateway_options(jobs)
    jobs.add_argument("--state", default="", help=f"only these states, comma-separated ({', '.join(JOB_STATES)})")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many jobs (default 20)")
    jobs.set_defaults(func=cmd_jobs)
    return parser


def _gateway_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=config.get_str("LIKENESS_GATEWAY_ADDR"),
                        help="gateway address (default $LIKENESS_GATEWAY_ADDR or 127.0.0.1:50051)")
    parser.add_argument("--api-key-file", default="",
                        help="file holding the gateway's API key (default: $LIKENESS_API_KEY, if set)")
    parser.add_argument("--tls-ca", default=config.get_str("LIKENESS_TLS_CA_FILE"),
                        help="PEM root certificate of a gateway serving TLS (default $LIKENESS_TLS_CA_FILE)")


def _divert_native_logs() -> str:
    """TFLite/mediapipe write INFO/WARNING lines straight to fd 2. Send fd 2 to a log file and keep
    Python's sys.stderr on the terminal, so the user sees progress and one-line errors only."""
    log = tempfile.NamedTemporaryFile(prefix="likeness-", suffix=".log", delete=False)
    terminal = os.dup(2)
    os.dup2(log.fileno(), 2)
    sys.stderr = os.fdopen(terminal, "w", buffering=1)
    return log.name


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_path = "" if config.get_bool("LIKENESS_VERBOSE") else _divert_native_logs()
    keep_log = False
    try:
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: keep the traceback, say where it is
        if not log_path:
            raise
        with open(log_path, "a", encoding="utf-8") as log:
            traceback.print_exc(file=log)
        keep_log = True
        print(f"error: internal: {type(exc).__name__}: {exc} (traceback in {log_path})", file=sys.stderr)
        return 1
    finally:
        if log_path and not keep_log:
            os.unlink(log_path)


if __name__ == "__main__":
    sys.exit(main())
