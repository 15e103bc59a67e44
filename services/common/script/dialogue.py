"""A dialogue script: who says what, a turn per `NAME: text` line.

    A: [happy] Did you see the launch? [nod]
    B: I did. [pause 0.5] It was loud.
    A: Louder than I expected.

Each turn's text is an ordinary script (tags, pauses, SSML-free text): the speech rules check it as
one (services.pipeline.speech_rules). A line without a `NAME:` goes on the turn before it; blank lines
and lines starting with `#` are skipped. Names are a letter then letters, digits, `_` or `-` (up to 32).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from services.common.domain.errors import InputError

MAX_NAME_CHARS = 32
_TURN = re.compile(r"^\s*([A-Za-z][\w-]{0,%d})\s*:\s*(.*)$" % (MAX_NAME_CHARS - 1))
NAME = re.compile(r"^[A-Za-z][\w-]{0,%d}$" % (MAX_NAME_CHARS - 1))  # a cast entry's name: the same rule


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str
    line: int  # 1-based line of the script where the turn starts (for messages)


def parse_dialogue(script: str, field: str = "dialogue") -> list[Turn]:
    """The turns of `script` in order; InputError(field, ...) when a text comes before any speaker,
    a turn says nothing, or there are no turns."""
    turns: list[list] = []  # [speaker, text, line]
    for number, raw in enumerate(script.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if match := _TURN.match(line):
            turns.append([match.group(1), match.group(2).strip(), number])
        elif not turns:
            raise InputError(field, f"line {number}: expected 'NAME: text' (e.g. 'A: Hello'), got {line[:40]!r}")
        else:  # (a long turn wrapped over several lines)
            turns[-1][1] = f"{turns[-1][1]} {line}".strip()
    if not turns:
        raise InputError(field, "has no turns: write one 'NAME: text' line per turn")
    for speaker, text, number in turns:
        if not text:
            raise InputError(field, f"line {number}: {speaker}'s turn says nothing")
    return [Turn(speaker, text, number) for speaker, text, number in turns]
