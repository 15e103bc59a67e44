"""`likeness retry`: a failed or cancelled job again, from the stages it finished."""
from __future__ import annotations

import argparse
import sys

from services.cli import helpers, options


def add_parser(sub) -> None:
    parser = sub.add_parser("retry", help="run a failed or cancelled job again from the stages it finished")
    options.gateway_options(parser)
    parser.add_argument("job_id", help="the failed or cancelled job (likeness jobs --state failed,cancelled)")
    parser.add_argument("--out", required=True, help="where the video goes (.mp4, or .webm for the job's WebM)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """A failed or cancelled job again, from the stages it finished; downloads the video."""
    import grpc

    from likeness_client import JobFailedError

    from services.pipeline import check_output_path

    out = check_output_path(args.out, suffixes=(".mp4", ".webm"))
    client = helpers.reachable_client(args)
    if client is None:
        return 1
    with client:
        try:
            job_id = client.retry(args.job_id)
            print(f"job {job_id} (retry of {args.job_id})", file=sys.stderr)
            job = helpers.wait(client, job_id)
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        except JobFailedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        client.download(job, out)
    print(f"{out}  (job {job.job_id})")
    return 0
