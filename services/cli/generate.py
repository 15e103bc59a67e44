"""`likeness generate`: photo + script -> talking video, every stage in-process (no servers); or a dialogue
(--dialogue, --cast): several faces talking in turns, each in its panel."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.cli import helpers, options
from services.common.domain.errors import InputError


def add_parser(sub) -> None:
    parser = sub.add_parser("generate", help="photo + script -> talking video, in-process (no servers)")
    options.video_options(parser, dialogue=True)
    options.dialogue_options(parser)
    parser.add_argument("--export-blendshapes", metavar="PATH",
                        help="also write the ARKit-52 blendshape + head pose track (.json or .csv; a dialogue: "
                             "one per speaker, PATH's name + .NAME)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from services.common.domain import captions
    from services.pipeline import EmbeddedPipeline, VideoRequest, check_output_path
    from services.render import check_output, write_poster

    if args.dialogue is not None:
        return run_dialogue(args)
    for name in ("cast", "gap"):
        if getattr(args, name) not in ([], None):
            raise InputError(name, "goes with --dialogue")
    if args.layout != "side-by-side":
        raise InputError("layout", "goes with --dialogue (a single face: --aspect)")
    if args.photo is None:
        raise InputError("photo", "is required (or --dialogue with --cast)")
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


# A single face's options a dialogue has no use for (its faces and voices are in --cast, its frame is the layout's).
SINGLE_FACE = ("photo", "script", "script_file", "audio", "voice", "voice_name", "keypoints", "face_at",
               "background", "motion", "emotion_at", "auto_motions", "burn_captions", "poster")


def run_dialogue(args: argparse.Namespace) -> int:
    from services.common.domain import captions
    from services.pipeline import check_output_path
    from services.pipeline.dialogue import DialoguePipeline
    from services.pipeline.request import DEFAULT_GAP_S, DialogueRequest
    from services.render import check_output

    for name in SINGLE_FACE:
        if getattr(args, name):
            raise InputError(name.replace("_", "-"), "goes with a single face; a dialogue's faces and voices are "
                                                     "in --cast")
    for name, default in (("aspect", "1:1"), ("fit", "cover")):
        if getattr(args, name) != default:
            raise InputError(name, "a dialogue's frame is its --layout's (side-by-side: 16:9, stacked: 9:16)")
    if not args.cast:
        raise InputError("cast", "a dialogue needs --cast NAME=PHOTO[:voice=VOICE] for each speaker")
    try:
        script = Path(args.dialogue).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError("dialogue", f"cannot read {args.dialogue}: {exc}") from None
    request = DialogueRequest(script=script, cast=helpers.read_cast(args.cast), layout=args.layout,
                              gap_s=DEFAULT_GAP_S if args.gap is None else args.gap, size=args.size, fps=args.fps,
                              seed=args.seed, emotion=args.emotion, expressiveness=args.expressiveness,
                              language=args.language, speed=args.speed)
    request.validate()
    if args.out == "-":
        raise InputError("out", "a dialogue is written to a file (.mp4, .webm or a folder), not streamed")
    check_output(args.out)
    if args.export_blendshapes:
        check_output_path(args.export_blendshapes, suffixes=(".json", ".csv"), field="export-blendshapes")
    if args.captions:
        check_output_path(args.captions, suffixes=tuple(captions.FORMATS), field="captions")
    for warning in request.warnings:  # (said before the work, as the photos' are)
        print(f"warning: {warning}", file=sys.stderr)

    result = DialoguePipeline().generate(request, args.out, progress=helpers.StageProgress())
    for warning in result.warnings[len(request.warnings):]:
        print(f"warning: {warning}", file=sys.stderr)
    if args.export_blendshapes:
        target = Path(args.export_blendshapes)
        for name, track in result.tracks.items():
            path = target.with_name(f"{target.stem}.{name}{target.suffix}")
            path.write_text(track.to_csv() if target.suffix.lower() == ".csv" else track.to_json(), encoding="utf-8")
            print(f"blendshapes: {path}", file=sys.stderr)
    if args.captions:
        helpers.write_cues(args.captions, result.cues)
    print(f"{result.path}  ({result.duration:.1f} s, {len(result.turns)} turns, "
          f"{len(next(iter(result.tracks.values())))} frames)")
    return 0
