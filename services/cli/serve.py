"""`likeness serve`: the whole platform on loopback (PostgreSQL, S3, Triton, the four services)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("serve", help="run the whole platform on loopback: PostgreSQL, S3, Triton, the four "
                                          "services")
    parser.add_argument("--workdir", help="where data and logs go (default: a new temp dir)")
    parser.add_argument("--gateways", type=positive_int, default=1,
                        help="gateway replicas sharing the job database (default 1)")
    parser.set_defaults(func=run)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:20]!r}") from None
    if not 1 <= value <= 16:
        raise argparse.ArgumentTypeError("from 1 to 16")
    return value


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from services.devtools.platform import LocalPlatform

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("starting PostgreSQL, S3, Triton and the tts/expression/render/gateway services ...", file=sys.stderr)
    kwargs = {"workdir": Path(args.workdir)} if args.workdir else {}
    with LocalPlatform(**kwargs, gateways=args.gateways, durable=True) as stack:
        print(f"gateway    {stack.gateway_address}")
        print(f"webrtc     {stack.webrtc_url}  (open it in a browser: the live avatar over WebRTC)")
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
