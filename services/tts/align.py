"""Forced alignment of a known script to a recording (pocketsphinx 5.1.1, its bundled en-us model).

Used as an instrument independent of the TTS (to check the voice's own timings) and to drive
video from a user's own recording. Two decoding passes with equal, very wide beams and no
best-path rescoring: word alignment (set_align_text), then phone alignment (set_alignment); on
the LibriVox utterances of the pocketsphinx source distribution this reproduces pocketsphinx's
reference phone alignment (tests/test_align.py). Words cmudict lacks (names, numbers) are
pronounced with espeak-ng IPA mapped to ARPAbet. Phones come back in the TTS inventory
(services.tts.phones); stress comes from espeak-ng, since the bundled cmudict has no stress digits.
English (en-us acoustic model) only. Times are in 10 ms frames.
"""
from __future__ import annotations

import difflib
import threading
from math import gcd

import numpy as np
import pocketsphinx as ps

from services.common import config
from services.common.domain.errors import InputError
from services.common.domain.speech import Phone, Speech, Word
from services.tts.phonemize import clean_text, espeak_ipa, split_clauses
from services.tts.phones import (SILENCE, STRESS_MARKS, arpabet_to_ipa, group_phones, is_vowel,
                                 syllable_stress, word_to_arpabet)

ALIGN_RATE = 16000  # the acoustic model's sample rate
FRAME_RATE = 100  # pocketsphinx frames per second
_WIDE = 1e-200


def min_score() -> float:
    """Mean per-frame acoustic score (log, relative to the best senone) below which the recording
    is taken not to be the script: the default lies between what matching speech and another sentence's
    script score (docs/notes/tts.md#the-aligners-match-score)."""
    return config.get_float("LIKENESS_ALIGN_MIN_SCORE")


class Aligner:
    """One pocketsphinx decoder (slow to build, not thread-safe: calls are serialised)."""

    def __init__(self) -> None:
        self._decoder = None
        self._lock = threading.Lock()

    def _get_decoder(self):
        if self._decoder is None:
            config = ps.Config(hmm=ps.get_model_path("en-us/en-us"),
                               dict=ps.get_model_path("en-us/cmudict-en-us.dict"),
                               lm=None, loglevel="FATAL", bestpath=False, beam=_WIDE, pbeam=_WIDE,
                               wbeam=_WIDE, lpbeam=_WIDE, lponlybeam=_WIDE)
            self._decoder = ps.Decoder(config)
        return self._decoder

    def align(self, audio: np.ndarray, sample_rate: int, transcript: str) -> Speech:
        samples = _as_mono_float(audio)
        if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
            raise InputError("audio", f"sample rate must be an integer of at least 8000 Hz, got {sample_rate}")
        if len(samples) < 0.1 * sample_rate:
            raise InputError("audio", "recording is shorter than 0.1 s")
        words = [w for ws, _ in split_clauses(clean_text(transcript or "")) for w in ws]
        if not words:
            raise InputError("script", "the transcript has no words to align")
        pcm = _to_pcm16(samples, sample_rate)
        if len(pcm) < 2 * len(words) * 3 * 160:  # 3 HMM states per phone, at least 2 phones per word
            raise InputError("audio", f"recording is too short for {len(words)} words")
        with self._lock:
            decoder = self._get_decoder()
            keys, word_phones = self._pronounce(decoder, words)
            entries, n_frames, score = _decode(decoder, keys, pcm.tobytes())
        if score < min_score():
            raise InputError("audio", f"the recording does not match the script (alignment score "
                             f"{score:.1f} per frame, expected above {min_score():.0f})")
        return _to_speech(samples, int(sample_rate), transcript, words, word_phones, entries, n_frames)

    def score(self, audio: np.ndarray, sample_rate: int, transcript: str) -> float:
        """Mean per-frame acoustic score of the forced alignment (higher: the audio says the script
        more clearly; see min_score()). Used as an intelligibility check of synthetic speech."""
        samples = _as_mono_float(audio)
        words = [w for ws, _ in split_clauses(clean_text(transcript or "")) for w in ws]
        if not words or len(samples) < 0.1 * sample_rate:
            raise InputError("audio", "nothing to score")
        pcm = _to_pcm16(samples, int(sample_rate))
        with self._lock:
            decoder = self._get_decoder()
            keys, _ = self._pronounce(decoder, words)
            return float(_decode(decoder, keys, pcm.tobytes())[2])

    def _pronounce(self, decoder, words: list[str]) -> tuple[list[str], list[tuple[list[str], list[int]]]]:
        """Dictionary keys for the words (adding missing ones) and each word's espeak IPA phones
        with their stress (used to give aligned vowels their stress)."""
        distinct = sorted(set(words))
        ipas = dict(zip(distinct, espeak_ipa(distinct)))
        keys: list[str] = []
        spoken: list[tuple[list[str], list[int]]] = []
        for word in words:
            symbols, stresses = _ipa_phones(ipas[word])
            spoken.append((symbols, stresses))
            key = word.lower()
            if decoder.lookup_word(key) is None:
                pron = [p.rstrip("012") for p in word_to_arpabet(symbols, stresses)]
                if not pron:
                    raise InputError("script", f"cannot pronounce the word {word!r}")
                decoder.add_word(key, " ".join(pron), True)
            keys.append(key)
        return keys, spoken


_default: Aligner | None = None
_default_lock = threading.Lock()


def align(audio: np.ndarray, sample_rate: int, transcript: str) -> Speech:
    """Align `transcript` to `audio` (mono, any rate): phones and words with times in seconds.

    Raises InputError("audio", ...) when the recording can't be aligned to the script.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = Aligner()
    return _default.align(audio, sample_rate, transcript)


def alignment_score(audio: np.ndarray, sample_rate: int, transcript: str) -> float:
    """The shared aligner's Aligner.score."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Aligner()
    return _default.score(audio, sample_rate, transcript)


def _as_mono_float(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim == 2:
        a = a.mean(axis=1) if a.shape[1] <= 8 else a.mean(axis=0)
    if a.ndim != 1 or a.size == 0:
        raise InputError("audio", f"expected mono samples, got shape {np.shape(audio)}")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise InputError("audio", "samples contain NaN or infinity")
    return a


def _to_pcm16(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate != ALIGN_RATE:
        from scipy.signal import resample_poly  # (~2 s to import: the aligner's Triton model starts without scipy)

        g = gcd(int(sample_rate), ALIGN_RATE)
        samples = resample_poly(samples, ALIGN_RATE // g, int(sample_rate) // g).astype(np.float32)
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


def _decode(decoder, keys: list[str], raw: bytes):
    try:
        decoder.set_align_text(" ".join(keys))
        for second_pass in (False, True):
            if second_pass:
                decoder.set_alignment()
            decoder.start_utt()
            decoder.process_raw(raw, full_utt=True)
            decoder.end_utt()
        alignment = decoder.get_alignment()
    except RuntimeError as exc:
        raise InputError("audio", f"the recording could not be aligned to the script ({exc})") from exc
    if alignment is None:
        raise InputError("audio", "the recording could not be aligned to the script")
    n_frames = decoder.n_frames()
    entries = []
    total = 0
    for word in alignment.words():
        phones = [(p.name, p.start, p.duration) for p in word]
        total += sum(p.score for p in word)
        entries.append((word.name, word.start, word.duration, phones))
    return entries, n_frames, total / max(n_frames, 1)


def _ipa_phones(ipa: str) -> tuple[list[str], list[int]]:
    """A word's espeak IPA -> grouped phones and per-phone syllable stress."""
    symbols: list[str] = []
    marks: list[int] = []
    pending = 0
    chars = [c for c in ipa if c != " "]
    run: list[str] = []
    run_marks: list[int] = []
    for c in chars:
        if c in STRESS_MARKS:
            pending = max(pending, STRESS_MARKS[c])
            continue
        run.append(c)
        run_marks.append(pending)
        pending = 0
    for span in group_phones("".join(run)):
        symbols.append(span.symbol)
        marks.append(max(run_marks[p] for p in span.positions))
    return symbols, syllable_stress(symbols, marks)


def _vowel_stresses(arpa_phones: list[str], espeak_symbols: list[str], espeak_stress: list[int]) -> list[int]:
    """Stress for each ARPAbet vowel of an aligned word, copied from espeak's vowels in order."""
    a_vowels = [p for p in arpa_phones if p in _ARPA_VOWEL_NAMES]
    e_idx = [k for k, s in enumerate(espeak_symbols) if is_vowel(s)]
    if len(a_vowels) == len(e_idx):
        return [espeak_stress[k] for k in e_idx]
    e_names = [(word_to_arpabet([espeak_symbols[k]], [0]) or ["?"])[0].rstrip("012") for k in e_idx]
    out = [0] * len(a_vowels)
    matcher = difflib.SequenceMatcher(a=a_vowels, b=e_names, autojunk=False)
    for block in matcher.get_matching_blocks():
        for d in range(block.size):
            out[block.a + d] = espeak_stress[e_idx[block.b + d]]
    return out


_ARPA_VOWEL_NAMES = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY",
                               "OW", "OY", "UH", "UW"})


def _to_speech(samples: np.ndarray, sample_rate: int, transcript: str, words: list[str],
               word_phones: list[tuple[list[str], list[int]]], entries, n_frames: int) -> Speech:
    duration = len(samples) / sample_rate
    phones: list[Phone] = []

    def add(symbol: str, start: float, end: float, stress: int = 0, word_index: int = -1) -> None:
        if end <= start:
            return
        if symbol == SILENCE and phones and phones[-1].symbol == SILENCE:
            last = phones.pop()
            start = last.start
        phones.append(Phone(symbol, start, end, stress, word_index))

    w = 0
    for name, _, _, aligned in entries:
        base = name.split("(")[0]
        is_word = base not in ("<s>", "</s>", "<sil>") and not base.startswith(("[", "+"))
        if not is_word:
            for _, start, dur in aligned:
                add(SILENCE, start / FRAME_RATE, (start + dur) / FRAME_RATE)
            continue
        if w >= len(words):
            raise InputError("audio", "alignment returned more words than the script has")
        arpa = [p for p, _, _ in aligned]
        vowel_stress = iter(_vowel_stresses(arpa, *word_phones[w]))
        symbols, marks = [], []
        for p in arpa:
            stress = next(vowel_stress) if p in _ARPA_VOWEL_NAMES else 0
            symbols.append(arpabet_to_ipa(p, stress))
            marks.append(stress)
        stresses = syllable_stress(symbols, marks)
        for (p, start, dur), symbol, stress in zip(aligned, symbols, stresses):
            spoken = symbol != SILENCE
            add(symbol, start / FRAME_RATE, (start + dur) / FRAME_RATE, stress if spoken else 0,
                w if spoken else -1)
        w += 1
    if w != len(words):
        raise InputError("audio", f"aligned {w} of {len(words)} words")
    # Make the timeline cover the recording exactly (the last frame may run past the last sample).
    while phones and phones[-1].start >= duration:
        phones.pop()
    if phones and phones[-1].end > duration:
        last = phones.pop()
        add(last.symbol, last.start, duration, last.stress, last.word_index)
    if not phones or phones[-1].end < duration:
        add(SILENCE, phones[-1].end if phones else 0.0, duration)
    spans: dict[int, list[float]] = {}
    for ph in phones:
        if ph.word_index >= 0:
            span = spans.setdefault(ph.word_index, [ph.start, ph.end])
            span[1] = ph.end
    out_words = [Word(words[i], *spans[i]) for i in range(len(words))]
    return Speech(audio=samples, sample_rate=sample_rate, phones=phones, words=out_words, text=transcript)
