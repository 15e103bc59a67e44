"""`likeness generate`: photo + script -> talking video, every stage in-process (no servers)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.cli import helpers, options
from services.common.domain.errors import InputError


def add_parser(sub) -> None:
    parser = sub.add_parser("generate", help="photo + script -> talking video, in-process (no servers)")
    options.video_options(parser)
    parser.add_argument("--export-blendshapes", metavar="PATH",
                        help="also write the ARKit-52 blendshape + head pose track (.json or .csv)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from services.common.domain import captions
    from services.pipeline import EmbeddedPipeline, VideoRequest, check_output_path
    from services.render import check_output, write_poster

    script, voice_sample, driving_audio, photo = helpers.read_inputs(args)
    request = VideoRequest(photo=photo.read_bytes(), script=script, size=args.size, fps=args.fps, seed=args.seed,
                           voice_sample=voice_sample, driving_audio=driving_audio, voice=args.voice_name or "",
                           speed=args.speed, burn_captions=args.burn_captions, auto_motions=args.auto_motions,
                           language=args.language,
                           emotion=args.emotion, expressiveness=args.expressiveness, **helpers.framing(args),
                           motions=helpers.timed(args.motion, "motion"),
                           emotions=helpers.timed(args.emotion_at, "emotion"))
    request.validate()
    streaming = args.out == "-"  # fragmented MP4 to stdout, for a player reading a pipe
    if streaming and request.frame.alpha:
        raise InputError("out", "a transparent video is not streamed (MP4 has no alpha); write a .webm")
    if not streaming:
        check_output(args.out, alpha=request.frame.alpha)
    if args.export_blendshapes:
        check_output_path(args.export_blendshapes, suffixes=(".json", ".csv"), field="export-blendshapes")
    helpers.check_captions(args, script, driving_audio)
    helpers.check_poster(args, alpha=request.frame.alpha)

    def to_stdout(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    result = EmbeddedPipeline().generate(request, None if streaming else args.out, progress=helpers.StageProgress(),
                                         stream_to=to_stdout if streaming else None)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.export_blendshapes:
        target = Path(args.export_blendshapes)
        text = result.track.to_csv() if target.suffix.lower() == ".csv" else result.track.to_json()
        target.write_text(text, encoding="utf-8")
        print(f"blendshapes: {target}", file=sys.stderr)
    if args.captions:
        helpers.write_cues(args.captions, captions.build_cues(result.speech.words, result.speech.text,
                                                              result.speech.duration))
    if args.poster:
        print(f"poster: {write_poster(result.poster, args.poster)}", file=sys.stderr)
    print(f"{result.path or 'stdout'}  ({result.speech.duration:.1f} s, {len(result.track)} frames)",
          file=sys.stderr if streaming else sys.stdout)
    return 0
