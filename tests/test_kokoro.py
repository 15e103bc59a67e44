"""Kokoro-82M from the PyPI wheels: speaks English intelligibly through espeak-ng IPA (measured with
pocketsphinx + jiwer), is deterministic, and its exposed durations account for every sample."""
from __future__ import annotations

import numpy as np
import pytest

from services.tts.kokoro import FRAME_SAMPLES, SAMPLE_RATE, KokoroVoice, ipa_to_tokens, sentence_ipas

SCRIPTS = ["The boy was there when the sun rose.", "Help the woman get back to her feet.",
           "Kick the ball straight and follow through.", "The fish twisted and turned on the bent hook."]


@pytest.fixture(scope="module")
def kokoro() -> KokoroVoice:
    return KokoroVoice()


def _recognise(audio: np.ndarray, rate: int) -> str:
    import pocketsphinx as ps
    from scipy.signal import resample_poly

    decoder = ps.Decoder(loglevel="FATAL")
    pcm = resample_poly(audio, 16000, rate)
    decoder.start_utt()
    decoder.process_raw((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes(), full_utt=True)
    decoder.end_utt()
    return decoder.hyp().hypstr if decoder.hyp() else ""


def _norm(s: str) -> str:
    return " ".join("".join(c for c in s.lower() if c.isalnum() or c in " '").split())


def test_speaks_english_intelligibly_and_deterministically(kokoro: KokoroVoice) -> None:
    import jiwer

    style = kokoro.styles()["jm_kumo"]
    hyps = []
    for script in SCRIPTS:
        audio, rate = kokoro.synthesize(script, style)
        assert rate == SAMPLE_RATE and audio.dtype == np.float32
        assert 0.8 < len(audio) / rate < 5.0 and 0.05 < np.abs(audio).max() <= 1.5
        hyps.append(_recognise(audio, rate))
    error = jiwer.wer([_norm(s) for s in SCRIPTS], [_norm(h) for h in hyps])
    assert error <= 0.35, (error, hyps)
    again, _ = kokoro.synthesize(SCRIPTS[0], style)
    first, _ = kokoro.synthesize(SCRIPTS[0], style)
    assert np.array_equal(again, first)


def test_durations_cover_the_audio_and_speed_scales_them(kokoro: KokoroVoice) -> None:
    (ipa,) = sentence_ipas("Help the woman get back to her feet.")
    tokens, sources = ipa_to_tokens(ipa, kokoro.vocab)
    assert len(tokens) == len(sources) and sources == sorted(sources)
    style = kokoro.styles()["jm_kumo"]
    out = kokoro.synthesize_tokens(tokens, style, 1.0, sources)
    assert out.durations.shape == (len(tokens) + 2,) and (out.durations >= 1).all()
    assert int(out.durations.sum()) * FRAME_SAMPLES == out.audio.size
    slow = kokoro.synthesize_tokens(tokens, style, 0.7)
    assert 1.25 < slow.audio.size / out.audio.size < 1.6


def test_any_style_vector_is_accepted(kokoro: KokoroVoice) -> None:
    styles = kokoro.styles()
    assert set(styles) >= {"jm_kumo", "jf_alpha"} and all(s.shape == (510, 256) for s in styles.values())
    mix = 0.5 * styles["jm_kumo"][40] + 0.5 * styles["jf_alpha"][40]
    audio, _ = kokoro.synthesize_ipa("hɛlˈoʊ wˈɜːld.", mix)
    base, _ = kokoro.synthesize_ipa("hɛlˈoʊ wˈɜːld.", styles["jm_kumo"])
    assert audio.size > 0.3 * SAMPLE_RATE and not np.array_equal(audio[:1000], base[:1000])


def test_ipa_maps_to_kokoro_symbols(kokoro: KokoroVoice) -> None:
    tokens, sources = ipa_to_tokens("dʒˈeɪ tʃˈɔɪs", kokoro.vocab)
    inverse = {v: k for k, v in kokoro.vocab.items()}
    assert "".join(inverse[t] for t in tokens) == "ʤˈA ʧˈYs"
    assert sources == [0, 2, 3, 5, 6, 8, 9, 11]


def test_kokoro_timeline_matches_the_heard_speech(kokoro: KokoroVoice) -> None:
    """Phone onsets from Kokoro's own durations vs the forced aligner on its audio (median <= 20 ms)."""
    from services.tts.align import align
    from services.tts.kokoro_speech import KokoroSpeech

    text = "Kick the ball straight and follow through. A large size in stockings is hard to sell."
    speech = KokoroSpeech(kokoro).synthesize(text, kokoro.styles()["jm_kumo"])
    assert speech.phones[-1].end == pytest.approx(speech.duration, abs=1e-6)
    assert [w.text for w in speech.words] == text.replace(".", "").split()
    heard = align(speech.audio, speech.sample_rate, text)
    ours = [p for p in speech.phones if p.symbol != "sil"]
    theirs = [p for p in heard.phones if p.symbol != "sil"]
    assert abs(len(ours) - len(theirs)) <= 3
    onsets = np.array([p.start for p in theirs])
    errors = [np.min(np.abs(onsets - p.start)) for p in ours]
    assert np.median(errors) <= 0.02, np.median(errors)


def test_non_english_scripts_speak_through_espeak_ipa(kokoro: KokoroVoice) -> None:
    from services.tts.kokoro_speech import KokoroSpeech

    speaker = KokoroSpeech(kokoro)
    for text, language, words in (("Bonjour, je m'appelle Marie.", "fr", 4), ("こんにちは", "ja", 1)):
        speech = speaker.synthesize(text, kokoro.styles()["jm_kumo"], language=language)
        assert speech.duration > 0.5 and len(speech.words) == words
        assert speech.phones[-1].end == pytest.approx(speech.duration, abs=1e-6)
