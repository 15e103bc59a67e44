"""`likeness new-key`: a fresh API key line for a gateway's LIKENESS_API_KEYS_FILE."""
from __future__ import annotations

import argparse

from services.common.domain.errors import InputError


def add_parser(sub) -> None:
    parser = sub.add_parser("new-key", help="print a new API key line 'principal:key' for the gateway's "
                                            "LIKENESS_API_KEYS_FILE (give the key part to the client)")
    parser.add_argument("principal", help="who the key is for, e.g. a team or service name")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """A fresh API key line for LIKENESS_API_KEYS_FILE: `principal:key` (256 random bits)."""
    import secrets

    from services.gateway.auth import PRINCIPAL

    if not PRINCIPAL.match(args.principal):
        raise InputError("principal", "letters, digits, '.', '_', '@', '-' (at most 64), starting with a "
                                      "letter or digit")
    print(f"{args.principal}:{secrets.token_urlsafe(32)}")
    return 0
