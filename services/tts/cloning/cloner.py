"""Voice cloning from a sample: build a SpeakerProfile once, then speak any script in that voice.

build_profile: the sample is prepared like any recording (checks, trim, loudness) and embedded by
the speaker encoder. Then (LIKENESS_CLONE_METHOD):
  * "world" (default; the fastest): the Piper voice with WORLD conversion.
  * "auto": both of the below, then the one whose speech of the same sentence the speaker encoder
    finds closer to the sample (speakers differ in which method suits them).
  * "kokoro": a search in Kokoro-82M's 256-d style space for the style whose speech the speaker
    encoder finds closest to the sample: the shipped styles first, then a seeded (1+1) evolution
    strategy (LIKENESS_CLONE_STYLE_EVALS evaluations) on a short calibration text; a candidate
    counts only if the forced aligner still hears the words (LIKENESS_CLONE_MIN_CLARITY). WORLD
    conversion relative to that Kokoro voice is kept on top only if it scores higher and stays clear.
WORLD conversion: the sample is analysed (Harvest F0) and compared with the voice's statistics on
the calibration text; that gives the F0 mapping, the vocal-tract warp and the envelope correction,
whose strength is picked by the same speaker-encoder objective. Then an EQ curve fitted through the
speaker encoder (timbre.py, LIKENESS_CLONE_TIMBRE_STEPS) is added to the correction when it brings
the converted calibration speech closer to the sample.

clone: the Kokoro path re-speaks the script in the found style (its duration output gives the exact
phone timeline); the WORLD path converts the Piper speech without touching its timing. Either way
the phone timeline stays exact for the lips.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from math import gcd

import numpy as np
from scipy.signal import resample_poly

from services.common import config
from services.common.domain.errors import InputError
from services.common.infra.inference import InferenceClient
from services.common.domain.speech import Speech
from services.tts.cloning import encoder, world
from services.tts.cloning.converter import convert_with
from services.tts.cloning.profile import METHODS, SpeakerProfile
from services.tts.align import alignment_score
from services.tts.cloning.timbre import match_timbre
from services.tts.kokoro import SAMPLE_RATE, ipa_to_tokens, sentence_ipas, shipped_styles
from services.tts.phonemize import DEFAULT_LANGUAGE
from services.tts.recording import VOICE_SAMPLE, prepare_recording
from services.tts.voices import VoiceBank

CALIBRATION_TEXT = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. These days a chicken leg is a rare dish. "
    "Rice is often served in round bowls. The juice of lemons makes fine punch.")
ANALYSIS_MAX_RATE = 22050  # the TTS voice has nothing above 11 kHz to convert
# Enough voiced frames for F0 and envelope statistics: the shortest accepted sample (1 s of speech) is
# only partly voiced (docs/notes/voice.md).
MIN_VOICED_S = 0.25


STYLE_CALIBRATION_TEXT = "The birch canoe slid on the smooth planks."  # ~3 s: each search step speaks it
JUDGE_TEXT = "Four hours of steady work faced us. The wide road shimmered in the hot sun."
# Only the first half of a Kokoro style is searched: it conditions the decoder (timbre); the second
# half drives the duration/F0 predictor, whose shipped values keep the speech intelligible.
TIMBRE_DIMS = 128


def configured_method() -> str:
    """LIKENESS_CLONE_METHOD: how profiles are built now (caches compare it with SpeakerProfile.method)."""
    method = config.get_str("LIKENESS_CLONE_METHOD").strip().lower()
    return method if method in METHODS else "world"  # unknown: the default, as documented


def _min_clarity() -> float:
    """Forced-alignment score (services.tts.align.alignment_score) a candidate voice must keep on the
    calibration text: above it the voice stays intelligible, below it pocketsphinx misses most words
    (docs/notes/voice.md#the-clarity-gate)."""
    return config.get_float("LIKENESS_CLONE_MIN_CLARITY")


def _style_evals() -> int:
    return max(0, config.get_int("LIKENESS_CLONE_STYLE_EVALS"))


def _timbre_steps() -> int:
    """Gradient steps of the timbre EQ fit (0: no fit); few, at a high rate (docs/notes/voice.md#the-eq-fits-cost)."""
    return max(0, config.get_int("LIKENESS_CLONE_TIMBRE_STEPS"))


def _strengths() -> tuple[float, ...]:
    """Envelope-correction strengths tried when building a profile (LIKENESS_CLONE_STRENGTHS)."""
    return config.get_floats("LIKENESS_CLONE_STRENGTHS")


class VoiceCloner:
    def __init__(self, tts, client: InferenceClient, voices: VoiceBank | None = None) -> None:
        self.tts = tts  # a services.tts.TextToSpeech
        self.client = client
        self.voices = voices or VoiceBank(tts, client)  # its Kokoro speaks the Kokoro-style clones
        self._calibration: tuple[Speech, world.Analysis, world.VoiceStats] | None = None
        self._lock = threading.Lock()

    def _calibrate(self) -> tuple[Speech, world.Analysis, world.VoiceStats]:
        with self._lock:
            if self._calibration is None:
                speech = self.tts.synthesize(CALIBRATION_TEXT, seed=0)
                analysis = world.analyse(speech.audio, speech.sample_rate)
                self._calibration = (speech, analysis, world.voice_stats(analysis))
            return self._calibration

    def build_profile(self, sample: bytes | tuple[np.ndarray, int], *, field: str = VOICE_SAMPLE) -> SpeakerProfile:
        """A voice sample (encoded bytes or (samples, rate); 1-60 s of speech, any text) -> profile.
        Raises InputError(field, ...) for unusable samples; a short one is used with a warning."""
        sha = sample_sha256(sample)
        prepared = prepare_recording(sample, field=field, kind=VOICE_SAMPLE)
        audio, rate = _at_most(prepared.samples, prepared.sample_rate, ANALYSIS_MAX_RATE)
        try:
            target = world.voice_stats(world.analyse(audio, rate, accurate_f0=True))
        except ValueError:
            target = None
        if target is None or target.voiced_seconds < MIN_VOICED_S:
            raise InputError(field, f"has too little voiced speech to learn a voice from (need "
                                    f"{MIN_VOICED_S:g} s of voiced speech)")
        sample_embedding = encoder.embed(self.client, prepared.samples, prepared.sample_rate)
        common = dict(embedding=sample_embedding, voiced_seconds=target.voiced_seconds, sample_sha256=sha,
                      warnings=list(prepared.warnings))
        method = configured_method()
        if method == "auto":
            candidates = [self._world_profile(target, sample_embedding, common),
                          self._kokoro_profile(target, sample_embedding, sha, common)]
            chosen = max(candidates, key=lambda profile: self._judge(profile, sample_embedding))
        elif method == "kokoro":
            chosen = self._kokoro_profile(target, sample_embedding, sha, common)
        else:
            chosen = self._world_profile(target, sample_embedding, common)
        return replace(chosen, method=method)

    def _world_profile(self, target: world.VoiceStats, sample_embedding: np.ndarray,
                       common: dict) -> SpeakerProfile:
        calibration, cal_analysis, source = self._calibrate()
        conversion, similarity, _ = self._fit_conversion(source, target, calibration.audio,
                                                         calibration.sample_rate, cal_analysis, sample_embedding)
        return SpeakerProfile(conversion=conversion, calibration_similarity=similarity, **common)

    def _kokoro_profile(self, target: world.VoiceStats, sample_embedding: np.ndarray, sha: str,
                        common: dict) -> SpeakerProfile:
        style, cal_audio, style_similarity = self._search_style(sample_embedding, sha)
        cal_analysis = world.analyse(cal_audio, SAMPLE_RATE)
        conversion, similarity, converted = self._fit_conversion(world.voice_stats(cal_analysis), target, cal_audio,
                                                                 SAMPLE_RATE, cal_analysis, sample_embedding)
        # WORLD on top only where it brings the voice closer and keeps the words clear
        convert = similarity > style_similarity and _clarity(converted, SAMPLE_RATE) >= _min_clarity()
        return SpeakerProfile(conversion=conversion, calibration_similarity=max(similarity, style_similarity),
                              style=style, convert=convert, **common)

    def _judge(self, profile: SpeakerProfile, sample_embedding: np.ndarray) -> float:
        """How close the profile's speech of one fixed sentence sounds to the sample (the profiles'
        calibration scores come from texts of different lengths: not comparable)."""
        spoken = self.speak(JUDGE_TEXT, profile)
        return encoder.cosine(encoder.embed(self.client, spoken.audio, spoken.sample_rate), sample_embedding)

    def _fit_conversion(self, source: world.VoiceStats, target: world.VoiceStats, cal_audio: np.ndarray,
                        cal_rate: int, cal_analysis: world.Analysis,
                        sample_embedding: np.ndarray) -> tuple[world.Conversion, float, np.ndarray]:
        """WORLD conversion source -> target; the correction strength the speaker encoder likes best,
        then the timbre EQ on top where it helps. Returns (conversion, its similarity to the sample,
        the calibration audio converted with it)."""
        warp = world.fit_warp(source, target)
        base = world.Conversion(logf0_source=(source.logf0_mean, source.logf0_std),
                                logf0_target=(target.logf0_mean, target.logf0_std), warp=warp,
                                correction=world.envelope_correction(source, target, warp))

        def score(conversion: world.Conversion) -> tuple[float, np.ndarray]:
            converted = world.convert(cal_audio, cal_rate, conversion, cal_analysis)
            return encoder.cosine(encoder.embed(self.client, converted, cal_rate), sample_embedding), converted

        best, best_similarity, best_audio = base, -1.0, None
        for strength in _strengths():  # keep what the speaker encoder says sounds most like the sample
            candidate = replace(base, correction_strength=strength)
            similarity, converted = score(candidate)
            if similarity > best_similarity:
                best, best_similarity, best_audio = candidate, similarity, converted
        if best_audio is None:  # (no strengths to try: the base conversion)
            best_audio = world.convert(cal_audio, cal_rate, best, cal_analysis)
        if _timbre_steps() and best.correction_strength > 0:
            gain = match_timbre(self.client, best_audio, cal_rate, sample_embedding, _timbre_steps())
            # (the converter scales the correction by its strength: fold the gain in unscaled)
            candidate = replace(best, correction=best.correction + gain[None] / best.correction_strength)
            similarity, converted = score(candidate)
            if similarity > best_similarity:
                best, best_similarity, best_audio = candidate, similarity, converted
        return best, best_similarity, best_audio

    def _search_style(self, sample_embedding: np.ndarray, sha: str) -> tuple[np.ndarray, np.ndarray, float]:
        """The Kokoro style whose calibration speech sounds most like the sample: the shipped styles,
        then a (1+1)-ES with the 1/5th-success step rule, seeded by the sample (same sample, same
        profile). Returns (style [256], its calibration audio at 24 kHz, similarity)."""
        backend = self.voices.kokoro().voice
        ids, _ = ipa_to_tokens(" ".join(sentence_ipas(STYLE_CALIBRATION_TEXT)), backend.vocab)

        def score(style: np.ndarray) -> tuple[float, float, np.ndarray]:
            speech = backend.synthesize_tokens(ids, style).audio
            similarity = encoder.cosine(encoder.embed(self.client, speech, SAMPLE_RATE), sample_embedding)
            return similarity, _clarity(speech, SAMPLE_RATE), speech

        # Start from the most similar shipped style that stays intelligible (else the clearest one).
        packs = shipped_styles()
        scale = np.concatenate(list(packs.values())).std(axis=0)  # per-dimension spread of real styles
        starts = []
        for pack in packs.values():
            row = pack[min(len(ids), len(pack) - 1)].copy()
            starts.append((row, *score(row)))
        clear = [s for s in starts if s[2] >= _min_clarity()]
        best_style, best, _, best_audio = (max(clear, key=lambda s: s[1]) if clear else max(starts, key=lambda s: s[2]))
        rng = np.random.default_rng(int(sha[:12], 16))
        sigma = 0.5
        for _ in range(_style_evals()):
            candidate = best_style.copy()
            candidate[:TIMBRE_DIMS] += sigma * scale[:TIMBRE_DIMS] * rng.standard_normal(TIMBRE_DIMS)
            similarity, clarity, speech = score(candidate)
            if similarity > best and clarity >= _min_clarity():  # closer, and still says the words
                best_style, best_audio, best, sigma = candidate, speech, similarity, min(sigma * 1.3, 2.0)
            else:
                sigma = max(sigma * 0.9, 0.05)
        return best_style, best_audio, best

    def clone(self, speech: Speech, profile: SpeakerProfile, *, speed: float = 1.0,
              language: str = DEFAULT_LANGUAGE) -> Speech:
        """The same words in the profile's voice, with an exact timeline. A Kokoro profile re-speaks
        `speech.text` (with `speed` and `language`); a WORLD profile converts `speech` keeping its timing."""
        if profile.style is not None:
            return self.speak(speech.text, profile, speed=speed, language=language)
        audio = convert_with(self.client, speech.audio, speech.sample_rate, profile.conversion)
        return Speech(audio=audio, sample_rate=speech.sample_rate, phones=list(speech.phones),
                      words=list(speech.words), text=speech.text)

    def speak(self, text: str, profile: SpeakerProfile, *, seed: int = 0, speed: float = 1.0,
              language: str = DEFAULT_LANGUAGE) -> Speech:
        """Script -> speech in the profile's voice (Kokoro style, or Piper + WORLD conversion)."""
        if profile.style is None:
            return self.clone(self.tts.synthesize(text, seed=seed, speed=speed, language=language), profile)
        spoken = self.voices.kokoro().synthesize(text, profile.style, speed=speed, language=language)
        if profile.convert:
            spoken.audio = convert_with(self.client, spoken.audio, spoken.sample_rate, profile.conversion)
        return spoken


def sample_sha256(sample: bytes | tuple[np.ndarray, int]) -> str:
    """What a profile's `sample_sha256` is computed from: the encoded bytes, or the float32 samples."""
    return hashlib.sha256(sample if isinstance(sample, bytes) else
                          np.ascontiguousarray(sample[0], np.float32).tobytes()).hexdigest()


def _clarity(audio: np.ndarray, rate: int) -> float:
    try:
        return alignment_score(audio, rate, STYLE_CALIBRATION_TEXT)
    except InputError:  # could not be aligned at all
        return -1e9


def _at_most(audio: np.ndarray, rate: int, max_rate: int) -> tuple[np.ndarray, int]:
    if rate <= max_rate:
        return audio, rate
    g = gcd(int(rate), max_rate)
    return resample_poly(audio, max_rate // g, int(rate) // g).astype(np.float32), max_rate
