"""A synthetic sung test set with exact timings: "ma"/"mee"/"moe" notes on a melody with vibrato.

The piper voice (services.tts) speaks the syllables; WORLD (services.expression.diffusion.singing)
stretches each vowel to its note's length and replaces the pitch with the note's (glide + vibrato).
The phone timings are re-timed with the audio, so every /m/ and every sustained vowel has an exact
span. The training set's sung examples (services.expression.diffusion.data) use other syllables,
random melodies and a formant-shifted voice; these syllables, this melody and the unshifted voice
are only used here. It checks that sustained vowels at musical pitch keep the mouth open, that the
openness follows the vowel (a > o > i) and that the lips close on each /m/.
"""
from __future__ import annotations

import numpy as np

# (note name, semitones from A3, vowel, beats)
MELODY = [("C4", 3, "a", 1), ("D4", 5, "i", 1), ("E4", 7, "o", 1), ("G4", 10, "a", 2), ("E4", 7, "i", 1),
          ("C4", 3, "o", 1), ("A3", 0, "a", 2), ("C4", 3, "i", 1), ("G3", -2, "o", 1), ("C4", 3, "a", 3)]
BEAT_S = 0.5
SYLLABLES = {"a": "Mah", "i": "Mee", "o": "Moe"}
VOWELS = {"ɑː": "a", "ɑ": "a", "a": "a", "iː": "i", "i": "i", "oʊ": "o", "o": "o", "əʊ": "o"}
SEMITONES_DOWN = 12  # the piper voice is a baritone: sing the melody an octave lower


def sung_speech(seed: int = 0):
    """The sung clip as a Speech (audio + re-timed phones)."""
    from services.expression.diffusion.singing import Note, sing
    from services.tts.engine import TextToSpeech

    text = ", ".join(SYLLABLES[v] for _, _, v, _ in MELODY) + "."
    speech = TextToSpeech().synthesize(text, seed=seed)
    notes = [Note(220.0 * 2 ** ((semis - SEMITONES_DOWN) / 12), beats * BEAT_S) for _, semis, _, beats in MELODY]
    return sing(speech, notes, vibrato_semitones=0.35, vibrato_hz=5.5)


def sung_clip(seed: int = 0) -> tuple[np.ndarray, int, list[tuple[str, float, float]]]:
    """(audio, sample rate, [(segment "m" or vowel a/i/o, start, end)])."""
    speech = sung_speech(seed)
    spans = []
    for p in speech.phones:
        if p.symbol == "m":
            spans.append(("m", p.start, p.end))
        elif p.symbol in VOWELS:
            spans.append((VOWELS[p.symbol], p.start, p.end))
    return speech.audio, speech.sample_rate, spans


def main() -> None:
    """python benchmarks/singing.py [--wav out/sung.wav]: scores the diffusion model on the sung clip
    (mouth aperture per sustained vowel, closure on each /m/; seeds 0-2) -> benchmarks/results/singing.json."""
    import json
    import sys
    import wave
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from benchmarks.expression import singing

    if "--wav" in sys.argv:
        audio, sr, spans = sung_clip()
        out = Path(sys.argv[sys.argv.index("--wav") + 1])
        out.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(out), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sr)
            w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        print(out, f"{len(audio) / sr:.1f} s")
    result = singing()
    print(", ".join(f"{k} {v}" for k, v in result.items()))
    path = root / "benchmarks" / "results" / "singing.json"
    path.write_text(json.dumps({"date": "2026-11-26", "set": "piper Mah/Mee/Moe on a 10-note melody, WORLD "
                                "stretch + pitch (C3-G3, vibrato 0.35 semitone at 5.5 Hz)", "diffusion": result}, indent=1))


if __name__ == "__main__":
    main()
