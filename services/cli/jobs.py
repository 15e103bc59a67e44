"""`likeness jobs`: the caller's jobs on a gateway, newest first, as a table or (--json) for scripts."""
from __future__ import annotations

import argparse
import json
import sys
import time

from services.cli import helpers, options
from services.common.domain.errors import InputError

# likeness.v1.JobState without its prefix (tests/test_cli.py checks them against the proto; written out
# here so that building the parser loads no generated code)
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def add_parser(sub) -> None:
    parser = sub.add_parser("jobs", help="list your jobs on a running gateway, newest first")
    options.gateway_options(parser)
    parser.add_argument("--state", default="", help=f"only these states, comma-separated ({', '.join(JOB_STATES)})")
    parser.add_argument("--limit", type=int, default=20, help="at most this many jobs (default 20)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON array of jobs (job_id, state, stage, progress, created, updated, "
                             "error, video, video_url) instead of the table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
    client = helpers.reachable_client(args)
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
    if args.json:
        print(json.dumps([job_record(job) for job in listed], indent=2))
        return 0
    print(f"{'JOB':32}  {'STATE':9}  {'STAGE':9}  {'PROGRESS':>8}  CREATED (UTC)")
    for job in listed:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(job.create_time.seconds))
        stage = helpers.stage_name(job.stage) if job.stage else "-"
        print(f"{job.job_id:32}  {state_name(job.state):9}  {stage:9}  {job.progress:8.0%}  {created}")
    return 0


def state_name(state: int) -> str:
    from likeness_client.proto.likeness.v1 import gateway_pb2 as gw

    return gw.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def job_record(job) -> dict:
    """A likeness.v1.Job as `likeness jobs --json` prints it: every key always there, null where it does
    not apply (stage before the first one; error unless failed; video unless succeeded); times in UTC,
    RFC 3339."""
    def when(stamp) -> str | None:
        return stamp.ToJsonString() if stamp.seconds or stamp.nanos else None

    succeeded = job.HasField("result") and job.result.HasField("video")
    return {
        "job_id": job.job_id,
        "state": state_name(job.state),
        "stage": helpers.stage_name(job.stage) if job.stage else None,
        "progress": round(job.progress, 4),
        "created": when(job.create_time),
        "updated": when(job.update_time),
        "error": job.error.message if job.HasField("error") and (job.error.code or job.error.message) else None,
        "video": f"s3://{job.result.video.bucket}/{job.result.video.key}" if succeeded else None,
        "video_url": (job.result.presigned_url or None) if succeeded else None,
    }
