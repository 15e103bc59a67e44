"""Captions from a speech timeline: WebVTT and SubRip (SRT) cues timed by the spoken words.

The words of a timeline (TTS or forced alignment) are bare ("Hello", "p.m"); the cue text is cut
from the script itself, so punctuation, quotes and casing are the user's. Cues follow common
subtitling practice (e.g. the BBC and Netflix guidelines): at most two lines of `MAX_LINE_CHARS`,
at most `MAX_CUE_SECONDS` on screen, a new cue after each sentence and at long pauses, and a short
hold after the last word that never overlaps the next cue.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.domain.speech import Word, word_offsets

MAX_LINE_CHARS = 42
MAX_LINES = 2
MAX_CUE_SECONDS = 7.0
PAUSE_BREAK_S = 0.6  # a silence this long before a word starts a new cue
HOLD_S = 0.5  # a cue stays up this long after its last word (if the next cue allows)
MIN_CUE_SECONDS = 0.8  # ... and at least this long in all
_SENTENCE_END = re.compile(r"[.!?…。！？]['\"”’)\]]*$")
_ALWAYS_ENDS = re.compile(r"[。！？]['\"”’)\]]*$")  # CJK full stops: no capitals follow them
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "no", "mt", "ft", "inc", "ltd"}
_OPENING = re.compile(r"\s+([\"“‘'(\[¿¡«]+)$")  # punctuation that belongs to the next word


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str  # lines joined by "\n"


def _tokens(words: Sequence[Word], text: str) -> list[tuple[int, int]]:
    """(start, end) character span in `text` of each word with the punctuation around it; words
    are found in order, case-insensitively. Empty when the words do not come from `text`."""
    starts = word_offsets(words, text)
    if not starts:
        return []
    # Each token runs from its word to the next one; an opening quote or bracket before the next
    # word belongs to it, and text before the first word to the first.
    bounds = [len(text) - len(text.lstrip())]
    for k in range(1, len(starts)):
        opening = _OPENING.search(text[starts[k - 1]:starts[k]])
        bounds.append(starts[k - 1] + opening.start(1) if opening else starts[k])
    bounds.append(len(text))
    return [(bounds[k], bounds[k] + len(text[bounds[k]:bounds[k + 1]].rstrip())) for k in range(len(starts))]


def _split_lines(text: str) -> str:
    """One line if it fits, else two, broken at the space nearest the middle (after a comma if
    one is near)."""
    if len(text) <= MAX_LINE_CHARS:
        return text
    spaces = [i for i, c in enumerate(text) if c == " "]
    if not spaces:
        return text  # e.g. Japanese: no spaces to break at

    def badness(i: int) -> float:
        return abs(i - len(text) / 2) - (6 if text[i - 1] in ",;:" else 0)

    i = min(spaces, key=badness)
    return f"{text[:i]}\n{text[i + 1:]}"


def _ends_sentence(token: str, following: str) -> bool:
    """Whether a sentence ends with `token`: a full stop, question or exclamation mark, followed by a
    capital ("p.m. today" and "Dr. Smith" go on), and not a title or a dotted abbreviation."""
    if _ALWAYS_ENDS.search(token):
        return True
    if not _SENTENCE_END.search(token):
        return False
    bare = token.strip("\"“”‘’'()[]¿¡«»").rstrip(".!?…").lower()
    if token.rstrip("\"”’)]'").endswith(".") and (bare in _ABBREVIATIONS or "." in bare):
        return False
    letters = [c for c in following if c.isalpha()]
    return not letters or letters[0].isupper()


def build_cues(words: Sequence[Word], text: str, duration: float | None = None) -> list[Cue]:
    """Caption cues for `words` (in order, with times) spoken from `text`, none ending after
    `duration` (the audio's). A word that cannot be found in `text` (a timeline from another
    text) makes the cues use the bare words."""
    words = [w for w in words if w.text.strip()]
    if not words:
        return []
    spans = _tokens(words, text)
    if not spans:  # not cut from the text: the words themselves
        text = " ".join(w.text for w in words)
        spans, pos = [], 0
        for w in words:
            spans.append((pos, pos + len(w.text)))
            pos += len(w.text) + 1
    groups: list[list[int]] = [[0]]
    for k in range(1, len(words)):
        group = groups[-1]
        candidate = " ".join(text[spans[group[0]][0]:spans[k][1]].split())
        previous, current = text[spans[k - 1][0]:spans[k - 1][1]], text[spans[k][0]:spans[k][1]]
        if (_ends_sentence(previous, current) or words[k].start - words[k - 1].end >= PAUSE_BREAK_S
                or len(candidate) > MAX_LINE_CHARS * MAX_LINES
                or words[k].end - words[group[0]].start > MAX_CUE_SECONDS):
            groups.append([k])
        else:
            group.append(k)
    cues = []
    for n, group in enumerate(groups):
        first, last = group[0], group[-1]
        start, end = words[first].start, words[last].end
        limit = words[groups[n + 1][0]].start if n + 1 < len(groups) else (duration or float("inf"))
        end = min(max(end + HOLD_S, start + MIN_CUE_SECONDS), limit)
        body = " ".join(text[spans[first][0]:spans[last][1]].split())
        cues.append(Cue(start=round(max(start, 0.0), 3), end=round(max(end, start), 3), text=_split_lines(body)))
    return cues


def _timestamp(seconds: float, separator: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def to_webvtt(cues: Sequence[Cue]) -> str:
    blocks = [f"{i}\n{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n{c.text}"
              for i, c in enumerate(cues, 1)]
    return "WEBVTT\n\n" + "".join(b + "\n\n" for b in blocks)


def to_srt(cues: Sequence[Cue]) -> str:
    return "".join(f"{i}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n{c.text}\n\n"
                   for i, c in enumerate(cues, 1))


FORMATS = {".vtt": to_webvtt, ".srt": to_srt}
