"""`likeness voices`: the built-in voices (--voice-name)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    parser = sub.add_parser("voices", help="list the built-in voices (--voice-name)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from services.tts import DEFAULT_VOICE, VOICES

    for v in VOICES.values():
        default = " (default)" if v.name == DEFAULT_VOICE else ""
        print(f"{v.name:<14} {v.gender:<7} {v.engine:<7} {v.description}{default}")
    return 0
