"""`likeness` command line: the embedded default (`generate`, no servers), the local platform
(`serve`) and its client (`submit`).

Bad input never ends in a traceback: a one-line `error: FIELD: message` on stderr and exit code 2.

One module per command (`add_parser(sub)`, `run(args)`); `options`: the option groups they share and the
allowed values of enum-valued options; `helpers`: reading inputs, reaching a gateway, writing outputs.
Start-up time: building the parser imports no stage, numpy or grpc (`likeness --help` answers at once):
each command imports what it needs inside `run`, and option choices load on first use (options.Choices).
"""
from __future__ import annotations

import os
import sys
import tempfile
import traceback
from typing import Sequence

from services.cli import generate, inspect, jobs, live, new_key, retry, serve, submit, voices
from services.cli.options import EXIT_BAD_INPUT, Parser, VersionAction
from services.common import config
from services.common.domain.errors import InputError

__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]

COMMANDS = (generate, serve, new_key, inspect, voices, submit, retry, live, jobs)  # in `likeness --help`'s order


def build_parser() -> Parser:
    parser = Parser(prog="likeness", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


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
