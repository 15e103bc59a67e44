"""`likeness live`: audio as it is spoken (a file, a microphone on stdin) or text as it is written (an
LLM's output on stdin) in, the talking video out meanwhile (fragmented MP4)."""
from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from services.cli import helpers, options
from services.common.domain.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from likeness_client.markers import Interrupt, Listen

CANCEL = "\x18"  # ASCII CAN in `likeness live --text-in -`: an interrupt (the user spoke over the avatar)
LISTEN_ON, LISTEN_OFF = "\x11", "\x13"  # ASCII DC1 / DC3 there: the user started / stopped talking
LIVE_PIECE_S = 0.02  # audio goes on in pieces of this length, as a microphone delivers it


def add_parser(sub) -> None:
    parser = sub.add_parser("live", help="audio as it is spoken (a file, a microphone on stdin) or text as it is "
                                         "written (an LLM's output on stdin) in, the talking video out while it "
                                         "comes (fragmented MP4)")
    group = parser.add_argument_group("photo and what is said")
    options.photo_option(group)
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio-in",
                        help="a recording (wav/mp3/m4a/ogg/webm), or - : raw 16-bit mono PCM on stdin at --rate "
                             "(e.g. arecord -f S16_LE -c 1 -r 16000 -t raw)")
    source.add_argument("--text-in",
                        help="a UTF-8 text file, or - : text on stdin as it is written (pipe an LLM's output in); "
                             "spoken a sentence at a time, tags as in --script ([happy], [pause 1]); on stdin a "
                             "CAN byte (0x18) interrupts: the avatar stops talking, the text after it is the "
                             "next reply; DC1 (0x11) / DC3 (0x13): the user started / stopped talking (the "
                             "avatar listens, nodding now and then)")
    group.add_argument("--rate", type=int, default=16000, help="sample rate of --audio-in - (default 16000)")
    group.add_argument("--realtime", action="store_true",
                       help="send a file's audio at the pace it is spoken (without: as fast as it is read, and "
                            "held LIKENESS_LIVE_SPEECH_LEAD_S ahead of the clock, as a voice agent's would be)")
    options.speech_options(parser, live=True)
    parser.add_argument("--out", required=True, help="an .mp4 file, or - : stdout (pipe it into a player)")
    options.framing_options(parser, live=True)
    options.direction_options(parser, live=True)
    options.caption_options(parser, live=True)
    options.gateway_options(parser, optional=True)
    parser.add_argument("--keepalive", type=float, default=10.0, metavar="SECONDS",
                        help="with --server and --text-in: after this long with no text, send an empty one "
                             "(the gateway closes a live stream silent for LIKENESS_STREAM_IDLE_S, 30 s by "
                             "default, and an LLM may think longer); 0: never (default 10)")
    parser.set_defaults(func=run, burn_captions=False, stream=True)


def run(args: argparse.Namespace) -> int:
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
    if not 0.0 <= args.keepalive <= 3600.0:  # (NaN too)
        raise InputError("keepalive", f"must be 0-3600 seconds, got {args.keepalive:g}")
    motions, emotions = helpers.timed(args.motion, "motion"), helpers.timed(args.emotion_at, "emotion")
    if from_text and (motions or emotions):
        raise InputError("motion" if motions else "emotion-at", "goes with --audio-in; with --text-in write tags "
                                                                "in the text ([nod], [happy])")
    if args.captions:
        from services.common.domain.captions import FORMATS
        from services.pipeline import check_output_path

        check_output_path(args.captions, suffixes=tuple(FORMATS), field="captions")
    voice_sample = helpers.read_audio(args.voice, "voice")
    request = VideoRequest(photo=Path(args.photo), script="", size=args.size, fps=args.fps, seed=args.seed,
                           emotion=args.emotion, expressiveness=args.expressiveness, voice_sample=voice_sample,
                           voice=args.voice_name or "", speed=args.speed, auto_motions=args.auto_motions,
                           language=args.language, **helpers.framing(args))
    if not Path(args.photo).is_file():
        raise InputError("photo", f"no such file: {args.photo}")
    if from_text:
        request.validate(LIVE_TEXT)
        text = live_text(args)
    else:
        request.validate(LIVE_AUDIO)
        rate, pieces = live_audio(args)
        if motions or emotions:  # time-coded: they go ahead of the audio, each applied at its time
            from services.common.live.pacing import LivePiece

            directions = LivePiece(np.zeros(0, np.float32), rate, 0.0, emotions=list(emotions), motions=list(motions))
            pieces = itertools.chain([directions], pieces)
    client = helpers.reachable_client(args) if args.server else None
    if args.server and client is None:
        return 1
    summary: dict = {}

    def run_to(sink) -> None:
        def write(data: bytes) -> None:
            sink.write(data)
            sink.flush()

        if client is None:
            pipeline = EmbeddedPipeline()
            result = (pipeline.live_text(request, text, stream_to=write, on_interrupt=interrupted) if from_text
                      else pipeline.live(request, pieces, rate, stream_to=write))
            summary.update(frames=result.frames, seconds=result.duration_s, warnings=result.warnings,
                           cues=result.captions)
            return
        import grpc

        from services.common.infra.grpc_errors import field_violations

        try:
            with client:
                asset = client.upload(args.photo, kind="photo")
                common = dict(resolution=args.size, fps=args.fps, seed=args.seed, emotion=args.emotion,
                              expressiveness=args.expressiveness, auto_motions=args.auto_motions,
                              **{k: v for k, v in helpers.submit_framing(client, args).items()
                                 if k != "burn_captions"})
                if from_text:
                    voice_id = client.upload(voice_sample, kind="voice_sample") if voice_sample else None
                    call = client.live_session(photo=asset, voice=args.voice_name or "", voice_sample=voice_id,
                                               speed=args.speed, language=args.language,
                                               keepalive_s=args.keepalive, **common)
                    threading.Thread(target=feed, args=(call, text), name="live-text-in", daemon=True).start()
                else:
                    call = client.live(live_items(pieces, rate), sample_rate=rate, photo=asset, **common)
                for message in call:
                    if message.HasField("media"):
                        write(message.media)
                    elif message.HasField("interrupted"):
                        interrupted(message.interrupted.time_code, message.interrupted.heard_text)
                    elif message.HasField("end"):
                        summary.update(warnings=list(message.end.warnings), captions=message.end.captions)
        except grpc.RpcError as exc:
            violations = field_violations(exc)
            if violations:
                raise InputError.many(violations) from None
            raise RuntimeError(f"{exc.code().name}: {exc.details()}") from None

    helpers.write_stream(args.out, run_to)
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if args.captions:
        if "captions" in summary:
            helpers.write_captions(args.captions, summary["captions"])
        else:
            helpers.write_cues(args.captions, summary["cues"])
    facts = f", {summary['frames']} frames ({summary['seconds']:.1f} s)" if "frames" in summary else ""
    print(f"{args.out}  (live{facts})", file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


def live_audio(args: argparse.Namespace) -> tuple[int, Iterator[np.ndarray]]:
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


def live_text(args: argparse.Namespace) -> Iterator[str | Interrupt | Listen]:
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


def feed(session, text: Iterator[str | Interrupt | Listen]) -> None:
    """`likeness live --text-in` items into a LiveSession, which keeps the stream alive while none come."""
    from likeness_client.markers import Interrupt, Listen  # (the client package loads protobuf: not for --help)

    try:
        for item in text:
            if isinstance(item, Interrupt):
                session.interrupt()
            elif isinstance(item, Listen):
                session.listen(item.on)
            else:
                session.say(item)
    finally:
        session.end()


def live_items(pieces: Iterator, rate: int) -> Iterator:
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


def interrupted(time_code: float, heard_text: str) -> None:
    print(f"interrupted at {time_code:.2f} s; heard: {heard_text!r}", file=sys.stderr, flush=True)
