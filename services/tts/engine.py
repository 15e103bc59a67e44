"""Script -> Speech: neural audio plus a phone/word timeline taken from the voice's own durations.

The voice predicts how many 256-sample frames each phoneme id lasts, so the timeline is exact by
construction (it sums to the audio length). Turning ids into phones:
  * a pad id ('_') is the transition into the NEXT phoneme and belongs to it (the onsets agree
    better with the forced aligner: docs/notes/tts.md#a-pad-belongs-to-the-next-phoneme); '^' and
    ('_' +) '$' are silence;
  * IPA characters are grouped into phones (services.tts.phones): diphthongs, affricates, length
    marks, r-colouring, combining marks;
  * stress marks are not phones: their stress goes to the following syllable, their frames to the
    phone after them;
  * spaces (word boundaries) are not phones: their frames go to the next word's first phone, or to
    the pause they touch;
  * punctuation is a pause: Phone("sil", word_index=-1).
Sentences are synthesized one at a time and joined with a short silence, as Piper does.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from services.common import config
from services.common.domain.errors import InputError
from services.common.domain.speech import Phone, Speech, Word, max_script_chars
from services.tts.phonemize import DEFAULT_LANGUAGE, Clause, phonemize
from services.tts.phones import SILENCE, STRESS_MARKS, group_phones, syllable_stress
from services.tts.voice import HOP_LENGTH, PiperVoice
from services.tts.wavio import read_wav, write_wav

__all__ = ["TextToSpeech", "read_wav", "write_wav", "max_script_chars"]

PEAK = 10 ** (-1 / 20)  # peak-normalise to -1 dBFS
SPEED_RANGE = (0.5, 2.0)


def _sentence_silence() -> float:
    return config.get_float("LIKENESS_TTS_SENTENCE_SILENCE")


def _max_chunk_phonemes() -> int:
    return config.get_int("LIKENESS_TTS_MAX_PHONEMES")


@dataclass(frozen=True)
class _Token:
    ch: str
    kind: str  # "phone", "stress", "space" or "punct"
    word: int  # index among the script's words, -1 for none


@dataclass
class _Segment:
    symbol: str
    frames: int
    stress: int = 0
    word: int = -1


class TextToSpeech:
    """Loads the voice once; `synthesize` is thread-safe and deterministic for a given seed."""

    def __init__(self, voice: PiperVoice | None = None) -> None:
        self.voice = voice or PiperVoice()

    @property
    def sample_rate(self) -> int:
        return self.voice.sample_rate

    def synthesize(self, text: str, *, seed: int = 0, speed: float = 1.0,
                   language: str = DEFAULT_LANGUAGE) -> Speech:
        _validate(text, seed, speed)
        clauses = phonemize(text, language)
        chunks = [c for c in _chunks(clauses, self.voice) if any(t.kind == "phone" for t in c[0])]
        if not chunks:
            raise InputError("script", "nothing pronounceable in the script (no letters or digits "
                                       "that espeak-ng can speak)")
        words = [w for c in clauses for w in c.words]
        gap = np.zeros(int(round(_sentence_silence() * self.sample_rate)), np.float32)
        pieces: list[np.ndarray] = []
        offset = 0  # samples so far
        times: list[tuple[_Segment, int, int]] = []  # segment, start sample, end sample
        for index, (tokens, ends_sentence) in enumerate(chunks):
            ids = self.voice.phoneme_ids([t.ch for t in tokens])
            out = self.voice.synthesize_ids(ids, seed=(seed, index),
                                            length_scale=self.voice.length_scale / speed)
            if int(out.durations.sum()) * HOP_LENGTH != len(out.audio):
                raise RuntimeError(f"voice durations ({int(out.durations.sum())} frames) do not "
                                   f"match its audio ({len(out.audio)} samples)")
            segments = _segments(tokens, out.durations)
            for seg in segments:
                times.append((seg, offset, offset + seg.frames * HOP_LENGTH))
                offset += seg.frames * HOP_LENGTH
            pieces.append(out.audio)
            if ends_sentence and index + 1 < len(chunks) and len(gap):
                pieces.append(gap)
                times.append((_Segment(SILENCE, 0), offset, offset + len(gap)))
                offset += len(gap)
        audio = np.concatenate(pieces)
        peak = float(np.max(np.abs(audio)))
        if peak > 0:
            audio = (audio * (PEAK / peak)).astype(np.float32)
        phones, spoken = _phones(times, self.sample_rate)
        return _with_word_indices(audio, self.sample_rate, phones, words, spoken, text)


def check_script_length(text: str, field: str = "script") -> None:
    limit = max_script_chars()
    if len(text) > limit:
        raise InputError(field, f"is {len(text)} characters long; the limit is {limit} (LIKENESS_MAX_SCRIPT_CHARS)")


def _validate(text: str, seed: int, speed: float) -> None:
    if not isinstance(text, str) or not text.strip():
        raise InputError("script", "is empty")
    check_script_length(text)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError("seed", f"must be a non-negative integer, got {seed!r}")
    check_speed(speed)


def check_speed(speed: float) -> None:
    """Speaking rate multiplier within SPEED_RANGE (every entry point checks it before any work)."""
    try:
        ok = SPEED_RANGE[0] <= float(speed) <= SPEED_RANGE[1]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError("speed", f"must be from {SPEED_RANGE[0]:g} to {SPEED_RANGE[1]:g}, got {speed}")


def _chunks(clauses: list[Clause], voice: PiperVoice) -> list[tuple[list[_Token], bool]]:
    """Clauses -> model inputs: one per sentence, over-long sentences split at clause ends."""
    limit = _max_chunk_phonemes()
    chunks: list[tuple[list[_Token], bool]] = []
    current: list[_Token] = []
    for clause in clauses:
        tokens = _clause_tokens(clause, voice)
        if current and len(current) + len(tokens) > limit:
            chunks.append((current, False))
            current = []
        current += tokens
        if clause.ends_sentence:
            chunks.append((current, True))
            current = []
    if current:
        chunks.append((current, True))
    return chunks


def _clause_tokens(clause: Clause, voice: PiperVoice) -> list[_Token]:
    tokens = []
    for ch, label in zip(clause.ipa, clause.word_labels):
        if not voice.knows(ch):
            continue  # a symbol the voice was not trained on (Piper drops these too)
        kind = "space" if ch == " " else "stress" if ch in STRESS_MARKS else "phone"
        tokens.append(_Token(ch, kind, clause.first_word + label if label >= 0 and kind != "space" else -1))
    if clause.punctuation and voice.knows(clause.punctuation):
        tokens.append(_Token(clause.punctuation, "punct", -1))
    if clause.punctuation in ",;:" and voice.knows(" "):  # "" too: a piece of a long clause
        tokens.append(_Token(" ", "space", -1))
    return tokens


def _segments(tokens: list[_Token], durations: np.ndarray) -> list[_Segment]:
    """Tokens + per-id frames (layout ^ _ t1 _ t2 _ ... tn _ $) -> phones and silences.

    Each pad id is the transition INTO the next token, so a token owns the pad before it and
    itself; spaces and stress marks likewise belong to what follows them (closer to the forced
    aligner's onsets than "the pad ends the previous phoneme": docs/notes/tts.md#a-pad-belongs-to-the-next-phoneme).
    """
    d = [int(x) for x in durations]
    frames = [d[1 + 2 * k] + d[2 + 2 * k] for k in range(len(tokens))]  # pad before + token
    out: list[_Segment] = [_Segment(SILENCE, d[0])]
    carry = 0  # frames of a word boundary, for the next word's first phone
    k = 0
    while k < len(tokens):
        tok = tokens[k]
        if tok.kind == "punct":
            out.append(_Segment(SILENCE, frames[k] + carry))
            carry = 0
            k += 1
        elif tok.kind == "space":
            followed_by_word = k + 1 < len(tokens) and tokens[k + 1].kind != "punct"
            if out[-1].symbol == SILENCE or not followed_by_word:
                out[-1].frames += frames[k]  # a space next to a pause is part of the pause
            else:
                carry += frames[k]
            k += 1
        else:
            end = k
            while end < len(tokens) and tokens[end].kind in ("phone", "stress"):
                end += 1
            word_segments = _word_segments(tokens[k:end], frames[k:end])
            word_segments[0].frames += carry
            carry = 0
            out += word_segments
            k = end
    out.append(_Segment(SILENCE, d[-2] + d[-1] + carry))  # the last pad leads into '$'
    return [s for s in out if s.frames > 0]


def _word_segments(tokens: list[_Token], frames: list[int]) -> list[_Segment]:
    """One IPA word (phone characters and stress marks) -> phones with stress and frames."""
    chars, positions, marks_at, mark_frames = [], [], [], []
    pending_mark, pending_frames = 0, 0
    for i, tok in enumerate(tokens):
        if tok.kind == "stress":
            pending_mark = max(pending_mark, STRESS_MARKS[tok.ch])
            pending_frames += frames[i]
            continue
        chars.append(tok.ch)
        positions.append(i)
        marks_at.append(pending_mark)
        mark_frames.append(pending_frames)
        pending_mark, pending_frames = 0, 0
    spans = group_phones("".join(chars), list(range(len(chars))))
    if not spans:  # only stress marks: nothing to pronounce, keep the time as a pause
        return [_Segment(SILENCE, sum(frames))]
    symbols = [s.symbol for s in spans]
    marks = [max(marks_at[p] for p in s.positions) for s in spans]
    stress = syllable_stress(symbols, marks)
    segments = []
    for span, st in zip(spans, stress):
        n = sum(frames[positions[p]] + mark_frames[p] for p in span.positions)
        segments.append(_Segment(span.symbol, n, st, tokens[positions[span.positions[0]]].word))
    segments[-1].frames += pending_frames  # a trailing stress mark (none in practice)
    return segments


def _phones(times: list[tuple[_Segment, int, int]], sample_rate: int):
    """Sample spans -> Phone list (adjacent silences merged) and each word's [start, end]."""
    phones: list[Phone] = []
    spoken: dict[int, list[float]] = {}
    for seg, a, b in times:
        start, end = a / sample_rate, b / sample_rate
        if seg.symbol == SILENCE:
            if phones and phones[-1].symbol == SILENCE:
                start = phones.pop().start
            phones.append(Phone(SILENCE, start, end))
            continue
        phones.append(Phone(seg.symbol, start, end, seg.stress, seg.word))
        if seg.word >= 0:
            span = spoken.setdefault(seg.word, [start, end])
            span[1] = end
    return phones, spoken


def _with_word_indices(audio, sample_rate, phones, words, spoken, text) -> Speech:
    """Speech.words holds the words that were spoken; phones point into it."""
    order = sorted(spoken)
    position = {w: i for i, w in enumerate(order)}
    phones = [Phone(p.symbol, p.start, p.end, p.stress, position[p.word_index]) if p.word_index >= 0 else p
              for p in phones]
    return Speech(audio=audio, sample_rate=sample_rate, phones=phones,
                  words=[Word(words[w], *spoken[w]) for w in order], text=text)


def _main() -> None:
    """`python -m services.tts.engine [TEXT] [--out speech.wav]`: synthesize and print the real-time factor."""
    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("text", nargs="?", default=(
        "Welcome to Likeness. Give it one photo and a script, and it makes a talking video. "
        "The voice you hear was synthesized on this machine, with exact timings for every phoneme, "
        "so the lips can close on each p, b and m at the right moment."))
    parser.add_argument("--out", help="write the speech to this WAV file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tts = TextToSpeech()
    t0 = time.perf_counter()
    tts.synthesize("Warm up.", seed=0)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    speech = tts.synthesize(args.text, seed=args.seed)
    took = time.perf_counter() - t0
    print(f"load+first call {load:.2f} s; {len(args.text)} chars -> {speech.duration:.2f} s of audio in "
          f"{took:.2f} s: RTF {took / speech.duration:.3f}; {len(speech.phones)} phones, {len(speech.words)} words")
    if args.out:
        write_wav(args.out, speech.audio, speech.sample_rate)


if __name__ == "__main__":
    _main()
