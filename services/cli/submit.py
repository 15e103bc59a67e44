"""`likeness submit`: a job on a running gateway, the video downloaded (or, with --stream, received
while it renders)."""
from __future__ import annotations

import argparse
import sys

from services.cli import helpers, options
from services.common.domain.errors import InputError


def add_parser(sub) -> None:
    parser = sub.add_parser("submit", help="send a job to a running gateway and download the video")
    options.gateway_options(parser)
    options.video_options(parser)
    parser.add_argument("--webhook-url", default="",
                        help="the gateway also POSTs the finished job (JSON) to this http(s) URL")
    parser.add_argument("--stream", action="store_true",
                        help="live: receive the video while it renders (fragmented MP4, nothing stored); "
                             "--out - writes it to stdout for a player")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import grpc

    from likeness_client import JobFailedError
    from services.common.infra.grpc_errors import field_violations

    script, voice_sample, driving_audio, photo = helpers.read_inputs(args)
    helpers.check_submit_out(args)
    helpers.check_captions(args, script, driving_audio)
    helpers.check_poster(args, alpha=(args.background or "").strip().lower() == "transparent")
    timed = dict(motions=helpers.timed(args.motion, "motion"), emotions=helpers.timed(args.emotion_at, "emotion"))
    if args.stream and args.poster:
        raise InputError("poster", "a stream has no poster; leave out --stream for a job with one")
    client = helpers.reachable_client(args)
    if client is None:
        return 1
    with client:
        try:
            asset = client.upload(photo, kind="photo")
            voice_id = client.upload(voice_sample, kind="voice_sample") if voice_sample else None
            audio_id = client.upload(driving_audio, kind="driving_audio") if driving_audio else None
            request = dict(photo=asset, script=script, resolution=args.size, fps=args.fps,
                           seed=args.seed, emotion=args.emotion, expressiveness=args.expressiveness,
                           voice_sample=voice_id, driving_audio=audio_id, voice=args.voice_name or "",
                           speed=args.speed, webhook_url=args.webhook_url, auto_motions=args.auto_motions,
                           language=args.language, **timed, **helpers.submit_framing(client, args))
            if args.stream:
                return receive_stream(client, request, args)
            job_id = client.submit(**request)
            print(f"job {job_id}", file=sys.stderr)
            job = helpers.wait(client, job_id)
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
        helpers.write_captions(args.captions, job.result.captions)
    for warning in job.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.out}  (job {job.job_id}, s3://{job.result.video.bucket}/{job.result.video.key})")
    return 0


def receive_stream(client, request: dict, args: argparse.Namespace) -> int:
    """`submit --stream`: the video written as it arrives (to stdout for `--out -`, a player can
    read it from a pipe; a file appears only once complete)."""
    end = None

    def receive(sink) -> None:
        nonlocal end
        for message in client.stream(**request):
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

    helpers.write_stream(args.out, receive)
    if end is None:
        print("error: the stream ended without its end message", file=sys.stderr)
        return 1
    if args.captions:
        helpers.write_captions(args.captions, end.captions)
    for warning in end.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.out}  (streamed)", file=sys.stderr if args.out == "-" else sys.stdout)
    return 0
