"""Sung speech from TTS with exact timings: every word of a synthesized utterance becomes one note.

WORLD (pyworld: DIO + StoneMask F0, CheapTrick envelope, D4C aperiodicity) analyses the TTS audio;
the frames are re-timed so that each word lasts its note (consonants keep their length, the vowels
stretch to fill the rest: sustained vowels) and the F0 is replaced by the note's pitch with a short
glide between notes and a delayed vibrato. An optional frequency warp of the spectral envelope
(`formant_shift`) makes another voice out of the same TTS. The phone timings are re-timed with the
frames, so the procedural teacher can be run on the result (training data) and the spans scored
(benchmarks/singing.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.common.domain.speech import Phone, Speech, Word
from services.expression.visemes import phone_visemes
from services.tts import warp_frequency_axis

FRAME_MS = 5.0
MAX_CONSONANT_S = 0.15
LEAD_S, TAIL_S = 0.15, 0.25  # silence kept before the first and after the last note


@dataclass(frozen=True)
class Note:
    hz: float
    seconds: float  # the whole syllable/word sung on it, consonants included
    breath_s: float = 0.0  # silence after the note


def midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _is_vowel(symbol: str) -> bool:
    return any(v.vowel for v in phone_visemes(symbol))


def sing(speech: Speech, notes: list[Note], *, vibrato_semitones: float = 0.3, vibrato_hz: float = 5.5,
         formant_shift: float = 1.0, glide_s: float = 0.05) -> Speech:
    """One note per word of `speech` (notes are cycled if there are fewer). Returns the sung Speech
    with re-timed phones and words (silences between words become the notes' breaths)."""
    import pyworld  # (~1 s to import: data.py imports this module for every training run, sung or not)

    if not speech.words or not notes:
        raise ValueError("need words and notes")
    sr = speech.sample_rate
    x = np.ascontiguousarray(speech.audio, np.float64)
    f0, t = pyworld.dio(x, sr, f0_floor=50.0, f0_ceil=700.0, frame_period=FRAME_MS)
    f0 = pyworld.stonemask(x, f0, t, sr)
    sp = pyworld.cheaptrick(x, f0, t, sr)
    ap = pyworld.d4c(x, f0, t, sr)
    fp = FRAME_MS / 1000.0
    n_src = len(f0)

    # Segments of the output: (src start s, src end s, output seconds, phone or None, note index or -1)
    segments: list[tuple[float, float, float, Phone | None, int]] = []
    words = [w for w in speech.words]
    by_word: dict[int, list[Phone]] = {}
    for p in speech.phones:
        if p.word_index >= 0:
            by_word.setdefault(p.word_index, []).append(p)
    first = min(by_word) if by_word else 0
    lead_src = by_word[first][0].start if by_word else 0.0
    segments.append((max(0.0, lead_src - LEAD_S), lead_src, min(LEAD_S, lead_src) or 0.0, None, -1))
    for k, wi in enumerate(sorted(by_word)):
        note = notes[k % len(notes)]
        phones = by_word[wi]
        cons = [min(p.end - p.start, MAX_CONSONANT_S) for p in phones if not _is_vowel(p.symbol)]
        vowel_src = sum(p.end - p.start for p in phones if _is_vowel(p.symbol))
        room = max(note.seconds - sum(cons), 0.05 * max(1, len(phones) - len(cons)))
        for p in phones:
            dur = p.end - p.start
            if _is_vowel(p.symbol):
                out = room * dur / vowel_src if vowel_src > 0 else room
            else:
                out = min(dur, MAX_CONSONANT_S)
            segments.append((p.start, p.end, out, p, k))
        if note.breath_s > 0:  # a breath: the silence after the word (or the word's end, held quiet)
            end = phones[-1].end
            segments.append((end, end + note.breath_s, note.breath_s, None, -2))
    tail = speech.phones[-1].end if speech.phones else speech.duration
    segments.append((tail, tail, TAIL_S, None, -1))

    src_idx, pitch, out_phones, word_spans = [], [], [], {}
    note_pitch, note_pos = [], []
    now = 0.0
    for a, b, out, phone, k in segments:
        n = max(1, int(round(out / fp)))
        pos = a + (b - a) * (np.arange(n) + 0.5) / n
        idx = np.clip(np.round(pos / fp).astype(int), 0, n_src - 1)
        src_idx.append(idx)
        voiced = (f0[idx] > 0) if k >= 0 else np.zeros(n, bool)
        if k >= 0 and phone is not None and _is_vowel(phone.symbol):
            voiced[:] = True  # a sung vowel is voiced throughout
        pitch.append(np.where(voiced, np.log2(notes[k % len(notes)].hz) if k >= 0 else 0.0, np.nan))
        note_pitch.append(np.full(n, np.log2(notes[k % len(notes)].hz) if k >= 0 else np.nan))
        note_pos.append(np.full(n, -1.0) if k < 0 else np.arange(n) * fp)
        if phone is not None:
            out_phones.append(Phone(phone.symbol, now, now + n * fp, phone.stress, phone.word_index))
            lo, hi = word_spans.get(phone.word_index, (now, now))
            word_spans[phone.word_index] = (min(lo, now), max(hi, now + n * fp))
        elif b > a or k == -1:
            out_phones.append(Phone("sil", now, now + n * fp, 0, -1))
        now += n * fp
    idx = np.concatenate(src_idx)
    target = np.concatenate(note_pitch)
    # Glide: the pitch target is smoothed across note changes (portamento), then vibrato on top.
    filled = np.copy(target)
    valid = ~np.isnan(filled)
    if valid.any():
        filled[~valid] = np.interp(np.flatnonzero(~valid), np.flatnonzero(valid), filled[valid])
    g = max(1, int(round(glide_s / fp)))
    kernel = np.ones(g) / g
    glided = np.convolve(np.pad(filled, (g // 2, g - 1 - g // 2), mode="edge"), kernel, mode="valid")
    # Time within each note (for the vibrato's onset); the note-position track restarts per segment.
    within = np.concatenate(note_pos)
    note_time = np.zeros_like(within)
    acc = 0.0
    prev_note = None
    seg_notes = np.concatenate([np.full(len(s), k) for s, (_, _, _, _, k) in zip(src_idx, segments)])
    for i in range(len(within)):
        if seg_notes[i] != prev_note:
            acc, prev_note = 0.0, seg_notes[i]
        note_time[i] = acc
        acc += fp
    onset = np.clip((note_time - 0.25) / 0.3, 0.0, 1.0)
    vib = vibrato_semitones / 12.0 * np.sin(2 * np.pi * vibrato_hz * note_time) * onset
    voiced = ~np.isnan(np.concatenate(pitch))
    new_f0 = np.where(voiced, 2.0 ** (glided + vib), 0.0)
    new_sp = warp_frequency_axis(sp[idx], formant_shift)
    new_ap = ap[idx]
    audio = pyworld.synthesize(new_f0, np.ascontiguousarray(new_sp), np.ascontiguousarray(new_ap), sr, FRAME_MS)
    audio = audio[: int(round(now * sr))]
    audio = (0.9 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)
    new_words = [Word(w.text, *word_spans[i]) for i, w in enumerate(words) if i in word_spans]
    return Speech(audio, sr, out_phones, new_words, speech.text)


def random_melody(rng: np.random.Generator, count: int, *, low_midi: float, high_midi: float) -> list[Note]:
    """A random-walk melody in a major scale: note lengths from a quaver to a dotted minim at a random
    tempo, occasional breaths."""
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    root = float(rng.uniform(low_midi, low_midi + 5))
    beat = float(rng.uniform(0.3, 0.6))
    degree = int(rng.integers(0, 5))
    notes = []
    for _ in range(count):
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, 10))
        midi = min(root + 12 * (degree // 7) + scale[degree % 7], high_midi)
        beats = float(rng.choice([0.5, 1, 1, 1.5, 2, 3]))
        breath = float(rng.uniform(0.08, 0.25)) if rng.random() < 0.25 else 0.0
        notes.append(Note(midi_hz(midi), beats * beat, breath))
    return notes
